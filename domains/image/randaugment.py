"""RandAugment (Cubuk, Zoph, Shlens & Le 2020, "RandAugment: Practical automated data augmentation
with a reduced search space"), batched: every sample draws its own operation at every layer.

``num_ops`` layers; at each one, every sample applies one operation drawn uniformly from the
official list (``distort_image_with_randaugment`` in the authors' TensorFlow code, EfficientNet's
``autoaugment.py``), all at the one global ``magnitude`` M out of 10 (``level = M / 10``):

    AutoContrast, Equalize, Invert                    no magnitude
    Rotate        +-30 level degrees                  (sign drawn per sample)
    Posterize     keep int(4 level) bits
    Solarize      invert pixels >= int(256 level)
    SolarizeAdd   add int(110 level) to pixels < 128
    Color, Contrast, Brightness, Sharpness   blend with a degenerate image, factor 0.1 + 1.8 level
    ShearX, ShearY            +-0.3 level
    TranslateX, TranslateY    +-level * translate_fraction of the side
    Cutout        a gray square of side 2 int(level * cutout_fraction * side) at a uniform centre

Where the official code and the paper differ, the code is followed: its 16 operations (the paper
lists 14: Identity instead of Invert, Cutout and SolarizeAdd), each applied with probability 1,
magnitudes as above (its Posterize and Solarize weaken as M grows). Its translate and cutout sizes
are absolute (100 and 40 px at 224 px); here they are fractions of the side (``100/224``,
``40/224``), so small images keep the proportions. Pixels are quantised to 8 bits before and after
every operation, as the code's uint8 images are (rounded where TensorFlow truncates). Geometric
operations sample the nearest pixel and fill uncovered pixels with gray (128), as the code's
``wrap``/``unwrap``; shear is about the top-left corner and rotation about the centre, as its
projective transforms are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import draws

__all__ = ["RandAugmentConfig", "OPERATIONS", "randaugment", "apply_operation"]

OPERATIONS = ("auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize", "color", "contrast",
              "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y", "cutout", "solarize_add")
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_GRAY = 128.0
_LUMA = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale


@dataclass
class RandAugmentConfig:
    """``num_ops`` N and ``magnitude`` M (out of 10): the paper's ImageNet ResNet-50 setting is
    N = 2, M = 9. ``translate_fraction`` and ``cutout_fraction``: the code's 100 and 40 px at 224 px."""

    num_ops: int = 2
    magnitude: float = 9.0
    translate_fraction: float = 100 / 224
    cutout_fraction: float = 40 / 224

    def __post_init__(self) -> None:
        if self.num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {self.num_ops}")
        if not 0 <= self.magnitude <= 30:
            raise ValueError(f"magnitude must be in [0, 30] (10 is the official maximum), got {self.magnitude}")
        for name in ("translate_fraction", "cutout_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def _per_row(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def _quantise(images: Tensor) -> Tensor:
    return images.round().clamp(0, 255)


def _blend(degenerate: Tensor, images: Tensor, factor: float) -> Tensor:
    """The code's ``blend``: ``degenerate + factor (images - degenerate)``, clipped to [0, 255]."""
    return (degenerate + factor * (images - degenerate)).clamp(0, 255)


def _grayscale(images: Tensor) -> Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _auto_contrast(images: Tensor) -> Tensor:
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    scaled = (images - low) * (255 / (high - low).clamp_min(1e-6))
    return torch.where(high > low, scaled, images)


def _equalize(images: Tensor) -> Tensor:
    """PIL's / the code's histogram equalisation per image and channel: a lookup table from the
    cumulative histogram, ``step = (pixels - count of the last occupied level) // 255``."""
    batch, channels, height, width = images.shape
    values = images.reshape(batch * channels, height * width).long()
    histogram = torch.zeros(batch * channels, 256, dtype=torch.long, device=images.device)
    histogram.scatter_add_(1, values, torch.ones_like(values))
    last_level = torch.where(histogram > 0, torch.arange(256, device=images.device), -1).amax(dim=1, keepdim=True)
    last_count = histogram.gather(1, last_level)
    step = (histogram.sum(dim=1, keepdim=True) - last_count) // 255
    lut = (histogram.cumsum(dim=1) + step // 2) // step.clamp_min(1)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], dim=1).clamp(0, 255)
    equalised = lut.gather(1, values)
    result = torch.where(step > 0, equalised, values)
    return result.view(batch, channels, height, width).to(images.dtype)


def _sharpness(images: Tensor, factor: float) -> Tensor:
    """Blend with the image smoothed by [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 (border pixels kept)."""
    channels = images.shape[1]
    kernel = torch.ones(3, 3, dtype=images.dtype, device=images.device)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(channels, 1, 3, 3)
    smooth = _quantise(F.conv2d(images, kernel, groups=channels))
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(degenerate, images, factor)


def _affine(images: Tensor, matrices: Tensor) -> Tensor:
    """Per-row projective maps ``input (x, y) = matrices[b] @ (x, y, 1)`` (pixel coordinates of the
    output), nearest sampling, uncovered pixels gray."""
    batch, channels, height, width = images.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=images.dtype, device=images.device),
                            torch.arange(width, dtype=images.dtype, device=images.device), indexing="ij")
    points = torch.stack((xs, ys, torch.ones_like(xs)), dim=-1).view(1, -1, 3)
    source = points @ matrices.transpose(1, 2).to(images.dtype)  # [B, H W, 2] in pixels
    grid = torch.stack((source[..., 0] * 2 / max(width - 1, 1) - 1, source[..., 1] * 2 / max(height - 1, 1) - 1), -1)
    grid = grid.view(batch, height, width, 2)
    inside = (source[..., 0].round() >= 0) & (source[..., 0].round() <= width - 1) & \
             (source[..., 1].round() >= 0) & (source[..., 1].round() <= height - 1)
    sampled = F.grid_sample(images, grid, mode="nearest", padding_mode="border", align_corners=True)
    return torch.where(inside.view(batch, 1, height, width), sampled, torch.full_like(sampled, _GRAY))


