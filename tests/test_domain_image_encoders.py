"""Image encoders: Features shapes, MAE's visible-only ViT forward, and a saved encoder loading with
plain transformers (no multissl) in another process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from multissl.domain import EncoderConfig
from domains.image import ConvNetEncoder, ImageConfig, ImageDomain, ViTEncoder
from multissl.views import ViewRequest


def _encoder(architecture: str, image_size: int = 32, pooling: str = "mean", **overrides):
    domain = ImageDomain(ImageConfig(image_size=image_size))
    encoder = domain.build_encoder(EncoderConfig(architecture=architecture, size="tiny", pooling=pooling,
                                                 overrides=overrides))
    return domain, encoder.eval()


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("architecture, pooling", [("vit", "cls"), ("vit", "mean"), ("convnext", "mean"),
                                                   ("resnet", "mean")])
def test_features_shapes(architecture, pooling, image_size):
    _, encoder = _encoder(architecture, image_size, pooling)
    pixels = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        features = encoder(pixel_values=pixels, output_hidden_states=True)
    assert features.pooled.shape == (2, encoder.dim)
    if architecture == "vit":
        tokens = (image_size // 4) ** 2
        assert features.sequence.shape == (2, tokens, 64) and len(features.hidden_states) == 3
        assert all(h.shape == (2, tokens, 64) for h in features.hidden_states)
        if pooling == "mean":
            assert torch.allclose(features.pooled, features.sequence.mean(dim=1), atol=1e-6)
    else:
        # tiny convnets: two stages; ConvNeXt stem stride 2 then one downsampling, ResNet stem stride 4
        side = image_size // 4 if architecture == "convnext" else image_size // 8
        assert features.sequence.shape == (2, side * side, 32)
        assert [h.dim() for h in features.hidden_states] == [2] * len(features.hidden_states)
    assert features.mask.shape == features.sequence.shape[:2] and bool(features.mask.all())


def test_vit_visible_only_forward():
    _, encoder = _encoder("vit", pooling="cls")
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        full = encoder(pixel_values=pixels, output_hidden_states=True)
        everything = torch.arange(64).expand(3, 64)
        kept_all = encoder(pixel_values=pixels, keep_index=everything, output_hidden_states=True)
        assert torch.allclose(kept_all.sequence, full.sequence, atol=1e-5)
        assert torch.allclose(kept_all.pooled, full.pooled, atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(kept_all.hidden_states, full.hidden_states))
        # attention is permutation-equivariant once positions are added: the output follows keep_index
        keep = torch.stack([torch.randperm(64, generator=torch.Generator().manual_seed(i))[:16] for i in range(3)])
        visible = encoder(pixel_values=pixels, keep_index=keep)
        reordered = encoder(pixel_values=pixels, keep_index=keep.flip(1))
    assert visible.sequence.shape == (3, 16, 64)
    assert torch.allclose(visible.sequence.flip(1), reordered.sequence, atol=1e-5)
    assert torch.allclose(visible.pooled, reordered.pooled, atol=1e-5)
    assert not torch.allclose(visible.sequence, full.sequence.gather(1, keep.unsqueeze(-1).expand(-1, -1, 64)))


def test_vit_takes_the_masked_view_and_local_crops():
    domain, encoder = _encoder("vit")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    masked = domain.make_views({"images": images}, ViewRequest("masked"), generator)
    local = domain.make_views({"images": images}, ViewRequest("augmented", {"local_views": 1}), generator)
    with torch.no_grad():
        assert encoder(**masked["inputs"]).sequence.shape == (2, 16, 64)
        assert encoder(**local["views"][2]).sequence.shape == (2, 9, 64)  # 12 px local crop, positions interpolated
    _, convnet = _encoder("convnext")
    with pytest.raises(TypeError, match="keep_index"):
        convnet(**masked["inputs"])


def test_presets_and_overrides_are_checked():
    domain = ImageDomain()
    with pytest.raises(ValueError, match="'huge'"):
        domain.build_encoder(EncoderConfig(architecture="vit", size="huge"))
    with pytest.raises(ValueError, match="'swin'"):
        domain.build_encoder(EncoderConfig(architecture="swin"))
    with pytest.raises(ValueError, match="hidden_szie"):
        domain.build_encoder(EncoderConfig(architecture="vit", overrides={"hidden_szie": 32}))
    with pytest.raises(ValueError, match="CLS"):
        domain.build_encoder(EncoderConfig(architecture="resnet", pooling="cls"))
    _, encoder = _encoder("vit", hidden_size=32, num_attention_heads=4)
    assert encoder.dim == 32 and encoder.model.config.num_attention_heads == 4
    assert encoder.model.config.patch_size == 4 and encoder.model.config.image_size == 32
    _, resnet = _encoder("resnet")
    assert isinstance(resnet, ConvNetEncoder) and resnet.model.config.layer_type == "basic"
    big = ImageDomain(ImageConfig(image_size=224)).build_encoder(EncoderConfig(architecture="vit", size="tiny"))
    assert big.model.config.patch_size == 16


_LOAD_ELSEWHERE = textwrap.dedent(
    """
    import json, sys
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    jobs = json.loads(sys.argv[1])
    results = []
    for folder, pooling, images in jobs:
        processor = AutoImageProcessor.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder).eval()
        inputs = processor(images=[Image.open(path) for path in images], return_tensors="pt")
        with torch.no_grad():
            output = model(**inputs)
        if pooling == "cls":
            pooled = output.last_hidden_state[:, 0]
        elif pooling == "vit-mean":
            pooled = output.last_hidden_state[:, 1:].mean(dim=1)
        else:
            pooled = output.pooler_output.flatten(1)
        results.append(pooled.tolist())
    assert not any(name.split(".")[0] in ("multissl", "domains") for name in sys.modules)
    print(json.dumps(results))
    """
)

_SAVED = [("vit", "cls"), ("vit", "mean"), ("convnext", "mean")]


def test_saved_encoders_load_with_plain_transformers(tmp_path):
    """save_pretrained, then AutoModel + AutoImageProcessor in a process that never imports multissl
    give the same embeddings from the raw image files (non-square ones included)."""
    rng = np.random.default_rng(0)
    files = []
    for i, shape in enumerate(((32, 32, 3), (45, 37, 3), (30, 70, 3))):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        files.append(str(path))
    rows = [{"image": {"bytes": None, "path": path}, "row_index": i} for i, path in enumerate(files)]
    ours, jobs = [], []
    for architecture, pooling in _SAVED:
        domain, encoder = _encoder(architecture, pooling=pooling)
        folder = tmp_path / f"{architecture}-{pooling}"
        encoder.save_pretrained(str(folder))
        inputs = domain.make_views(domain.collate(rows), ViewRequest("plain"), torch.Generator())["inputs"]
        with torch.no_grad():
            ours.append(encoder(**inputs).pooled)
            # the toolkit reloads its own folder too
            reloaded = domain.build_encoder(EncoderConfig(architecture=architecture, pooling=pooling,
                                                          name_or_path=str(folder))).eval()
            assert isinstance(reloaded, ViTEncoder) == (architecture == "vit")
            assert torch.allclose(reloaded(**inputs).pooled, ours[-1], atol=1e-6)
        mode = "vit-mean" if (architecture, pooling) == ("vit", "mean") else pooling
        jobs.append([str(folder), mode, files])
    script = tmp_path / "load_elsewhere.py"
    script.write_text(_LOAD_ELSEWHERE)
    result = subprocess.run([sys.executable, "-I", str(script), json.dumps(jobs)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    for (architecture, pooling), mine, other in zip(_SAVED, ours, theirs):
        other = torch.tensor(other)
        assert torch.allclose(mine, other, atol=1e-4), (architecture, pooling, (mine - other).abs().max())
