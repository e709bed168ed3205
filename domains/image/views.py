"""The image domain's view kinds (contract: ``multissl.views``), on whole uint8 batches on device.

Each builder turns ``images`` uint8 [B, C, H, W] into the kind's dict; pixels become floats in
[0, 1], are transformed, then normalised with the domain's mean and std (or turned into the L or
ab channels of CIE L*a*b*, ``ImageConfig.color_space``). Keys produced:

``plain``      {"inputs": {"pixel_values"}}
``augmented``  {"views": [{"pixel_values"}, ...]}  globals (image_size) first, then locals (local_size);
               policies "simclr", "byol", "randaugment" (Cubuk et al. 2020), "dropout"; option
               ``replay`` leaves the generator where it was (CMC's shared crop); option ``mix``
               ("mixup" | "cutmix", ``mix_alpha``) mixes the first view with a partner row and adds
               "mix_partner" Long[B] and "mix_lambda" Float[B] (the weight of the row's own image);
               with ``mask_probability`` also "masks" and "masked_views" ({"pixel_values", "bool_masked_pos"})
``masked``     {"inputs": {"pixel_values", "keep_index" | "bool_masked_pos"}, "mask": Bool[B, T],
               "targets": [B, T, p*p*C], "grid": (rows, columns), "clean": {"pixel_values"}};
               multiblock masking adds "target_index" [B, M, K]
``pretext``    {"parts": [{"pixel_values"}, ...], "labels": Long[B], "num_classes": int}; option ``views``
               adds "views": augmented views of the same rows (PIRL)
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
from .mixing import MIXES, mix
from .pretext import jigsaw_permutations, jigsaw_tiles, relative_position_tiles, rotate_quarter_turns
from .randaugment import randaugment

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


#: CMC's normalisation of L*a*b* (its train_CMC.py): the middle and half the range of each channel
#: over sRGB (L in [0, 100], a in [-86.183, 98.233], b in [-107.857, 94.478])
LAB_MEAN = ((0 + 100) / 2, (-86.183 + 98.233) / 2, (-107.857 + 94.478) / 2)
LAB_STD = ((100 - 0) / 2, (86.183 + 98.233) / 2, (107.857 + 94.478) / 2)
_LAB_CHANNELS = {"L": slice(0, 1), "ab": slice(1, 3)}


def lab_channels(images: Tensor, color_space: str) -> Tensor:
    """RGB [B, 3, H, W] in [0, 1] -> CMC's normalised L (1 channel) or ab (2 channels) of CIE L*a*b*."""
    if images.shape[1] != 3:
        raise ValueError(f"color_space {color_space!r} needs RGB images, got {images.shape[1]} channel(s)")
    channels = _LAB_CHANNELS[color_space]
    lab = rgb_to_lab(images)[:, channels]
    return normalize(lab, LAB_MEAN[channels], LAB_STD[channels])


def _normalized(images: Tensor, config: ImageConfig) -> Tensor:
    assert config.mean is not None and config.std is not None
    if config.color_space != "rgb":
        return lab_channels(images, config.color_space)
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
        raise ValueError(f"unknown augmentation policy {policy!r}; known: 'simclr', 'byol', 'randaugment', 'dropout'")
    local = ViewRecipe(local_size, replace(settings, crop_scale=settings.local_crop_scale))
    return globals_ + [local] * local_views


def augmented_views(images: Tensor, config: ImageConfig, request: ViewRequest,
                    generator: torch.Generator) -> dict[str, Any]:
    """``num_views`` globals then ``local_views`` locals. Option ``replay``: draw from a copy of the
    generator, leaving it where it was, so that the next request (another image domain of the same
    objective, on the same rows) draws the same crops: CMC's L and ab views of one crop, each domain
    converting it to its own color_space. With ``mask_probability`` > 0 (iBOT, DINOv2), every global
    view also comes masked: "masks" (one Bool[B, T] per global view, drawn by
    :func:`sampled_ratio_masks` with ``mask_ratio_range``) and "masked_views" (the same pixels with
    "bool_masked_pos": a ViT built with ``vit_mask_token`` replaces those patches by its mask token)."""
    options = _options(request, dict(num_views=2, policy="simclr", local_views=0, local_size=config.local_size,
                                     replay=False, mix="none", mix_alpha=1.0, mask_probability=0.0,
                                     mask_ratio_range=(0.1, 0.5)))
    if not options["replay"]:
        return _augmented_views(images, config, options, generator)
    state = generator.get_state()
    try:
        return _augmented_views(images, config, options, generator)
    finally:
        generator.set_state(state)


