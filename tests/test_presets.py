"""The size presets between "tiny" (tests) and "small" (GPUs), and the -cpu recipes that use them.

Each new preset builds, saves, and loads back with plain ``transformers.AutoModel`` to the same
outputs; the small-image preset keeps the first stage at half the input side (no max-pool); each
-cpu recipe runs 2 steps with its real preset (not the tiny one) on data this file writes itself,
so all of it runs on a fresh clone without ../shared."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from multissl.config import recipes_dir
from multissl.domain import DataConfig, EncoderConfig

CPU_RECIPES = sorted(p.stem for p in recipes_dir().glob("*-cpu.yaml"))


def image_domain(image_size: int = 32):
    from domains.image import ImageConfig, ImageDomain

    return ImageDomain(ImageConfig(image_size=image_size))


def text_domain():
    from domains.text import TextConfig, TextDomain

    domain = TextDomain(TextConfig(vocab_size=300, max_length=24))
    domain.train_tokenizer([f"sentence number {i} about a dog and a cat on the grass" for i in range(300)])
    return domain


def audio_domain():
    from domains.audio import AudioConfig, AudioDomain

    return AudioDomain(AudioConfig(sample_rate=16000))


def _inputs(domain, kind: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if kind == "image":
        return {"pixel_values": torch.randn(2, 3, 32, 32, generator=generator)}
    if kind == "audio":
        return {"input_values": torch.randn(2, 16000, generator=generator)}
    batch = domain.collate([{"text": "a dog on the grass"}, {"text": "sentence number 7 about a cat"}])
    from multissl.views import ViewRequest

    return domain.make_views(batch, ViewRequest("plain"), generator)["inputs"]


NEW_PRESETS = [
    pytest.param("image", "regnet", "tiny", id="image-regnet-tiny"),
    pytest.param("image", "regnet", "cpu", id="image-regnet-cpu"),
    pytest.param("image", "regnet", "small", id="image-regnet-small"),
    pytest.param("image", "resnet", "cpu", id="image-resnet-cpu"),
    pytest.param("image", "convnext", "cpu", id="image-convnext-cpu"),
    pytest.param("image", "vit", "cpu", id="image-vit-cpu"),
    pytest.param("audio", "wav2vec2", "cpu", id="audio-wav2vec2-cpu"),
    pytest.param("text", "bert", "cpu", id="text-bert-cpu"),
]


@pytest.mark.parametrize("kind, architecture, size", NEW_PRESETS)
def test_new_presets_build_save_and_load_with_plain_automodel(kind, architecture, size, tmp_path):
    domain = {"image": image_domain, "audio": audio_domain, "text": text_domain}[kind]()
    torch.manual_seed(0)
    encoder = domain.build_encoder(EncoderConfig(architecture=architecture, size=size)).eval()
    inputs = _inputs(domain, kind)
    encoder.save_pretrained(str(tmp_path))
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(encoder.model)
    with torch.no_grad():
        ours = encoder.model(**inputs).last_hidden_state
        theirs = loaded(**inputs).last_hidden_state
    torch.testing.assert_close(theirs, ours)
    parameters = sum(p.numel() for p in encoder.parameters())
    if size == "cpu":  # between the tiny (tests) and the small (GPU) presets
        tiny = domain.build_encoder(EncoderConfig(architecture=architecture, size="tiny"))
        assert parameters > 10 * sum(p.numel() for p in tiny.parameters())
        assert parameters < 5e6


def test_small_image_preset_keeps_the_first_stage_at_half_the_input_side():
    domain = image_domain(32)
    for size in ("tiny", "cpu", "small"):
        encoder = domain.build_encoder(EncoderConfig(architecture="regnet", size=size)).eval()
        with torch.no_grad():
            hidden = encoder.model(pixel_values=torch.zeros(1, 3, 32, 32), output_hidden_states=True).hidden_states
        sides = [h.shape[-1] for h in hidden]
        assert sides[0] == 16 and sides[1] == 16, sides  # the stem's output and the first stage: no max-pool
        stages = len(encoder.model.config.hidden_sizes)
        assert sides[-1] == 16 // 2 ** (stages - 1)
    # the ResNet preset of the same widths: 8x8 after its fixed 7x7 stride-2 stem and max-pool
    resnet = domain.build_encoder(EncoderConfig(architecture="resnet", size="cpu")).eval()
    with torch.no_grad():
        hidden = resnet.model(pixel_values=torch.zeros(1, 3, 32, 32), output_hidden_states=True).hidden_states
    assert hidden[0].shape[-1] == 8


# ---------------------------------------------------------------------------------- -cpu recipes


def write_images(folder: Path, per_class: int = 16) -> Path:
    """An imagefolder of 32x32 PNGs in two classes (dark squares, light stripes)."""
    from PIL import Image

    generator = np.random.default_rng(0)
    for label in ("dark", "light"):
        (folder / label).mkdir(parents=True)
        for index in range(per_class):
            base = 40 if label == "dark" else 200
            pixels = np.clip(base + generator.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{index}.png")
    return folder


def write_wavs(folder: Path, per_class: int = 12, sample_rate: int = 16000) -> Path:
    """Tones of two pitches (the label) as 1.1 s wav files named ``{label}_{speaker}_{take}.wav``."""
    import soundfile

    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    time = np.arange(int(1.1 * sample_rate)) / sample_rate
    for label, pitch in ((0, 220.0), (1, 660.0)):
        for take in range(per_class):
            wave = 0.3 * np.sin(2 * math.pi * pitch * (1 + 0.02 * take) * time) + 0.01 * generator.normal(size=time.shape)
            soundfile.write(folder / f"{label}_{'ab'[take % 2]}_{take}.wav", wave.astype(np.float32), sample_rate)
    return folder


def write_sentences(path: Path) -> Path:
    path.write_text("\n".join(f"a {c} dog number {i} runs on the {w} grass" for i in range(40)
                              for c, w in [("small", "green")]) + "\n")
    return path


def local_data(stem: str, tmp_path: Path) -> list[str]:
    if stem.endswith("image-cpu"):
        folder = write_images(tmp_path / "images")
        return [f"data.path={folder}", "data.format=imagefolder", "data.split=train",
                "data.columns={image: image, label: label}", "evaluation.held_out_fraction=0.25"]
    if stem.endswith("audio-cpu"):
        folder = write_wavs(tmp_path / "wavs")
        return [f"data.path={folder}", "data.subset=null", "data.split=train", "data.columns={label: label}",
                r"domains.audio.options.filename_pattern=(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav$",
                "evaluation.held_out_fraction=0.25"]
    if stem.endswith("text-cpu"):
        return [f"data.path={write_sentences(tmp_path / 'sentences.txt')}", "data.split=train", "data.columns={}"]
    raise AssertionError(f"no local stand-in data for {stem}")


def test_every_domain_has_a_cpu_recipe():
    assert {"simclr-image-cpu", "cpc-audio-cpu", "simcse-text-cpu"} <= set(CPU_RECIPES)


@pytest.mark.slow
@pytest.mark.parametrize("stem", CPU_RECIPES)
def test_cpu_recipe_runs_two_steps_with_its_own_preset(stem, tmp_path):
    from multissl.config import load_recipe
    from multissl.train import train

    overrides = local_data(stem, tmp_path) + [
        "train.max_steps=2", "train.batch_size=8", "checkpoint.resume=null", f"output_dir={tmp_path / 'run'}",
        "logging.trackers=[]", "logging.progress_bar=false", "hub.push=false", "evaluation.max_rows=8",
    ]
    if not stem.endswith("text-cpu"):
        overrides.append("evaluation.every=1")
    recipe = load_recipe(stem, overrides)
    (name, spec), = recipe.domains.items()
    assert spec.encoder.size == "cpu" or spec.encoder.name_or_path, "a -cpu recipe trains a CPU-sized encoder"
    result = train(recipe, stem)
    assert result.steps == 2 and all(math.isfinite(loss) for loss in result.losses)
    model = AutoModel.from_pretrained(result.encoder_dirs[name])
    assert model.config.model_type in ("regnet", "wav2vec2", "bert")
    if recipe.evaluation.enabled:
        log = (tmp_path / "run" / "log.jsonl").read_text()
        assert log.count("online/knn_top1") == 3  # steps 0, 1 and 2
