"""Image domain views: batched augmentation kernels against torchvision applied sample by sample,
per-sample randomness, determinism, MAE masks, pretext tasks and corruptions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from domains.image import ImageConfig, ImageDomain
from domains.image.config import AugmentConfig
from domains.image.augment import (
    ViewRecipe,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    draw_augmentation,
    gaussian_blur,
)
from domains.image.color import ab_bin_centres, lab_to_rgb, rgb_to_lab, soft_encode
from domains.image.geometry import crop_resize
from domains.image.masking import patchify, unpatchify
from domains.image.pretext import jigsaw_permutations, rotate_quarter_turns
from domains.image.views import view_recipes
from multissl.views import ViewRequest


def _images(batch=8, channels=3, side=32, seed=0) -> torch.Tensor:
    """uint8 images with structure (smooth gradients plus noise), different per row."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, 4, 4, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    noisy = smooth + 0.1 * torch.rand(batch, channels, side, side, generator=generator)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def _views(domain, kind, seed=0, images=None, **options):
    batch = {"images": _images() if images is None else images, "labels": torch.arange(8), "skipped": 2}
    return domain.make_views(batch, ViewRequest(kind, options), torch.Generator().manual_seed(seed))


def _denormalize(pixels: torch.Tensor, config: ImageConfig) -> torch.Tensor:
    mean = torch.tensor(config.mean).view(1, -1, 1, 1)
    std = torch.tensor(config.std).view(1, -1, 1, 1)
    return pixels * std + mean


# ------------------------------------------------------------------ kernels vs torchvision, per sample