def _augmented_views(images: Tensor, config: ImageConfig, options: dict[str, Any],
                     generator: torch.Generator) -> dict[str, Any]:
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
    if options["policy"] == "randaugment":
        views = randaugment_views(unit, config, num_views, local_views, int(options["local_size"]), generator)
    else:
        recipes = view_recipes(config, options["policy"], num_views, local_views, int(options["local_size"]))
        views = [augment(unit, recipe, generator) for recipe in recipes]
    result: dict[str, Any] = {}
    if options["mix"] != "none":
        views[0], result["mix_partner"], result["mix_lambda"] = _mixed(views[0], options, generator)
    result["views"] = [{"pixel_values": _normalized(view, config)} for view in views]
    return result


def randaugment_views(unit: Tensor, config: ImageConfig, num_views: int, local_views: int, local_size: int,
                      generator: torch.Generator) -> list[Tensor]:
    """Policy "randaugment" (Cubuk et al. 2020): each view a random resized crop and flip (the
    augment settings' crop_scale, crop_ratio, flip_probability; locals at local_crop_scale), then
    RandAugment's N operations at magnitude M (``ImageConfig.randaugment``), each sample its own
    operation per layer. Floats in [0, 1]."""
    batch, _, height, width = unit.shape
    settings, views = config.augment, []
    for index in range(num_views + local_views):
        local = index >= num_views
        boxes = sample_crop_boxes(batch, height, width, settings.local_crop_scale if local else settings.crop_scale,
                                  settings.crop_ratio, generator, unit.device)
        flip = draws.bernoulli(generator, settings.flip_probability, (batch,), unit.device)
        cropped = crop_resize(unit, boxes, local_size if local else config.image_size, flip)
        views.append(randaugment(cropped, config.randaugment, generator))
    return views


def _mixed(view: Tensor, options: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Option ``mix`` ("mixup" | "cutmix", ``mix_alpha``) on the first view, in [0, 1] pixels:
    (mixed view, "mix_partner" Long[B], "mix_lambda" Float[B]), see :mod:`domains.image.mixing`."""
    if options["mix"] not in MIXES:
        raise ValueError(f"augmented view option mix must be 'none', 'mixup' or 'cutmix', got {options['mix']!r}")
    return mix(view, options["mix"], float(options["mix_alpha"]), generator)


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
    options = _options(request, dict(task=None, all_rotations=False, views=0, policy="simclr"))
    result = _pretext_parts(images, config, options, generator)
    return _with_augmented_views(result, images, config, options, generator)


def _with_augmented_views(result: dict[str, Any], images: Tensor, config: ImageConfig, options: dict[str, Any],
                          generator: torch.Generator) -> dict[str, Any]:
    """PIRL (Misra & van der Maaten 2019) contrasts the image with its jigsaw tiles: option ``views``
    adds that many augmented views of the same rows (policy ``policy``) under "views"."""
    count = int(options["views"])
    if count < 0:
        raise ValueError(f"pretext option views must be >= 0, got {count}")
    if count:
        request = ViewRequest("augmented", {"num_views": count, "policy": options["policy"]})
        result["views"] = augmented_views(images, config, request, generator)["views"]
    return result


def _pretext_parts(images: Tensor, config: ImageConfig, options: dict[str, Any],
                   generator: torch.Generator) -> dict[str, Any]:
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
        normalized = _normalized(tiles.flatten(0, 1), config)
        normalized = normalized.view(*tiles.shape[:2], *normalized.shape[1:])
        tiles = _standardize_tiles(tiles if config.color_space == "rgb" else normalized) \
            if config.pretext.standardize_tiles else normalized
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
