"""Corrupt-and-reconstruct tasks on whole batches: inpainting masks, denoising noise, Lab split.

- Inpainting (Pathak et al. 2016, context encoders): a region is removed and must be filled in.
  "central": a centred square of ``area`` of the image; "block": 4 random squares of ``area / 4``
  each (the paper's "random block": several, possibly overlapping, up to 1/4 of the image);
  "region": a random smooth blob covering ``area`` of the image (the paper takes shapes from PASCAL
  VOC segmentations; thresholded upsampled noise gives arbitrary shapes without that data set).
- Denoising (Vincent et al. 2008; 2010, section 4.2): additive Gaussian noise, masking noise (a
  fraction of the elements forced to 0) or salt-and-pepper noise (a fraction set to 0 or 1 by a
  fair coin), on pixels in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import draws
from .masking import random_masks

__all__ = ["central_masks", "block_masks", "region_masks", "inpainting_masks", "add_noise"]


def central_masks(batch: int, height: int, width: int, area: float, device: torch.device) -> Tensor:
    """Bool[B, 1, H, W]: the centred rectangle of ``area`` of the image (same for every row)."""
    side_h, side_w = round(height * math.sqrt(area)), round(width * math.sqrt(area))
    mask = torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
    top, left = (height - side_h) // 2, (width - side_w) // 2
    mask[:, :, top : top + side_h, left : left + side_w] = True
    return mask


def block_masks(batch: int, height: int, width: int, area: float, generator: torch.Generator,
                device: torch.device, blocks: int = 4) -> Tensor:
    """Bool[B, 1, H, W]: the union of ``blocks`` random rectangles of ``area / blocks`` each, per row."""
    side_h = max(1, round(height * math.sqrt(area / blocks)))
    side_w = max(1, round(width * math.sqrt(area / blocks)))
    corner = draws.uniform(generator, (batch, blocks, 2), device)
    top = (corner[..., 0] * (height - side_h + 1)).floor().view(batch, blocks, 1, 1)
    left = (corner[..., 1] * (width - side_w + 1)).floor().view(batch, blocks, 1, 1)
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    inside = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
    return inside.any(dim=1, keepdim=True)


def region_masks(batch: int, height: int, width: int, area: float, generator: torch.Generator,
                 device: torch.device) -> Tensor:
    """Bool[B, 1, H, W]: the ``round(area * H * W)`` pixels of highest smooth noise, per row.

    Noise on a coarse grid (1/8 of the side) is upsampled bicubically, so the kept pixels form a
    few connected blobs of random shape.
    """
    coarse = draws.uniform(generator, (batch, 1, max(2, height // 8), max(2, width // 8)), device)
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).flatten(1)
    count = round(area * height * width)
    if count == 0:
        return torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
    threshold = smooth.topk(count, dim=1).values[:, -1:]
    return (smooth >= threshold).view(batch, 1, height, width)


def inpainting_masks(kind: str, batch: int, height: int, width: int, area: float, generator: torch.Generator,
                     device: torch.device) -> Tensor:
    """Dispatch on ``kind`` ("central", "block", "region"); Bool[B, 1, H, W], True = removed."""
    if kind == "central":
        return central_masks(batch, height, width, area, device)
    if kind == "block":
        return block_masks(batch, height, width, area, generator, device)
    if kind == "region":
        return region_masks(batch, height, width, area, generator, device)
    raise ValueError(f"unknown inpainting mask {kind!r}; known: 'central', 'block', 'region'")


def add_noise(images: Tensor, kind: str, std: float, fraction: float,
              generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Corrupt [B, C, H, W] pixels in [0, 1]; returns (noisy images, Bool[B, C, H, W] corrupted elements).

    "gaussian": ``clamp(x + std * N(0, 1), 0, 1)``, every element corrupted; "masking": exactly
    ``round(fraction * C H W)`` elements per sample set to 0; "salt_and_pepper": that many set to 0
    or 1 with equal probability. The mask marks the chosen elements even where the new value
    happens to equal the old one.
    """
    batch = images.shape[0]
    if kind == "gaussian":
        noisy = (images + std * draws.normal(generator, tuple(images.shape), images.device)).clamp(0, 1)
        return noisy, torch.ones_like(images, dtype=torch.bool)
    if kind not in ("masking", "salt_and_pepper"):
        raise ValueError(f"unknown noise {kind!r}; known: 'gaussian', 'masking', 'salt_and_pepper'")
    elements = images[0].numel()
    mask = random_masks(batch, elements, round(fraction * elements), generator, images.device).view_as(images)
    if kind == "masking":
        return images.masked_fill(mask, 0.0), mask
    salt = draws.bernoulli(generator, 0.5, tuple(images.shape), images.device).to(images.dtype)
    return torch.where(mask, salt, images), mask
