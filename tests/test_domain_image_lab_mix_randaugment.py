"""Image views added for the memory-bank and mixing methods: CMC's L / ab color spaces and the
shared crop (``replay``), PIRL's image view beside the jigsaw tiles; each a batched tensor op on the
whole batch, reproducible from the generator's seed."""

from __future__ import annotations

import pytest
import torch

from domains import EncoderConfig
from domains.image import ImageConfig, ImageDomain
from domains.image.color import rgb_to_lab
from domains.image.views import LAB_MEAN, LAB_STD
from multissl.views import ViewRequest


def _images(batch=8, channels=3, side=32, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, 4, 4, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    noisy = smooth + 0.1 * torch.rand(batch, channels, side, side, generator=generator)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def _batch(images=None):
    return {"images": _images() if images is None else images, "indices": torch.arange(8), "skipped": 0}


# ------------------------------------------------------------------------------------- L*a*b* views


def test_plain_lab_views_are_cmc_normalised_channels_and_encoders_take_them():
    images = _images()
    lab = rgb_to_lab(images.float() / 255)
    for space, channels in (("L", slice(0, 1)), ("ab", slice(1, 3))):
        domain = ImageDomain(ImageConfig(image_size=32, color_space=space))
        pixels = domain.make_views(_batch(images), ViewRequest("plain"), torch.Generator())["inputs"]["pixel_values"]
        mean = torch.tensor(LAB_MEAN[channels]).view(1, -1, 1, 1)
        std = torch.tensor(LAB_STD[channels]).view(1, -1, 1, 1)
        torch.testing.assert_close(pixels, (lab[:, channels] - mean) / std)
        assert pixels.abs().max() <= 1.0 + 1e-4  # CMC's normalisation maps sRGB into [-1, 1]
        assert domain.config.input_channels == pixels.shape[1] and domain.preprocessing()["color_space"] == space
        encoder = domain.build_encoder(EncoderConfig("convnext", "tiny"))
        assert encoder.geometry.channels == pixels.shape[1]
        assert encoder(pixel_values=pixels).pooled.shape[0] == 8
    with pytest.raises(ValueError, match="channels=3"):
        ImageConfig(channels=1, color_space="L")


def test_replay_gives_the_next_domain_the_same_crop():
    images = _images()
    rgb = ImageDomain(ImageConfig(normalization="none", augment={"jitter_probability": 0.0, "grayscale_probability": 0.0,
                                                                 "blur_probability": 0.0}))
    lightness = ImageDomain(ImageConfig(color_space="L", augment=rgb.config.augment))
    color = ImageDomain(ImageConfig(color_space="ab", augment=rgb.config.augment))
    generator = torch.Generator().manual_seed(5)
    first = lightness.make_views(_batch(images), ViewRequest("augmented", {"num_views": 1, "replay": True}), generator)
    second = color.make_views(_batch(images), ViewRequest("augmented", {"num_views": 1}), generator)
    after = torch.rand(1, generator=generator)
    # one crop, drawn once (a third draw from the same seed, in RGB, is the crop both converted)
    reference = torch.Generator().manual_seed(5)
    crop = rgb.make_views(_batch(images), ViewRequest("augmented", {"num_views": 1}), reference)["views"][0]
    lab = rgb_to_lab(crop["pixel_values"])
    torch.testing.assert_close(first["views"][0]["pixel_values"], (lab[:, :1] - 50) / 50, atol=1e-4, rtol=0)
    ab_mean = torch.tensor(LAB_MEAN[1:]).view(1, 2, 1, 1)
    ab_std = torch.tensor(LAB_STD[1:]).view(1, 2, 1, 1)
    torch.testing.assert_close(second["views"][0]["pixel_values"], (lab[:, 1:] - ab_mean) / ab_std, atol=1e-4, rtol=0)
    # and the generator moved on once, by the second request's draws only
    assert torch.equal(after, torch.rand(1, generator=reference))


def test_pirl_view_holds_augmented_views_beside_the_tiles_and_a_seed_repeats_it():
    domain = ImageDomain()
    request = ViewRequest("pretext", {"task": "jigsaw", "views": 1})
    views = domain.make_views(_batch(), request, torch.Generator().manual_seed(2))
    again = domain.make_views(_batch(), request, torch.Generator().manual_seed(2))
    assert len(views["parts"]) == 9 and views["views"][0]["pixel_values"].shape == (8, 3, 32, 32)
    assert torch.equal(views["views"][0]["pixel_values"], again["views"][0]["pixel_values"])
    assert views["indices"].tolist() == list(range(8))
    with pytest.raises(ValueError, match="views"):
        domain.make_views(_batch(), ViewRequest("pretext", {"task": "jigsaw", "views": -1}), torch.Generator())
