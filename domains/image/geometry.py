"""Per-sample crops of whole batches: one ``grid_sample`` call, a different box for every row.

A box is ``(left, top, width, height)`` in pixels of the source image, continuous (not rounded to
whole pixels). :func:`crop_resize` maps each row's box onto an ``out_h x out_w`` output with an affine
sampling grid (bilinear, ``align_corners=False``): the box's outer pixel edges land on the output's
outer edges, so a box equal to the image reproduces it exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import draws

__all__ = ["sample_crop_boxes", "box_affine", "crop_resize", "crop_resize_many"]


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device,
    attempts: int = 10,
) -> Tensor:
    """Random-resized-crop boxes, one per row: Float[B, 4] (left, top, width, height).

    torchvision's ``RandomResizedCrop.get_params`` rule, vectorised: ``attempts`` candidates per row
    with area fraction ~ U(scale) and log aspect ratio ~ U(log ratio); the first candidate that fits
    in the image wins; rows where none fits take the largest centred box whose aspect ratio is
    clamped to ``ratio``. The position is uniform over the places the box fits.
    """
    area = height * width
    target_area = area * draws.uniform(generator, (batch, attempts), device, *scale)
    log_ratio = draws.uniform(generator, (batch, attempts), device, math.log(ratio[0]), math.log(ratio[1]))
    aspect = log_ratio.exp()
    widths = (target_area * aspect).sqrt()
    heights = (target_area / aspect).sqrt()
    fits = (widths <= width) & (heights <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first True (0 if none)
    box_w = widths.gather(1, first).squeeze(1)
    box_h = heights.gather(1, first).squeeze(1)

    image_ratio = width / height
    if image_ratio < ratio[0]:
        fallback_w, fallback_h = float(width), width / ratio[0]
    elif image_ratio > ratio[1]:
        fallback_w, fallback_h = height * ratio[1], float(height)
    else:
        fallback_w, fallback_h = float(width), float(height)
    any_fits = fits.any(dim=1)
    box_w = torch.where(any_fits, box_w, torch.full_like(box_w, fallback_w))
    box_h = torch.where(any_fits, box_h, torch.full_like(box_h, fallback_h))

    position = draws.uniform(generator, (batch, 2), device)
    left = position[:, 0] * (width - box_w)
    top = position[:, 1] * (height - box_h)
    return torch.stack((left, top, box_w, box_h), dim=1)


def box_affine(boxes: Tensor, height: int, width: int, flip: Tensor | None = None) -> Tensor:
    """Float[N, 2, 3] ``affine_grid`` matrices mapping output coordinates onto each box.

    In normalised coordinates (-1 and 1 are the outer pixel edges) the output's x = u maps to
    ``(w / W) u + (2 left + w) / W - 1``; a flipped row negates the x scale (mirror inside the box).
    """
    left, top, box_w, box_h = boxes.unbind(dim=1)
    scale_x = box_w / width
    if flip is not None:
        scale_x = torch.where(flip, -scale_x, scale_x)
    scale_y = box_h / height
    shift_x = (2 * left + box_w) / width - 1
    shift_y = (2 * top + box_h) / height - 1
    zeros = torch.zeros_like(scale_x)
    return torch.stack(
        (torch.stack((scale_x, zeros, shift_x), dim=1), torch.stack((zeros, scale_y, shift_y), dim=1)), dim=1
    )


def crop_resize(images: Tensor, boxes: Tensor, size: int | tuple[int, int], flip: Tensor | None = None) -> Tensor:
    """Crop box ``boxes[b]`` of ``images[b]`` ([B, C, H, W] float) and resize it to ``size``; flip rows
    where ``flip`` is True. Returns [B, C, out_h, out_w]."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    batch, channels, height, width = images.shape
    theta = box_affine(boxes.to(images.dtype), height, width, flip)
    grid = F.affine_grid(theta, [batch, channels, out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def crop_resize_many(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """K boxes per image in one sampling call: boxes Float[B, K, 4] -> [B, K, C, size, size].

    The K sampling grids are stacked along the output height, so the image is read once.
    """
    batch, count = boxes.shape[:2]
    channels, height, width = images.shape[1:]
    theta = box_affine(boxes.reshape(batch * count, 4).to(images.dtype), height, width)
    grid = F.affine_grid(theta, [batch * count, channels, size, size], align_corners=False)
    grid = grid.reshape(batch, count * size, size, 2)
    tiles = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return tiles.reshape(batch, channels, count, size, size).transpose(1, 2)