def _geometric_matrices(name: str, amount: Tensor, height: int, width: int) -> Tensor:
    """[B, 2, 3] maps from output to input pixels, as the code's projective transforms."""
    one, zero = torch.ones_like(amount), torch.zeros_like(amount)
    if name == "rotate":  # counter-clockwise by `amount` degrees about the centre
        radians = amount * (math.pi / 180)
        cos, sin = radians.cos(), radians.sin()
        x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2
        y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2
        rows = ((cos, -sin, x_offset), (sin, cos, y_offset))
    elif name == "shear_x":
        rows = ((one, amount, zero), (zero, one, zero))
    elif name == "shear_y":
        rows = ((one, zero, zero), (amount, one, zero))
    elif name == "translate_x":  # the code's translate(image, [-pixels, 0]): input x = x + amount
        rows = ((one, zero, amount), (zero, one, zero))
    else:
        rows = ((one, zero, zero), (zero, one, amount))
    return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)


def apply_operation(name: str, images: Tensor, level: float, sign: Tensor, centre: Tensor,
                    config: RandAugmentConfig) -> Tensor:
    """One operation on a [B, C, H, W] batch of 8-bit values (floats in [0, 255]) at ``level`` =
    M / 10; ``sign`` [B] (+-1) for the signed ones, ``centre`` [B, 2] in [0, 1) for Cutout."""
    height, width = images.shape[-2:]
    if name == "auto_contrast":
        return _auto_contrast(images)
    if name == "equalize":
        return _equalize(images)
    if name == "invert":
        return 255 - images
    if name == "posterize":
        shift = 2.0 ** (8 - min(8, int(level * 4)))
        return torch.floor(images / shift) * shift
    if name == "solarize":
        return torch.where(images < int(level * 256), images, 255 - images)
    if name == "solarize_add":
        return torch.where(images < 128, (images + int(level * 110)).clamp(0, 255), images)
    factor = level * 1.8 + 0.1
    if name == "color":
        return _blend(_grayscale(images).round().expand_as(images), images, factor)
    if name == "contrast":
        return _blend(_grayscale(images).round().mean(dim=(-3, -2, -1), keepdim=True).expand_as(images), images, factor)
    if name == "brightness":
        return _blend(torch.zeros_like(images), images, factor)
    if name == "sharpness":
        return _sharpness(images, factor)
    if name == "cutout":
        pad = int(level * config.cutout_fraction * min(height, width))
        cy, cx = (centre[:, 0] * height).floor(), (centre[:, 1] * width).floor()
        rows = torch.arange(height, device=images.device, dtype=images.dtype).view(1, height, 1)
        columns = torch.arange(width, device=images.device, dtype=images.dtype).view(1, 1, width)
        inside = ((rows >= (cy - pad).view(-1, 1, 1)) & (rows < (cy + pad).view(-1, 1, 1))
                  & (columns >= (cx - pad).view(-1, 1, 1)) & (columns < (cx + pad).view(-1, 1, 1)))
        return images.masked_fill(inside[:, None], _GRAY)
    amounts = {"rotate": 30 * level, "shear_x": 0.3 * level, "shear_y": 0.3 * level,
               "translate_x": level * config.translate_fraction * width,
               "translate_y": level * config.translate_fraction * height}
    if name not in amounts:
        raise ValueError(f"unknown RandAugment operation {name!r}; known: {list(OPERATIONS)}")
    return _affine(images, _geometric_matrices(name, sign.to(images.dtype) * amounts[name], height, width))


def _on_rows(images: Tensor, rows: Tensor, operation: Callable[..., Tensor], *per_row: Tensor) -> Tensor:
    if not bool(rows.any()):
        return images
    out = images.clone()
    out[rows] = operation(images[rows], *(values[rows] for values in per_row))
    return out


def randaugment(images: Tensor, config: RandAugmentConfig, generator: torch.Generator) -> Tensor:
    """RandAugment on a [B, C, H, W] float batch in [0, 1]: ``num_ops`` layers, each sample its own
    operation per layer (and its own sign and Cutout centre), all from ``generator`` (a fixed number
    of draws per layer). Returns floats in [0, 1] on the 8-bit grid."""
    batch, device = images.shape[0], images.device
    level = config.magnitude / 10
    values = _quantise(images * 255)
    for _ in range(config.num_ops):
        choice = draws.randint(generator, len(OPERATIONS), (batch,), device)
        sign = torch.where(draws.bernoulli(generator, 0.5, (batch,), device), -1.0, 1.0)
        centre = draws.uniform(generator, (batch, 2), device)
        for index, name in enumerate(OPERATIONS):
            values = _on_rows(values, choice == index,
                              lambda x, s, c, name=name: _quantise(apply_operation(name, x, level, s, c, config)),
                              sign, centre)
    return values / 255
