"""`multissl probe` measures the pipeline that was trained: it takes the image size, channels and
normalisation from the encoder folder (flags override, with a warning), so its embeddings equal
plain transformers' AutoModel + the saved processor on the raw files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

from domains import EncoderConfig, build_domain
from multissl.domain import DataConfig
from multissl.hub import ModelCardInfo, save_encoder
from multissl.probes.command import trained_preprocessing
from multissl.probes.extract import extract_from_dataset


def _image_folder(root, mode="RGB", per_class=6):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
            pixels[..., 0 if label == "a" else 2] //= 4  # the classes differ in colour
            Image.fromarray(pixels).convert(mode).save(root / label / f"{i}.png")
    return root


def _trained_encoder(folder, options, architecture):
    domain = build_domain("image", options)
    torch.manual_seed(0)
    encoder = domain.build_encoder(EncoderConfig(architecture, "tiny")).eval()
    save_encoder(encoder, folder, ModelCardInfo(domain="image", architecture=architecture),
                 preprocessing=domain.preprocessing())
    return encoder


@pytest.mark.parametrize("architecture", ["convnext", "vit"])
def test_probe_embeddings_equal_automodel_with_the_saved_processor(tmp_path, architecture):
    options = {"image_size": 24, "normalization": "cifar10", "patch_size": 4}
    _trained_encoder(tmp_path / "encoder", options, architecture)
    images = _image_folder(tmp_path / "photos")

    probed_options = trained_preprocessing(str(tmp_path / "encoder"), "image", {})
    assert probed_options["image_size"] == 24 and probed_options["mean"] == [0.4914, 0.4822, 0.4465]
    domain = build_domain("image", probed_options)
    encoder = domain.build_encoder(EncoderConfig(architecture, name_or_path=str(tmp_path / "encoder")))
    rows = domain.load(DataConfig(path=str(images)))
    ours = extract_from_dataset(encoder, domain, rows, batch_size=5).pooled

    model = AutoModel.from_pretrained(str(tmp_path / "encoder")).eval()
    processor = AutoImageProcessor.from_pretrained(str(tmp_path / "encoder"))
    files = sorted(images.glob("*/*.png"))
    pictures = [Image.open(rows[i]["image"]["path"] if isinstance(rows[i]["image"], dict) else files[i]).convert("RGB")
                for i in range(len(rows))]
    with torch.no_grad():
        output = model(**processor(images=pictures, return_tensors="pt"))
    theirs = output.pooler_output.flatten(1) if architecture == "convnext" else output.last_hidden_state[:, 1:].mean(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)

    # a flag that differs wins, and says so
    overridden = trained_preprocessing(str(tmp_path / "encoder"), "image", {"image_size": 32})
    assert overridden["image_size"] == 32


def test_a_one_channel_encoder_is_probed_through_the_cli_without_flags(tmp_path):
    _trained_encoder(tmp_path / "encoder", {"image_size": 16, "channels": 1, "normalization": "mnist"}, "convnext")
    images = _image_folder(tmp_path / "photos", mode="L")
    result = subprocess.run(
        [sys.executable, "-m", "multissl.cli", "probe", "--encoder", str(tmp_path / "encoder"), "--data", str(images),
         "--test-data", str(images), "--test-split", "train", "--probe", "knn", "--option", "ks=[3]",
         "--output", str(tmp_path / "results.json"), "--map", str(tmp_path / "map.png")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "knn" in result.stdout and (tmp_path / "results.json").is_file()
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the 2-D embedding map
    warned = subprocess.run(
        [sys.executable, "-m", "multissl.cli", "probe", "--encoder", str(tmp_path / "encoder"), "--data", str(images),
         "--test-data", str(images), "--test-split", "train", "--probe", "knn", "--option", "ks=[3]",
         "--domain-option", "image_size=20", "--output", str(tmp_path / "results2.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert warned.returncode == 0, warned.stderr[-2000:]
    assert "overrides the image_size=16" in warned.stderr