@pytest.mark.parametrize(
    "ours, theirs, low, high",
    [
        (adjust_brightness, TF.adjust_brightness, 0.2, 1.8),
        (adjust_contrast, TF.adjust_contrast, 0.2, 1.8),
        (adjust_saturation, TF.adjust_saturation, 0.0, 1.8),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_kernels_match_torchvision_sample_by_sample(ours, theirs, low, high):
    images = _images(batch=6).float() / 255
    factors = torch.linspace(low, high, 6)
    batched = ours(images, factors)
    for i in range(6):
        # torchvision's luma weights red 0.2989, ours 0.299 (BT.601): a 1e-4 difference at most
        assert torch.allclose(batched[i], theirs(images[i], float(factors[i])), atol=2e-4), i


def test_colour_jitter_applies_each_samples_own_order():
    images = _images(batch=6).float() / 255
    generator = torch.Generator().manual_seed(1)
    factors = torch.stack((torch.rand(6, generator=generator) + 0.5, torch.rand(6, generator=generator) + 0.5,
                           torch.rand(6, generator=generator) + 0.5, torch.rand(6, generator=generator) - 0.5), dim=1)
    orders = torch.tensor(list(itertools.permutations(range(4)))[:: 4][:6])
    apply = torch.tensor([True, True, True, True, True, False])
    batched = color_jitter(images.clone(), factors, orders, apply)
    operations = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(6):
        expected = images[i]
        for op in orders[i].tolist() if apply[i] else []:
            expected = operations[op](expected, float(factors[i, op]))
        assert torch.allclose(batched[i], expected, atol=5e-4), i


def test_blur_matches_torchvision_with_per_sample_sigma_and_keeps_constants():
    images = _images(batch=4).float() / 255
    sigma = torch.tensor([0.3, 0.8, 1.5, 2.0])
    blurred = gaussian_blur(images, sigma, 5)
    for i in range(4):
        expected = TF.gaussian_blur(images[i], kernel_size=[5, 5], sigma=[float(sigma[i])] * 2)
        assert torch.allclose(blurred[i], expected, atol=1e-5)
    constant = torch.full((3, 3, 12, 12), 0.37)
    assert torch.allclose(gaussian_blur(constant, torch.tensor([0.5, 1.0, 2.0]), 7), constant, atol=1e-6)


def test_crop_resize_reads_the_exact_box_and_flips_the_chosen_rows():
    images = _images(batch=4).float()
    # integer boxes cropped at their own size are plain slices of the image
    boxes = torch.tensor([[0.0, 0.0, 32, 32], [5, 7, 10, 10], [20, 3, 10, 10], [1, 22, 10, 10]])
    flip = torch.tensor([False, True, False, True])
    full = crop_resize(images[:1], boxes[:1], 32)
    assert torch.allclose(full, images[:1], atol=1e-4)
    crops = crop_resize(images[1:], boxes[1:], 10, flip[1:])
    for i in range(1, 4):
        left, top = int(boxes[i, 0]), int(boxes[i, 1])
        expected = images[i, :, top : top + 10, left : left + 10]
        if flip[i]:
            expected = expected.flip(-1)
        assert torch.allclose(crops[i - 1], expected, atol=1e-3), i


def test_crop_parameters_are_drawn_per_sample_within_their_ranges():
    recipe = ViewRecipe(32, AugmentConfig(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3)))
    params = draw_augmentation(256, 32, 32, recipe, torch.Generator().manual_seed(0), torch.device("cpu"))
    left, top, width, height = params.boxes.unbind(1)
    assert len({tuple(box) for box in params.boxes.tolist()}) == 256  # every row its own box
    area = width * height / (32 * 32)
    assert area.min() >= 0.08 - 1e-5 and area.max() <= 1 + 1e-5
    assert area.std() > 0.15  # spread over the range, not one value
    ratio = width / height
    assert ratio.min() >= 3 / 4 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert left.min() >= 0 and top.min() >= 0
    assert (left + width).max() <= 32 + 1e-4 and (top + height).max() <= 32 + 1e-4
    assert 0.35 < params.flip.float().mean() < 0.65 and 0.7 < params.jitter.float().mean() < 0.9
    assert all(sorted(order) == [0, 1, 2, 3] for order in params.jitter_order.tolist())
    assert len(set(map(tuple, params.jitter_order.tolist()))) > 12  # orders differ across rows


# ------------------------------------------------------------------------------------------ augmented


def test_augmented_views_differ_and_a_seed_reproduces_them():
    domain = ImageDomain()
    first = _views(domain, "augmented", seed=7)
    again = _views(domain, "augmented", seed=7)
    other = _views(domain, "augmented", seed=8)
    a, b = (view["pixel_values"] for view in first["views"])
    assert a.shape == b.shape == (8, 3, 32, 32)
    assert torch.equal(a, again["views"][0]["pixel_values"]) and torch.equal(b, again["views"][1]["pixel_values"])
    assert not torch.allclose(a, other["views"][0]["pixel_values"])
    assert all(not torch.allclose(a[i], b[i]) for i in range(8))  # two views of one image differ
    assert first["labels"].tolist() == list(range(8)) and first["skipped"] == 2
    # normalised pixels of [0, 1] images
    unit = _denormalize(a, domain.config)
    assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5


def test_byol_policy_and_multicrop():
    config = ImageConfig()
    recipes = view_recipes(config, "byol", 2, 3, 12)
    assert [(r.settings.blur_probability, r.settings.solarize_probability) for r in recipes[:2]] == [(1.0, 0.0), (0.1, 0.2)]
    assert [r.size for r in recipes] == [32, 32, 12, 12, 12] and recipes[2].settings.crop_scale == (0.05, 0.14)
    generator = torch.Generator().manual_seed(0)
    second = draw_augmentation(4000, 32, 32, recipes[1], generator, torch.device("cpu"))
    assert abs(second.solarize.float().mean() - 0.2) < 0.03 and abs(second.blur.float().mean() - 0.1) < 0.03
    first = draw_augmentation(100, 32, 32, recipes[0], generator, torch.device("cpu"))
    assert bool(first.blur.all()) and not bool(first.solarize.any())

    views = _views(ImageDomain(), "augmented", policy="byol", local_views=3)["views"]
    assert [tuple(v["pixel_values"].shape) for v in views] == [(8, 3, 32, 32)] * 2 + [(8, 3, 12, 12)] * 3
    with pytest.raises(ValueError, match="exactly 2"):
        _views(ImageDomain(), "augmented", policy="byol", num_views=3)


def test_dropout_policy_gives_identical_plain_copies():
    domain = ImageDomain()
    views = _views(domain, "augmented", policy="dropout", num_views=3)["views"]
    plain = _views(domain, "plain")["inputs"]["pixel_values"]
    assert len(views) == 3 and all(torch.equal(v["pixel_values"], plain) for v in views)


def test_plain_view_is_the_normalised_image():
    config = ImageConfig(normalization="cifar10")
    images = _images()
    pixels = _views(ImageDomain(config), "plain", images=images)["inputs"]["pixel_values"]
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    expected = (images.float() / 255 - mean) / std
    assert torch.allclose(pixels, expected, atol=1e-6)


def test_unknown_options_and_kinds_are_named():
    domain = ImageDomain()
    with pytest.raises(ValueError, match="num_veiws"):
        _views(domain, "augmented", num_veiws=2)
    with pytest.raises(ValueError, match="takes no options"):
        _views(domain, "sequence", crop_seconds=1.0)  # an audio option: images take theirs from the config
    with pytest.raises(ValueError, match="task"):
        _views(domain, "pretext")
    with pytest.raises(TypeError, match="uint8"):
        domain.make_views({"images": torch.rand(2, 3, 32, 32)}, ViewRequest("plain"), torch.Generator())


# --------------------------------------------------------------------------------------------- masked


def test_patchify_matches_a_loop_and_inverts():
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    for b, (row, col) in itertools.product(range(2), itertools.product(range(2), range(3))):
        block = images[b, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4]  # [C, p, p]
        assert torch.equal(patches[b, row * 3 + col], block.permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(patches, 4, 3, 8, 12), images)


@pytest.mark.parametrize("ratio", [0.75, 0.4])
def test_masked_view_hits_the_ratio_per_sample(ratio):
    domain = ImageDomain()
    views = _views(domain, "masked", mask_ratio=ratio)
    mask, keep = views["mask"], views["inputs"]["keep_index"]
    pixels = views["inputs"]["pixel_values"]
    assert mask.shape == (8, 64) and mask.dtype == torch.bool
    assert (mask.sum(dim=1) == round(ratio * 64)).all()
    assert keep.shape == (8, 64 - round(ratio * 64)) and keep.dtype == torch.long
    for b in range(8):
        assert keep[b].tolist() == sorted(set(range(64)) - set(mask[b].nonzero().flatten().tolist()))
    assert len({tuple(m.tolist()) for m in mask}) == 8  # each sample its own mask
    assert torch.equal(views["targets"], patchify(pixels, 4))


# -------------------------------------------------------------------------------------------- pretext


def test_rotation_labels_invert_to_the_plain_image():
    domain = ImageDomain()
    views = _views(domain, "pretext", task="rotation")
    plain = _views(domain, "plain")["inputs"]["pixel_values"]
    rotated, labels = views["parts"][0]["pixel_values"], views["labels"]
    assert views["num_classes"] == 4 and labels.unique().numel() > 1
    for b in range(8):
        # numpy as the reference for the direction: k quarter turns counter-clockwise
        assert np.allclose(rotated[b].numpy(), np.rot90(plain[b].numpy(), int(labels[b]), axes=(1, 2)))
    turns = torch.tensor([0, 1, 2, 3])
    square = torch.arange(16.0).view(1, 1, 4, 4).repeat(4, 1, 1, 1)
    undone = rotate_quarter_turns(rotate_quarter_turns(square, turns), (4 - turns) % 4)
    assert torch.equal(undone, square)
    everything = _views(domain, "pretext", task="rotation", all_rotations=True)
    assert everything["parts"][0]["pixel_values"].shape == (32, 3, 32, 32)
    assert everything["labels"].tolist() == [k for k in range(4) for _ in range(8)]


def _min_hamming(permutations: np.ndarray) -> int:
    return min(int((p != q).sum()) for p, q in itertools.combinations(permutations, 2))


def test_jigsaw_permutation_set_is_greedy_maximin():
    latin = jigsaw_permutations(9).numpy()
    assert _min_hamming(latin) == 9  # a Latin rectangle: every pair differs everywhere
    chosen = jigsaw_permutations(14).numpy()
    assert len({tuple(p) for p in chosen}) == 14 and all(sorted(p) == list(range(9)) for p in chosen)
    # greedy maximin, checked against every candidate: each pick is at least as far (in minimum
    # Hamming distance) from the earlier picks as any other permutation
    candidates = np.array(list(itertools.permutations(range(9))), dtype=np.int8).T  # [9, 9!]
    distance_to_set = np.full(candidates.shape[1], 9)
    for k in range(1, 14):
        distance_to_set = np.minimum(distance_to_set, sum(candidates[i] != chosen[k - 1][i] for i in range(9)))
        assert min(int((chosen[k] != p).sum()) for p in chosen[:k]) == distance_to_set.max()
    assert _min_hamming(jigsaw_permutations(100).numpy()) == 6  # the docstring's claim


def _cells(image: torch.Tensor, side: int) -> list[torch.Tensor]:
    return [image[:, r * side : (r + 1) * side, c * side : (c + 1) * side] for r in range(3) for c in range(3)]


def test_jigsaw_tiles_follow_the_labelled_permutation():
    config = ImageConfig(image_size=24, normalization="none",
                         pretext={"jigsaw_tile_fraction": 1.0, "standardize_tiles": False, "tile_size": 8,
                                  "jigsaw_permutations": 30})
    domain = ImageDomain(config)
    images = _images(side=24)
    views = _views(domain, "pretext", images=images, task="jigsaw")
    permutations = jigsaw_permutations(30)
    assert views["num_classes"] == 30 and len(views["parts"]) == 9
    for b in range(8):
        cells = _cells(images[b].float() / 255, 8)
        order = permutations[views["labels"][b]].tolist()
        for i in range(9):
            assert torch.allclose(views["parts"][i]["pixel_values"][b], cells[order[i]], atol=1e-5), (b, i)


def test_jigsaw_tiles_with_gaps_are_standardised_crops_inside_their_cells():
    views = _views(ImageDomain(), "pretext", task="jigsaw")
    tile = views["parts"][0]["pixel_values"]
    assert tile.shape == (8, 3, 12, 12)
    assert torch.allclose(tile.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-4)
    assert torch.allclose(tile.std(dim=(1, 2, 3)), torch.ones(8), atol=1e-3)


def test_relative_position_pairs_the_centre_with_the_labelled_neighbour():
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]  # label -> (row, col) step
    config = ImageConfig(image_size=24, normalization="none", pretext={"relative_position_tile_fraction": 1.0,
                                                                       "tile_size": 8})
    images = _images(side=24)
    views = _views(ImageDomain(config), "pretext", seed=3, images=images, task="relative_position")
    assert views["num_classes"] == 8 and len(views["parts"]) == 2
    for b in range(8):
        cells = _cells(images[b].float() / 255, 8)
        row, col = 1 + offsets[views["labels"][b]][0], 1 + offsets[views["labels"][b]][1]
        assert torch.allclose(views["parts"][0]["pixel_values"][b], cells[4], atol=1e-5)
        assert torch.allclose(views["parts"][1]["pixel_values"][b], cells[3 * row + col], atol=1e-5)


