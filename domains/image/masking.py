"""Patches and random masks for masked image modelling (MAE, He et al. 2022).

Patch layout follows MAE's ``patchify``: patches in row-major order over the ``H/p x W/p`` grid,
each flattened as (row in patch, column in patch, channel), so a patch vector has ``p * p * C``
values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import draws

__all__ = ["patchify", "unpatchify", "random_masks", "mae_masks"]


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
