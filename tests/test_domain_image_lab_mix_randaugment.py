"""Image views added for the memory-bank and mixing methods: CMC's L / ab color spaces and the
shared crop (``replay``), PIRL's image view beside the jigsaw tiles, Mixup / CutMix with their
partner and coefficient, RandAugment; each a batched tensor op on the whole batch with per-sample
parameters in their ranges, reproducible from the generator's seed."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from domains import EncoderConfig
from domains.image import ImageConfig, ImageDomain, draws
from domains.image.color import rgb_to_lab
from domains.image.mixing import cutmix, cutmix_boxes, draw_mixing
from domains.image.randaugment import OPERATIONS, RandAugmentConfig, apply_operation, randaugment
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


# ------------------------------------------------------------------------------------ Mixup, CutMix


def _mixing_views(domain, seed, **options):
    request = ViewRequest("augmented", {"num_views": 2, **options})
    return domain.make_views(_batch(), request, torch.Generator().manual_seed(seed))


def test_beta_draws_have_the_beta_moments():
    for alpha in (0.2, 1.0, 4.0):
        values = draws.beta(torch.Generator().manual_seed(0), alpha, alpha, (100_000,), torch.device("cpu"))
        assert 0 <= float(values.min()) and float(values.max()) <= 1
        assert float(values.mean()) == pytest.approx(0.5, abs=0.01)
        assert float(values.var()) == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)


def test_mixup_view_mixes_the_first_view_with_its_partner_by_each_rows_coefficient():
    domain = ImageDomain(ImageConfig(normalization="none"))
    mixed = _mixing_views(domain, 3, mix="mixup", mix_alpha=1.0, replay=True)
    clean = _mixing_views(domain, 3)  # the same draws up to the mixing: the views before it
    partner, lam = mixed["mix_partner"], mixed["mix_lambda"]
    assert sorted(partner.tolist()) == list(range(8)) and partner.dtype == torch.long
    assert lam.shape == (8,) and float(lam.min()) >= 0.5 and float(lam.max()) <= 1 and lam.unique().numel() == 8
    x = clean["views"][0]["pixel_values"]
    expected = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner]
    torch.testing.assert_close(mixed["views"][0]["pixel_values"], expected)
    assert torch.equal(mixed["views"][1]["pixel_values"], clean["views"][1]["pixel_values"])  # the key view stays clean
    again = _mixing_views(domain, 3, mix="mixup", mix_alpha=1.0)
    assert torch.equal(again["mix_lambda"], lam) and torch.equal(again["views"][0]["pixel_values"],
                                                                mixed["views"][0]["pixel_values"])
    assert not torch.equal(_mixing_views(domain, 4, mix="mixup")["mix_lambda"], lam)
    with pytest.raises(ValueError, match="mix"):
        _mixing_views(domain, 3, mix="blend")


def test_cutmix_pastes_one_box_per_sample_and_lambda_is_the_area_left():
    generator = torch.Generator().manual_seed(0)
    lam = torch.tensor([0.5, 0.75, 0.9, 1.0, 0.6, 0.55])
    boxes, left = cutmix_boxes(lam, 20, 30, generator)
    top, x0, bottom, x1 = boxes.unbind(1)
    assert bool(((0 <= top) & (top <= bottom) & (bottom <= 20) & (0 <= x0) & (x0 <= x1) & (x1 <= 30)).all())
    torch.testing.assert_close(left, 1 - ((bottom - top) * (x1 - x0)).float() / 600)
    assert bool((left >= lam - 1e-6).all())  # clipping only shrinks the box
    images = torch.rand(6, 3, 20, 30)
    partner = torch.tensor([1, 2, 3, 4, 5, 0])
    out = cutmix(images, partner, boxes)
    for b in range(6):
        t, l, btm, r = boxes[b].tolist()
        expected = images[b].clone()
        expected[:, t:btm, l:r] = images[partner[b], :, t:btm, l:r]
        assert torch.equal(out[b], expected), b
    views = _mixing_views(ImageDomain(), 1, mix="cutmix")
    assert float(views["mix_lambda"].min()) >= 0.5


def test_mixing_coefficients_are_i_mix_s_max_of_a_beta_pair():
    partner, lam = draw_mixing(20_000, 1.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert float(lam.min()) >= 0.5 and float(lam.mean()) == pytest.approx(0.75, abs=0.01)  # max(U, 1 - U)


# ------------------------------------------------------------------------------------ RandAugment


def _reference_randaugment(images: torch.Tensor, config: RandAugmentConfig, seed: int) -> torch.Tensor:
    """Sample by sample, replaying randaugment's draws (per layer: operation, sign, cutout centre)."""
    generator = torch.Generator().manual_seed(seed)
    level, batch = config.magnitude / 10, images.shape[0]
    values = (images * 255).round().clamp(0, 255)
    for _ in range(config.num_ops):
        choice = draws.randint(generator, len(OPERATIONS), (batch,), torch.device("cpu"))
        sign = torch.where(draws.bernoulli(generator, 0.5, (batch,), torch.device("cpu")), -1.0, 1.0)
        centre = draws.uniform(generator, (batch, 2), torch.device("cpu"))
        for b in range(batch):
            one = apply_operation(OPERATIONS[choice[b]], values[b : b + 1], level, sign[b : b + 1], centre[b : b + 1], config)
            values[b] = one.round().clamp(0, 255)[0]
    return values / 255


