"""The image domain's view kinds (contract: ``multissl.views``), on whole uint8 batches on device.

Each builder turns ``images`` uint8 [B, C, H, W] into the kind's dict; pixels become floats in
[0, 1], are transformed, then normalised with the domain's mean and std. Keys produced:

``plain``      {"inputs": {"pixel_values"}}
``augmented``  {"views": [{"pixel_values"}, ...]}  globals (image_size) first, then locals (local_size);
               with ``mask_probability`` also "masks" and "masked_views" ({"pixel_values", "bool_masked_pos"})
``masked``     {"inputs": {"pixel_values", "keep_index" | "bool_masked_pos"}, "mask": Bool[B, T],
               "targets": [B, T, p*p*C], "grid": (rows, columns), "clean": {"pixel_values"}};
               multiblock masking adds "target_index" [B, M, K]
``pretext``    {"parts": [{"pixel_values"}, ...], "labels": Long[B], "num_classes": int}
``corrupted``  {"inputs": {"pixel_values"}, "targets": Tensor, "mask": Bool or None}; colorization also
               "target_weights", "values" and "class_values" (see :func:`colorization_view`)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from multissl.views import ViewRequest

from . import draws
from .augment import ViewRecipe, augment, normalize
from .color import ab_bin_centres, rgb_to_lab, soft_encode
from .config import ImageConfig
from .corruption import add_noise, inpainting_masks
from .geometry import crop_resize, sample_crop_boxes
from .masking import mae_masks, multiblock_masks, patchify, random_masks, sampled_ratio_masks
from .pretext import jigsaw_permutations, jigsaw_tiles, relative_position_tiles, rotate_quarter_turns

__all__ = ["plain_views", "augmented_views", "masked_views", "pretext_views", "corrupted_views", "view_recipes",
           "to_unit_range"]


#: I-JEPA's multi-block masking (the reference's ImageNet configs): 4 targets of scale (0.15, 0.2) and
#: aspect ratio (0.75, 1.5), one context block of scale (0.85, 1.0) keeping more than 10 patches
MULTIBLOCK_DEFAULTS: dict[str, Any] = dict(num_targets=4, target_scale=(0.15, 0.2), target_aspect_ratio=(0.75, 1.5),
                                           context_scale=(0.85, 1.0), min_keep=10)


def _options(request: ViewRequest, defaults: dict[str, Any]) -> dict[str, Any]:
    return request.checked_options("image", defaults)


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 [B, C, H, W] -> float32 in [0, 1]."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"batch['images'] must be uint8 [B, C, H, W] (from collate), got {images.dtype} "
                        f"{tuple(images.shape)}")
    return images.to(torch.float32).div_(255)


def _normalized(images: Tensor, config: ImageConfig) -> Tensor:
    assert config.mean is not None and config.std is not None
    if images.shape[1] != len(config.mean):
        raise ValueError(f"images have {images.shape[1]} channels, the domain is configured for {len(config.mean)}")
    return normalize(images, config.mean, config.std)


def plain_views(images: Tensor, config: ImageConfig) -> dict[str, Any]:
    return {"inputs": {"pixel_values": _normalized(to_unit_range(images), config)}}


def view_recipes(config: ImageConfig, policy: str, num_views: int, local_views: int,
                 local_size: int) -> list[ViewRecipe]:
    """One :class:`ViewRecipe` per view: ``num_views`` globals then ``local_views`` locals.

    "simclr": every view the same recipe; "byol": two globals with BYOL's asymmetric blur and
    solarize probabilities (view 1: blur 1.0, solarize 0; view 2: blur 0.1, solarize 0.2). Local
    views (SwAV multi-crop) take the configured probabilities, at ``local_size`` and
    ``local_crop_scale``.
    """
    settings = config.augment
    base = ViewRecipe(config.image_size, settings)
    if policy == "simclr":
        globals_ = [base] * num_views
    elif policy == "byol":
        if num_views != 2:
            raise ValueError(f"policy 'byol' defines exactly 2 asymmetric global views, got num_views={num_views}")
        globals_ = [ViewRecipe(config.image_size, replace(settings, blur_probability=blur, solarize_probability=solar))
                    for blur, solar in zip(settings.byol_blur_probability, settings.byol_solarize_probability)]
    else:
        raise ValueError(f"unknown augmentation policy {policy!r}; known: 'simclr', 'byol', 'dropout'")
    local = ViewRecipe(local_size, replace(settings, crop_scale=settings.local_crop_scale))
    return globals_ + [local] * local_views


def augmented_views(images: Tensor, config: ImageConfig, request: ViewRequest,
                    generator: torch.Generator) -> dict[str, Any]:
    """``num_views`` globals then ``local_views`` locals. With ``mask_probability`` > 0 (iBOT,
    DINOv2), every global view also comes masked: "masks" (one Bool[B, T] per global view, drawn by
    :func:`sampled_ratio_masks` with ``mask_ratio_range``) and "masked_views" (the same pixels with
    "bool_masked_pos": a ViT built with ``vit_mask_token`` replaces those patches by its mask token)."""
    options = _options(request, dict(num_views=2, policy="simclr", local_views=0, local_size=config.local_size,
                                     mask_probability=0.0, mask_ratio_range=(0.1, 0.5)))
    result = _augmented(images, config, options, generator)
    probability = float(options["mask_probability"])
    if probability > 0:
        assert config.patch_size is not None
        length = (config.image_size // config.patch_size) ** 2
        low, high = (float(r) for r in options["mask_ratio_range"])
        if not 0 <= low <= high <= 1 or probability > 1:
            raise ValueError(f"mask_probability must be in [0, 1] and mask_ratio_range a (low, high) in [0, 1], got "
                             f"{probability}, {options['mask_ratio_range']}")
        globals_ = result["views"][: int(options["num_views"])]
        masks = [sampled_ratio_masks(images.shape[0], length, probability, (low, high), generator, images.device)
                 for _ in globals_]
        result["masks"] = masks
        result["masked_views"] = [{**view, "bool_masked_pos": mask} for view, mask in zip(globals_, masks)]
    return result


def _augmented(images: Tensor, config: ImageConfig, options: dict[str, Any],
               generator: torch.Generator) -> dict[str, Any]:
    num_views, local_views = int(options["num_views"]), int(options["local_views"])
    if num_views < 1 or local_views < 0:
        raise ValueError(f"need num_views >= 1 and local_views >= 0, got {num_views}, {local_views}")
    unit = to_unit_range(images)
    if options["policy"] == "dropout":  # SimCSE-style: identical copies, the encoder's dropout differs
        if local_views:
            raise ValueError("policy 'dropout' makes identical copies; it takes no local_views")
        pixels = _normalized(unit, config)
        return {"views": [{"pixel_values": pixels.clone()} for _ in range(num_views)]}
    recipes = view_recipes(config, options["policy"], num_views, local_views, int(options["local_size"]))
    return {"views": [{"pixel_values": _normalized(augment(unit, recipe, generator), config)} for recipe in recipes]}


def masked_views(images: Tensor, config: ImageConfig, request: ViewRequest,
                 generator: torch.Generator) -> dict[str, Any]:
    """Masked image modelling on the patch grid, after a random resized crop (scale ``crop_scale``,
    default ``masked_crop_scale``) and a flip (``flip``) when ``augment``. Targets are the normalised
    patches; "clean" holds the unmasked pixels (a teacher's input: data2vec, I-JEPA).

    ``masking="random"`` (MAE, He et al. 2022): ``round(mask_ratio * T)`` patches per sample. The
    encoder sees the visible ones only ("keep_index"), or with ``mask_token`` every patch, the
    masked ones replaced by the ViT's learned mask token ("bool_masked_pos"; data2vec, BEiT).
    ``masking="multiblock"`` (I-JEPA, :func:`multiblock_masks`): "keep_index" is the context block,
    "target_index" Long[B, num_targets, K] the target blocks, "mask" their union."""
    options = _options(request, dict(mask_ratio=config.mask_ratio, augment=True, crop_scale=None, flip=True,
                                     mask_token=False, masking="random", **MULTIBLOCK_DEFAULTS))
    unit = to_unit_range(images)
    batch, _, height, width = unit.shape
    if options["augment"]:
        scale = tuple(options["crop_scale"] or config.masked_crop_scale)
        boxes = sample_crop_boxes(batch, height, width, scale, config.augment.crop_ratio, generator, unit.device)
        flip = draws.bernoulli(generator, config.augment.flip_probability, (batch,), unit.device)
        unit = crop_resize(unit, boxes, config.image_size, flip if options["flip"] else None)
    pixels = _normalized(unit, config)
    assert config.patch_size is not None
    targets = patchify(pixels, config.patch_size)
    grid = (pixels.shape[-2] // config.patch_size, pixels.shape[-1] // config.patch_size)
    view = {"targets": targets, "grid": grid, "clean": {"pixel_values": pixels}}
    if options["masking"] == "multiblock":
        if options["mask_token"]:
            raise ValueError("multiblock masking feeds the context block alone to the encoder; it takes no mask_token")
        settings = {key: options[key] for key in MULTIBLOCK_DEFAULTS}
        context, target_index, mask = multiblock_masks(batch, grid, generator, unit.device, **settings)
        return {**view, "inputs": {"pixel_values": pixels, "keep_index": context}, "mask": mask,
                "target_index": target_index}
    if options["masking"] != "random":
        raise ValueError(f"image masked view: masking must be 'random' or 'multiblock', got {options['masking']!r}")
    if options["mask_token"]:
        num_masked = round(float(options["mask_ratio"]) * targets.shape[1])
        mask = random_masks(batch, targets.shape[1], num_masked, generator, unit.device)
        return {**view, "inputs": {"pixel_values": pixels, "bool_masked_pos": mask}, "mask": mask}
    mask, keep_index = mae_masks(batch, targets.shape[1], float(options["mask_ratio"]), generator, unit.device)
    return {**view, "inputs": {"pixel_values": pixels, "keep_index": keep_index}, "mask": mask}


def _standardize_tiles(tiles: Tensor) -> Tensor:
    """Noroozi & Favaro: each tile's mean and standard deviation normalised on its own."""
    mean = tiles.mean(dim=(-3, -2, -1), keepdim=True)
    std = tiles.std(dim=(-3, -2, -1), keepdim=True).clamp_min(1e-3)
    return (tiles - mean) / std


def patch_grid_views(images: Tensor, config: ImageConfig, request: ViewRequest,
                     generator: torch.Generator) -> dict[str, Any]:
    """CPC's 2-D sequence (van den Oord et al. 2018, section 3.3): overlapping square patches of
    side ``cpc_patch_fraction`` of the shorter image side at a stride of half a patch, each resized
    to the tile size; the whole image is flipped horizontally for a random half of the rows.
    Returns {"parts": one Inputs per patch, row-major, "grid": (rows, columns)}."""
    if request.options:
        raise ValueError(f"the image sequence view takes no options (set pretext.cpc_patch_fraction), got {sorted(request.options)}")
    unit = to_unit_range(images)
    batch, channels, height, width = unit.shape
    flip = draws.bernoulli(generator, 0.5, (batch,), unit.device)
    unit = torch.where(flip[:, None, None, None], unit.flip(-1), unit)
    patch = max(2, round(config.pretext.cpc_patch_fraction * min(height, width)))
    stride = max(1, patch // 2)
    grid = unit.unfold(2, patch, stride).unfold(3, patch, stride)  # [B, C, rows, columns, patch, patch]
    rows, columns = grid.shape[2:4]
    if rows < 2:  # CPC predicts rows below from rows above
        raise ValueError(f"a {height}x{width} image makes a {rows}x{columns} grid of {patch} px patches: "
                         "lower pretext.cpc_patch_fraction or enlarge the images")
    patches = grid.permute(0, 2, 3, 1, 4, 5).reshape(batch * rows * columns, channels, patch, patch)
    size = config.tile_size
    if size != patch:
        patches = torch.nn.functional.interpolate(patches, size=(size, size), mode="bilinear", align_corners=False)
    pixels = _normalized(patches, config).view(batch, rows * columns, channels, size, size)
    return {"parts": [{"pixel_values": pixels[:, i]} for i in range(rows * columns)], "grid": (rows, columns)}


def pretext_views(images: Tensor, config: ImageConfig, request: ViewRequest,
                  generator: torch.Generator) -> dict[str, Any]:
    options = _options(request, dict(task=None, all_rotations=False))
    task = options["task"]
    unit = to_unit_range(images)
    batch = unit.shape[0]
    if task == "rotation":
        if options["all_rotations"]:  # Gidaris et al.: all four rotations of each image in one batch
            labels = torch.arange(4, device=unit.device).repeat_interleave(batch)
            rotated = torch.cat([torch.rot90(unit, k, dims=(-2, -1)) for k in range(4)])
        else:
            labels = draws.randint(generator, 4, (batch,), unit.device)
            rotated = rotate_quarter_turns(unit, labels)
        return {"parts": [{"pixel_values": _normalized(rotated, config)}], "labels": labels, "num_classes": 4}
    if task == "jigsaw":
        permutations = jigsaw_permutations(config.pretext.jigsaw_permutations)
        tiles, labels = jigsaw_tiles(unit, permutations, config.pretext.jigsaw_tile_fraction, config.tile_size,
                                     generator)
        tiles = _standardize_tiles(tiles) if config.pretext.standardize_tiles else \
            _normalized(tiles.flatten(0, 1), config).view_as(tiles)
        return {"parts": [{"pixel_values": tiles[:, i]} for i in range(tiles.shape[1])], "labels": labels,
                "num_classes": permutations.shape[0]}
    if task == "relative_position":
        tiles, labels = relative_position_tiles(unit, config.pretext.relative_position_tile_fraction,
                                                config.pretext.relative_position_jitter, config.tile_size, generator)
        tiles = _normalized(tiles.flatten(0, 1), config).view_as(tiles)
        return {"parts": [{"pixel_values": tiles[:, 0]}, {"pixel_values": tiles[:, 1]}], "labels": labels,
                "num_classes": 8}
    raise ValueError(f"pretext view needs option task in ['rotation', 'jigsaw', 'relative_position'], got {task!r}")


def colorization_view(unit: Tensor, config: ImageConfig, output_stride: int) -> dict[str, Any]:
    """Zhang et al. 2016: the encoder sees L (0-100, as a gray image); the targets are the ab
    channels, area-downsampled by ``output_stride`` and soft-encoded onto the 23 x 23 ab classes
    (:func:`soft_encode`: k nearest classes, Gaussian weights)."""
    if output_stride < 1:
        raise ValueError(f"colorization output_stride must be >= 1, got {output_stride}")
    lab = rgb_to_lab(unit)
    lightness = (lab[:, :1] / 100).expand(-1, unit.shape[1], -1, -1)
    ab = lab[:, 1:]
    if output_stride > 1:
        size = (ab.shape[-2] // output_stride, ab.shape[-1] // output_stride)
        ab = torch.nn.functional.interpolate(ab.float(), size=size, mode="area")
    classes, weights = soft_encode(ab, config.pretext.colorization_neighbours, config.pretext.colorization_sigma)
    return {"inputs": {"pixel_values": _normalized(lightness, config)}, "targets": classes, "target_weights": weights,
            "values": ab, "class_values": ab_bin_centres(unit.device), "mask": None}


def corrupted_views(images: Tensor, config: ImageConfig, request: ViewRequest,
                    generator: torch.Generator) -> dict[str, Any]:
    pretext = config.pretext
    options = _options(request, dict(task=None, mask=pretext.inpainting_mask, area=pretext.inpainting_area,
                                     noise=pretext.denoising_noise, noise_std=pretext.noise_std,
                                     noise_fraction=pretext.noise_fraction, output_stride=1))
    task = options["task"]
    unit = to_unit_range(images)
    batch, channels, height, width = unit.shape
    if task == "inpainting":
        # Pathak et al. fill the hole with the mean: 0 after normalisation
        pixels = _normalized(unit, config)
        mask = inpainting_masks(options["mask"], batch, height, width, float(options["area"]), generator, unit.device)
        return {"inputs": {"pixel_values": pixels.masked_fill(mask, 0.0)}, "targets": pixels, "mask": mask}
    if task == "colorization":
        if channels != 3:
            raise ValueError(f"colorization needs RGB images, the batch has {channels} channel(s)")
        return colorization_view(unit, config, int(options["output_stride"]))
    if task == "denoising":
        noisy, mask = add_noise(unit, options["noise"], float(options["noise_std"]), float(options["noise_fraction"]),
                                generator)
        return {"inputs": {"pixel_values": _normalized(noisy, config)}, "targets": _normalized(unit, config),
                "mask": mask}
    raise ValueError(f"corrupted view needs option task in ['inpainting', 'colorization', 'denoising'], got {task!r}")
