"""The path a new user walks, through the real CLI, on their own files: a shipped recipe pointed at
a flat folder of unlabelled photos, a folder of wav files, a text file, or a CSV of image-caption
pairs trains with the one `data.path` override (the other overrides only shrink the run to this
machine), and the model card describes the run that happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

pytestmark = pytest.mark.slow

TINY = ["train.max_steps=2", "train.batch_size=4", "train.precision=fp32", "logging.trackers=[]",
        "checkpoint.every=2"]


def _photos(folder: Path, count: int = 10) -> Path:
    """A flat folder of photos of several sizes and modes, no labels, no sub-folders."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        height, width = (24 + 3 * i, 40 - 2 * i)
        image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        mode = ("RGB", "L", "RGBA", "P")[i % 4]
        suffix = "jpg" if mode in ("RGB", "L") else "png"  # JPEG holds neither alpha nor a palette
        image.convert(mode).save(folder / f"photo_{i}.{suffix}")
    return folder


def _train(tmp_path: Path, recipe: str, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "multissl.cli", "train", recipe, *overrides, *TINY,
                             f"output_dir={run}"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, run


def _card(run: Path, domain: str) -> str:
    return (run / "encoders" / domain / "README.md").read_text()


def test_a_flat_folder_of_unlabelled_photos_trains_with_one_override(tmp_path):
    photos = _photos(tmp_path / "my_photos")
    _, run = _train(tmp_path, "simclr-image", f"data.path={photos}", "domains.image.encoder.size=tiny")
    card = _card(run, "image")
    assert str(photos) in card and "tiny" in card and "2 steps" in card
    assert "CIFAR-10" not in card.split("## Training")[0], "the card must describe this run, not the recipe's data"


def test_a_folder_of_wav_files_trains_cpc_with_one_override(tmp_path):
    folder = tmp_path / "my_wavs"
    folder.mkdir()
    for i, rate in enumerate((8000, 16000) * 4):
        t = np.arange(int(rate * 2.5)) / rate
        soundfile.write(folder / f"clip_{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32), rate)
    _train(tmp_path, "cpc-audio", f"data.path={folder}", "domains.audio.encoder.size=tiny")


def test_a_text_file_trains_simcse_with_one_override(tmp_path):
    sentences = tmp_path / "sentences.txt"
    words = ("red", "old", "dog", "cat", "runs", "sleeps", "river", "house")
    sentences.write_text("\n".join(" ".join(words[(i * k) % 8] for k in range(1, 7)) for i in range(40)) + "\n")
    # the recipe starts from BERT-base on the Hub; offline here, a tiny model with a trained tokenizer
    _train(tmp_path, "simcse-text", f"data.path={sentences}", "domains.text.encoder.name_or_path=null",
           "domains.text.encoder.size=tiny", "domains.text.options.tokenizer=train",
           "domains.text.options.vocab_size=60")


def test_a_csv_of_image_caption_pairs_trains_clip_with_one_override(tmp_path):
    photos = _photos(tmp_path / "pairs" / "images", count=8)
    rows = [f"images/{p.name},a photo number {i}" for i, p in enumerate(sorted(photos.iterdir()))]
    (tmp_path / "pairs" / "captions.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    _, run = _train(tmp_path, "clip-image-text", f"data.path={tmp_path / 'pairs' / 'captions.csv'}",
                    "domains.image.encoder.size=tiny", "domains.text.encoder.size=tiny",
                    "domains.text.options.vocab_size=60")
    assert (run / "encoders" / "image" / "joint_projection.safetensors").is_file()