def test_randaugment_gives_each_sample_its_own_operations_as_applied_one_by_one():
    images = _images(batch=24).float() / 255
    config = RandAugmentConfig(num_ops=3, magnitude=9)
    batched = randaugment(images, config, torch.Generator().manual_seed(7))
    torch.testing.assert_close(batched, _reference_randaugment(images, config, 7), rtol=0, atol=1e-6)
    assert torch.equal(batched, randaugment(images, config, torch.Generator().manual_seed(7)))
    assert torch.equal((batched * 255).round(), batched * 255)  # 8-bit values, as the official uint8 code
    assert not torch.equal(batched, randaugment(images, config, torch.Generator().manual_seed(8)))
    assert torch.equal(randaugment(images, RandAugmentConfig(num_ops=0), torch.Generator()), (images * 255).round() / 255)


@pytest.mark.parametrize("name,theirs", [
    ("equalize", lambda x: TF.equalize(x)),
    ("auto_contrast", lambda x: TF.autocontrast(x)),
    ("invert", lambda x: TF.invert(x)),
    ("posterize", lambda x: TF.posterize(x, 3)),          # int(0.9 * 4) = 3 bits at M = 9
    ("solarize", lambda x: TF.solarize(x, 230)),          # int(0.9 * 256) = 230
    ("brightness", lambda x: TF.adjust_brightness(x, 1.72)),  # 0.1 + 1.8 * 0.9
])
def test_operations_match_torchvision_on_uint8(name, theirs):
    images = _images(batch=6)
    ours = apply_operation(name, images.float(), 0.9, torch.ones(6), torch.zeros(6, 2), RandAugmentConfig())
    expected = torch.stack([theirs(image) for image in images]).float()
    assert (ours.round() - expected).abs().max() <= 1, name  # rounding where torchvision truncates


def test_geometric_operations_move_pixels_and_fill_with_gray():
    image = torch.arange(64.0).view(1, 1, 8, 8)
    config = RandAugmentConfig(translate_fraction=0.25)  # 2 px at level 1 on 8 px
    moved = apply_operation("translate_x", image, 1.0, torch.ones(1), torch.zeros(1, 2), config)
    assert torch.equal(moved[..., :6], image[..., 2:]) and bool((moved[..., 6:] == 128).all())
    down = apply_operation("translate_y", image, 1.0, -torch.ones(1), torch.zeros(1, 2), config)
    assert torch.equal(down[..., 2:, :], image[..., :6, :]) and bool((down[..., :2, :] == 128).all())
    assert torch.equal(apply_operation("rotate", image, 0.0, torch.ones(1), torch.zeros(1, 2), config), image)
    quarter = apply_operation("rotate", image, 3.0, torch.ones(1), torch.zeros(1, 2), config)  # 90 degrees
    assert torch.equal(quarter, torch.rot90(image, -1, dims=(-2, -1))) or torch.equal(quarter, torch.rot90(image, 1, dims=(-2, -1)))
    sheared = apply_operation("shear_x", image, 1.0, torch.ones(1), torch.zeros(1, 2), config)
    assert torch.equal(sheared[..., 0, :], image[..., 0, :])  # row 0 stays: shear about the top-left corner
    cut = apply_operation("cutout", torch.zeros(1, 3, 32, 32), 1.0, torch.ones(1), torch.tensor([[0.5, 0.5]]), config)
    side = 2 * int(config.cutout_fraction * 32)
    assert int((cut == 128).sum()) == 3 * side * side


def test_randaugment_policy_crops_then_augments_and_a_seed_repeats_it():
    domain = ImageDomain(ImageConfig(randaugment={"num_ops": 2, "magnitude": 9}))
    request = ViewRequest("augmented", {"policy": "randaugment", "num_views": 2, "local_views": 2})
    views = domain.make_views(_batch(), request, torch.Generator().manual_seed(0))["views"]
    again = domain.make_views(_batch(), request, torch.Generator().manual_seed(0))["views"]
    assert [tuple(v["pixel_values"].shape) for v in views] == [(8, 3, 32, 32)] * 2 + [(8, 3, 12, 12)] * 2
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(views, again))
    assert not torch.equal(views[0]["pixel_values"], views[1]["pixel_values"])
    with pytest.raises(ValueError, match="magnitude"):
        ImageConfig(randaugment={"magnitude": 40})
