"""The path a new user walks, through the real CLI, on their own files: the README's "Your own data"
commands, read from README.md and run as written (a shipped recipe pointed at a flat folder of
unlabelled photos, a folder of wav files, a text file, or a CSV of image-caption pairs, with the one
`data.path` override) in a folder holding files of that shape; the other overrides only shrink the
run to this machine. The model card describes the run that happened."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
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


def readme_own_data_commands() -> dict[str, list[str]]:
    """recipe -> the README's own-data command for it, split into arguments after ``multissl``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- own-data:[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md lost its own-data block (the <!-- own-data: ... --> marker before a bash block)"
    commands = {}
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[:2] == ["multissl", "train"], line
            commands[words[2]] = words[1:]
    return commands


def readme_data_path(recipe: str) -> str:
    """The ``data.path`` the README's command for ``recipe`` names (relative to where it runs)."""
    (path,) = [word.split("=", 1)[1] for word in readme_own_data_commands()[recipe] if word.startswith("data.path=")]
    return path


def test_the_readme_shows_one_own_data_command_per_domain():
    assert set(readme_own_data_commands()) == {"simclr-image", "cpc-audio", "simcse-text", "clip-image-text"}


def _train(tmp_path: Path, recipe: str, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    """The README's command for ``recipe``, as written, run in ``tmp_path`` (where the test put files
    of the shape it names), with ``overrides`` that shrink it to this machine."""
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "multissl.cli", *readme_own_data_commands()[recipe], *overrides,
                             *TINY, f"output_dir={run}"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, run


def _card(run: Path, domain: str) -> str:
    return (run / "encoders" / domain / "README.md").read_text()


def test_a_flat_folder_of_unlabelled_photos_trains_with_one_override(tmp_path):
    photos = _photos(tmp_path / readme_data_path("simclr-image"))
    _, run = _train(tmp_path, "simclr-image", "domains.image.encoder.size=tiny")
    card = _card(run, "image")
    assert photos.name in card and "tiny" in card and "2 steps" in card
    assert "CIFAR-10" not in card.split("## Training")[0], "the card must describe this run, not the recipe's data"


def test_a_folder_of_wav_files_trains_cpc_with_one_override(tmp_path):
    folder = tmp_path / readme_data_path("cpc-audio")
    folder.mkdir()
    for i, rate in enumerate((8000, 16000) * 4):
        t = np.arange(int(rate * 2.5)) / rate
        soundfile.write(folder / f"clip_{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32), rate)
    _train(tmp_path, "cpc-audio", "domains.audio.encoder.size=tiny")


def test_a_text_file_trains_simcse_with_one_override(tmp_path):
    sentences = tmp_path / readme_data_path("simcse-text")
    words = ("red", "old", "dog", "cat", "runs", "sleeps", "river", "house")
    sentences.write_text("\n".join(" ".join(words[(i * k) % 8] for k in range(1, 7)) for i in range(40)) + "\n")
    # the recipe starts from BERT-base on the Hub; offline here, a tiny model with a trained tokenizer
    _train(tmp_path, "simcse-text", "domains.text.encoder.name_or_path=null",
           "domains.text.encoder.size=tiny", "domains.text.options.tokenizer=train",
           "domains.text.options.vocab_size=60")


def test_a_csv_of_image_caption_pairs_trains_clip_with_one_override(tmp_path):
    captions = tmp_path / readme_data_path("clip-image-text")
    photos = _photos(captions.parent / "images", count=8)
    rows = [f"images/{p.name},a photo number {i}" for i, p in enumerate(sorted(photos.iterdir()))]
    captions.write_text("image,caption\n" + "\n".join(rows) + "\n")
    _, run = _train(tmp_path, "clip-image-text", "domains.image.encoder.size=tiny", "domains.text.encoder.size=tiny",
                    "domains.text.options.vocab_size=60")
    assert (run / "encoders" / "image" / "joint_projection.safetensors").is_file()