# ------------------------------------------------------------------------------------------ corrupted


def test_lab_matches_published_values_and_round_trips():
    colours = torch.tensor([[1.0, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    lab = rgb_to_lab(colours.view(5, 3, 1, 1)).view(5, 3)
    # CIE L*a*b* (D65) of the sRGB primaries, as tabulated by Lindbloom's calculator
    expected = torch.tensor([[100, 0, 0], [0, 0, 0], [53.2408, 80.0925, 67.2032], [87.7347, -86.1827, 83.1793],
                             [32.2970, 79.1875, -107.8602]], dtype=torch.float64)
    assert torch.allclose(lab, expected, atol=2e-3)
    images = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(images)), images, atol=1e-9)


def test_colorization_gives_gray_inputs_and_ab_targets():
    config = ImageConfig()
    images = _images()
    views = _views(ImageDomain(config), "corrupted", images=images, task="colorization")
    assert views["mask"] is None and views["values"].shape == (8, 2, 32, 32)
    assert torch.allclose(views["values"], rgb_to_lab(images.float() / 255)[:, 1:], atol=1e-4)
    # the targets are the soft encoding of those ab values onto the colour classes
    classes, weights = soft_encode(views["values"])
    assert torch.equal(views["targets"], classes) and torch.equal(views["target_weights"], weights)
    assert torch.equal(views["class_values"], ab_bin_centres())
    gray = _denormalize(views["inputs"]["pixel_values"], config)
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-5) and torch.allclose(gray[:, 1], gray[:, 2], atol=1e-5)
    assert torch.allclose(gray[:, 0] * 100, rgb_to_lab(images.float() / 255)[:, 0], atol=1e-3)


