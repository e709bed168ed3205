"""Patches and masks for masked image modelling: MAE's random masks (He et al. 2022), iBOT's masked
global crops (Zhou et al. 2022) and I-JEPA's multi-block masks (Assran et al. 2023).

Patch layout follows MAE's ``patchify``: patches in row-major order over the ``H/p x W/p`` grid,
each flattened as (row in patch, column in patch, channel), so a patch vector has ``p * p * C``
values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import draws

__all__ = ["patchify", "unpatchify", "random_masks", "mae_masks", "variable_random_masks", "sampled_ratio_masks",
           "multiblock_masks"]


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """[B, C, H, W] -> [B, T, p*p*C] with T = (H/p)(W/p)."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image {height}x{width} is not divisible into {patch_size}x{patch_size} patches")
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * channels)


def unpatchify(patches: Tensor, patch_size: int, channels: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`patchify`: [B, T, p*p*C] -> [B, C, H, W]."""
    batch = patches.shape[0]
    rows, cols = height // patch_size, width // patch_size
    images = patches.reshape(batch, rows, cols, patch_size, patch_size, channels)
    return images.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, height, width)


def random_masks(batch: int, length: int, num_masked: int, generator: torch.Generator,
                 device: torch.device) -> Tensor:
    """Bool[B, length] with exactly ``num_masked`` True per row, positions uniform per row.

    The ``num_masked`` positions of smallest noise are masked (MAE's argsort-of-noise shuffle).
    """
    if not 0 <= num_masked <= length:
        raise ValueError(f"cannot mask {num_masked} of {length} positions")
    ranks = draws.uniform(generator, (batch, length), device).argsort(dim=1)
    masks = torch.zeros(batch, length, dtype=torch.bool, device=device)
    return masks.scatter_(1, ranks[:, :num_masked], True)


def mae_masks(batch: int, num_patches: int, mask_ratio: float, generator: torch.Generator,
              device: torch.device) -> tuple[Tensor, Tensor]:
    """MAE masking: ``round(mask_ratio * T)`` patches masked per sample.

    Returns mask Bool[B, T] (True = masked, to predict) and keep_index Long[B, T_keep], the visible
    patch indices of each row in increasing order.
    """
    num_masked = round(mask_ratio * num_patches)
    if num_masked >= num_patches:
        raise ValueError(f"mask_ratio {mask_ratio} masks all {num_patches} patches; keep at least one")
    mask = random_masks(batch, num_patches, num_masked, generator, device)
    # a stable sort puts the visible (False) positions first, in increasing order, without a host sync
    keep_index = mask.to(torch.uint8).argsort(dim=1, stable=True)[:, : num_patches - num_masked]
    return mask, keep_index


def variable_random_masks(counts: Tensor, length: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Bool[B, length] with ``counts[b]`` positions True in row b (Long[B], each in [0, length]),
    positions uniform per row: the ``counts[b]`` smallest of ``length`` uniform scores."""
    ranks = draws.uniform(generator, (counts.shape[0], length), device).argsort(dim=1).argsort(dim=1)
    return ranks < counts.to(device).unsqueeze(1)


def sampled_ratio_masks(batch: int, length: int, probability: float, ratio_range: tuple[float, float],
                        generator: torch.Generator, device: torch.device) -> Tensor:
    """iBOT / DINOv2's masks of a global crop: each row is masked with ``probability`` (DINOv2's
    ``mask_sample_probability`` 0.5), then ``round(r * length)`` random positions with r ~ U(ratio_range)
    (DINOv2's ``mask_ratio_min_max`` (0.1, 0.5)); Bool[B, length]. The references mask BEiT-style
    blocks (DINOv2 also spreads the ratios over the batch with a linspace); these are random patches."""
    chosen = draws.bernoulli(generator, probability, (batch,), device)
    ratios = draws.uniform(generator, (batch,), device, *ratio_range)
    counts = torch.where(chosen, (ratios * length).round().long(), torch.zeros_like(chosen, dtype=torch.long))
    return variable_random_masks(counts, length, generator, device)


def _block_size(u: float, grid: tuple[int, int], scale: tuple[float, float],
                aspect_ratio: tuple[float, float]) -> tuple[int, int]:
    """I-JEPA's ``_sample_block_size``: one uniform draw ``u`` sets both the area fraction and the
    aspect ratio (as the reference does); the block is kept strictly inside the grid."""
    rows, columns = grid
    area = int(rows * columns * (scale[0] + u * (scale[1] - scale[0])))
    aspect = aspect_ratio[0] + u * (aspect_ratio[1] - aspect_ratio[0])
    height = min(int(round(math.sqrt(area * aspect))), rows - 1)
    width = min(int(round(math.sqrt(area / aspect))), columns - 1)
    return max(height, 1), max(width, 1)


def _blocks(tops: Tensor, lefts: Tensor, size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Bool[..., rows * columns]: the block of ``size`` at each (top, left) (Long[...]), row-major."""
    rows, columns = grid
    position = torch.arange(rows * columns, device=tops.device)
    row, column = position // columns, position % columns
    top, left = tops.unsqueeze(-1), lefts.unsqueeze(-1)
    return (row >= top) & (row < top + size[0]) & (column >= left) & (column < left + size[1])


def multiblock_masks(batch: int, grid: tuple[int, int], generator: torch.Generator, device: torch.device, *,
                     num_targets: int = 4, target_scale: tuple[float, float] = (0.15, 0.2),
                     target_aspect_ratio: tuple[float, float] = (0.75, 1.5),
                     context_scale: tuple[float, float] = (0.85, 1.0), min_keep: int = 10,
                     attempts: int = 20) -> tuple[Tensor, Tensor, Tensor]:
    """I-JEPA's multi-block masking (Assran et al. 2023, section 3; ``MaskCollator`` of the reference
    ``src/masks/multiblock.py``), vectorised over the batch.

    One target block size and one context block size per batch (as the reference's collator draws
    them per batch), from ``target_scale`` x ``target_aspect_ratio`` and ``context_scale`` with aspect
    ratio 1. Per row: ``num_targets`` target blocks at uniform positions (they may overlap each
    other), and one context block with every target removed. Positions follow the reference's
    ``torch.randint(0, rows - height)``, so a block never touches the last row or column.

    The reference redraws a context until it keeps more than ``min_keep`` patches, and after 20
    failures drops one target's constraint at a time. Here ``attempts`` candidate positions are
    drawn at once and the first that works is taken, with the targets of the first ``num_targets - l``
    blocks removed for the smallest ``l`` that has one; when none works even without targets, the
    first candidate with no target kept out is used rather than looping forever as the reference would.

    Returns (context_index Long[B, K], target_index Long[B, num_targets, h * w], target_mask Bool[B, T]):
    row-major patch indices, increasing; contexts are cut to the batch's smallest count K, keeping
    each row's first K as the reference does; target_mask is the union of the target blocks.
    """
    rows, columns = grid
    if rows < 2 or columns < 2:
        raise ValueError(f"multi-block masking needs a grid of at least 2 x 2 patches, got {rows} x {columns}")
    if num_targets < 1 or attempts < 1 or min_keep < 0:
        raise ValueError(f"need num_targets >= 1, attempts >= 1 and min_keep >= 0, got {num_targets}, {attempts}, {min_keep}")
    u_target, u_context = torch.rand(2, generator=generator, device=generator.device).tolist()
    target_size = _block_size(u_target, grid, target_scale, target_aspect_ratio)
    context_size = _block_size(u_context, grid, context_scale, (1.0, 1.0))

    def positions(size: tuple[int, int], count: int) -> tuple[Tensor, Tensor]:
        return (draws.randint(generator, rows - size[0], (batch, count), device),
                draws.randint(generator, columns - size[1], (batch, count), device))

    targets = _blocks(*positions(target_size, num_targets), target_size, grid)  # [B, M, T]
    candidates = _blocks(*positions(context_size, attempts), context_size, grid)  # [B, R, T]
    # level l keeps targets 0 .. num_targets - 1 - l out of the context (the reference's relaxation);
    # level num_targets keeps none out. When no level works, the first candidate of that last level.
    union_so_far = targets.cumsum(dim=1) > 0  # [B, M, T]: union of targets 0..m
    kept_out = torch.cat([union_so_far.flip(1), union_so_far.new_zeros(batch, 1, rows * columns)], dim=1)
    allowed = ~kept_out  # [B, M + 1, T]
    valid = (candidates.unsqueeze(1) & allowed.unsqueeze(2)).sum(dim=-1) > min_keep  # [B, M + 1, R]
    level_works = valid.any(dim=-1)
    level = torch.where(level_works.any(dim=1), level_works.to(torch.uint8).argmax(dim=1), num_targets)
    index = torch.arange(batch, device=device)
    choice = valid[index, level].to(torch.uint8).argmax(dim=1)
    context = candidates[index, choice] & allowed[index, level]
    keep = int(context.sum(dim=1).min())
    context_index = context.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :keep]
    area = target_size[0] * target_size[1]
    target_index = targets.to(torch.uint8).argsort(dim=2, descending=True, stable=True)[:, :, :area]
    return context_index, target_index, targets.any(dim=1)
