"""Image mixtures on whole batches: Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019), with a
mixing partner and coefficient drawn per sample from the engine's generator.

Row b of the batch is mixed with row ``partner[b]`` (a random permutation of the batch, as the
official i-Mix and CutMix codes draw it: a row may be its own partner) with weight ``lam[b]`` on
its own image:

- Mixup: ``lam x_b + (1 - lam) x_partner``, ``lam`` from Beta(alpha, alpha);
- CutMix: a box of ``1 - lam`` of the area, centred uniformly in the image and clipped to it, is
  pasted from the partner; ``lam`` is then the area fraction left of the row's own image (the box
  after clipping, as CutMix's code recomputes it). One box per sample (CutMix's code draws one box
  per batch).

Coefficients are ``max(lam, 1 - lam)``, as i-Mix's code draws them, so the row's own image always
weighs at least half (the soft targets of Mixup are symmetric in the pair, so this changes nothing
for them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import draws

__all__ = ["MIXES", "draw_mixing", "mixup", "cutmix_boxes", "cutmix", "mix"]

MIXES = ("mixup", "cutmix")


def draw_mixing(batch: int, alpha: float, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
    """(partner Long[B], lam Float[B] in [0.5, 1]): a random permutation and max(l, 1 - l), l ~ Beta(alpha, alpha)."""
    if not alpha > 0:
        raise ValueError(f"mix_alpha must be positive, got {alpha}")
    partner = draws.random_permutations(generator, 1, batch, device)[0]
    lam = draws.beta(generator, alpha, alpha, (batch,), device)
    return partner, torch.maximum(lam, 1 - lam)


def mixup(images: Tensor, partner: Tensor, lam: Tensor) -> Tensor:
    """``lam[b] images[b] + (1 - lam[b]) images[partner[b]]`` for a [B, C, H, W] batch."""
    weight = lam.to(images.dtype).view(-1, 1, 1, 1)
    return weight * images + (1 - weight) * images[partner]


def cutmix_boxes(lam: Tensor, height: int, width: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Boxes Long[B, 4] (top, left, bottom, right; bottom and right exclusive) of ``1 - lam`` of the
    area (sides ``int(H sqrt(1 - lam))``, ``int(W sqrt(1 - lam))``), centred at a uniform pixel and
    clipped to the image, and the coefficient each box leaves: ``1 - box area / (H W)``."""
    device = lam.device
    ratio = (1 - lam).clamp_min(0).sqrt()
    cut_h, cut_w = (height * ratio).long(), (width * ratio).long()
    centre = draws.uniform(generator, (lam.shape[0], 2), device)
    cy = (centre[:, 0] * height).long().clamp_max(height - 1)
    cx = (centre[:, 1] * width).long().clamp_max(width - 1)
    top, bottom = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    left, right = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    area = ((bottom - top) * (right - left)).to(lam.dtype)
    return torch.stack((top, left, bottom, right), dim=1), 1 - area / (height * width)


def cutmix(images: Tensor, partner: Tensor, boxes: Tensor) -> Tensor:
    """Paste ``images[partner[b]]`` inside ``boxes[b]`` into ``images[b]``, one masked select."""
    height, width = images.shape[-2:]
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    columns = torch.arange(width, device=images.device).view(1, 1, width)
    top, left, bottom, right = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (rows >= top) & (rows < bottom) & (columns >= left) & (columns < right)
    return torch.where(inside[:, None], images[partner], images)


def mix(images: Tensor, kind: str, alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Mixup or CutMix of a [B, C, H, W] batch: (mixed images, partner Long[B], lam Float[B])."""
    if kind not in MIXES:
        raise ValueError(f"unknown mix {kind!r}; known: {list(MIXES)}")
    partner, lam = draw_mixing(images.shape[0], alpha, generator, images.device)
    if kind == "mixup":
        return mixup(images, partner, lam), partner, lam
    boxes, lam = cutmix_boxes(lam, images.shape[-2], images.shape[-1], generator)
    return cutmix(images, partner, boxes), partner, lam