@pytest.mark.parametrize("mask_kind", ["central", "block", "region"])
def test_inpainting_masks_fill_the_hole_with_the_mean(mask_kind):
    domain = ImageDomain()
    views = _views(domain, "corrupted", task="inpainting", mask=mask_kind)
    plain = _views(domain, "plain")["inputs"]["pixel_values"]
    mask, inputs = views["mask"], views["inputs"]["pixel_values"]
    assert mask.shape == (8, 1, 32, 32) and mask.dtype == torch.bool
    assert torch.equal(views["targets"], plain)
    assert torch.equal(inputs, torch.where(mask, torch.zeros_like(plain), plain))
    covered = mask.float().mean(dim=(1, 2, 3))
    if mask_kind == "central":
        assert torch.all(covered == 0.25) and bool(mask[:, 0, 8:24, 8:24].all())
    elif mask_kind == "region":
        assert torch.all(mask.sum(dim=(1, 2, 3)) == 256)
    else:
        assert torch.all((covered > 0) & (covered <= 0.25))
    if mask_kind != "central":
        assert len({tuple(m.flatten().tolist()) for m in mask}) == 8


@pytest.mark.parametrize("noise", ["gaussian", "masking", "salt_and_pepper"])
def test_denoising_noise_and_mask(noise):
    config = ImageConfig(normalization="none")
    images = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)
    views = _views(ImageDomain(config), "corrupted", images=images, task="denoising", noise=noise, noise_std=0.1,
                   noise_fraction=0.3)
    noisy, mask = views["inputs"]["pixel_values"], views["mask"]
    clean = images.float() / 255
    assert torch.allclose(views["targets"], clean) and mask.shape == (8, 3, 32, 32)
    assert torch.equal(noisy[~mask], clean[~mask])
    if noise == "gaussian":
        assert bool(mask.all()) and abs(float((noisy - clean).std()) - 0.1) < 0.005
    else:
        assert torch.all(mask.flatten(1).sum(dim=1) == round(0.3 * 3 * 32 * 32))
        allowed = {0.0} if noise == "masking" else {0.0, 1.0}
        assert set(noisy[mask].unique().tolist()) == allowed
