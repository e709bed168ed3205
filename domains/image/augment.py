"""Batched SimCLR-family augmentation, random parameters drawn per sample.

One view of a batch ``[B, C, H, W]`` (float, [0, 1]) is made in the order of SimCLR (Chen et al.
2020, appendix A) and BYOL (Grill et al. 2020, table 6):

1. random resized crop (scale, ratio per sample) and horizontal flip, in one ``grid_sample``;
2. colour jitter with probability p: brightness, contrast, saturation and hue factors drawn per
   sample and applied in a random order per sample (as torchvision's ``ColorJitter`` and SimCLR's
   ``color_jitter(..., random_order=True)``), each followed by a clamp to [0, 1];
3. random grayscale; 4. Gaussian blur with a per-sample sigma (separable, reflect padding, kernel
   10% of the view side, odd); 5. solarize (BYOL's second view).

:func:`draw_augmentation` draws every parameter (a fixed number of draws whatever the
probabilities, so streams stay aligned); :func:`apply_augmentation` applies them. The colour
kernels take per-sample factors ``[B]`` and match ``torchvision.transforms.v2.functional`` applied
sample by sample (up to BT.601 luma 0.299 where torchvision uses 0.2989).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import draws
from .color import rgb_to_grayscale, shift_hue
from .config import AugmentConfig
from .geometry import crop_resize, sample_crop_boxes

__all__ = [
    "ViewRecipe",
    "AugmentationParameters",
    "draw_augmentation",
    "apply_augmentation",
    "augment",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "color_jitter",
    "gaussian_kernels",
    "gaussian_blur",
    "solarize",
    "normalize",
    "blur_kernel_size",
]


@dataclass(frozen=True)
class ViewRecipe:
    """One view's augmentation: its side and the domain's :class:`AugmentConfig` as this view uses
    it (BYOL's second view changes the blur and solarize probabilities, multi-crop's locals the crop
    scale). Jitter factors are ``brightness * jitter_strength`` and so on."""

    size: int
    settings: AugmentConfig = field(default_factory=AugmentConfig)

    def jitter_ranges(self) -> list[tuple[float, float]]:
        """(low, high) of the brightness, contrast and saturation factors and of the hue shift."""
        s = self.settings
        strengths = [s.brightness * s.jitter_strength, s.contrast * s.jitter_strength,
                     s.saturation * s.jitter_strength]
        hue = s.hue * s.jitter_strength
        return [(max(0.0, 1 - v), 1 + v) for v in strengths] + [(-hue, hue)]


@dataclass
class AugmentationParameters:
    """Everything drawn for one view of a batch (all on the batch's device).

    boxes [B, 4] (left, top, width, height) px; flip [B]; jitter [B] (applied or not);
    jitter_factors [B, 4] (brightness, contrast, saturation factors; hue shift in turns);
    jitter_order [B, 4] (a permutation of 0..3 per row); grayscale [B]; blur [B]; blur_sigma [B];
    solarize [B].
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    jitter_factors: Tensor
    jitter_order: Tensor
    grayscale: Tensor
    blur: Tensor
    blur_sigma: Tensor
    solarize: Tensor


def draw_augmentation(batch: int, height: int, width: int, recipe: ViewRecipe, generator: torch.Generator,
                      device: torch.device) -> AugmentationParameters:
    """Draw one view's parameters for ``batch`` rows of ``height x width`` images."""
    s = recipe.settings
    boxes = sample_crop_boxes(batch, height, width, s.crop_scale, s.crop_ratio, generator, device)
    flip = draws.bernoulli(generator, s.flip_probability, (batch,), device)
    jitter = draws.bernoulli(generator, s.jitter_probability, (batch,), device)
    factor_ranges = recipe.jitter_ranges()
    unit = draws.uniform(generator, (batch, 4), device)
    low = torch.tensor([r[0] for r in factor_ranges], device=device)
    high = torch.tensor([r[1] for r in factor_ranges], device=device)
    jitter_factors = low + unit * (high - low)
    jitter_order = draws.random_permutations(generator, batch, 4, device)
    grayscale = draws.bernoulli(generator, s.grayscale_probability, (batch,), device)
    blur = draws.bernoulli(generator, s.blur_probability, (batch,), device)
    blur_sigma = draws.uniform(generator, (batch,), device, *s.blur_sigma)
    solarize = draws.bernoulli(generator, s.solarize_probability, (batch,), device)
    return AugmentationParameters(boxes, flip, jitter, jitter_factors, jitter_order, grayscale, blur, blur_sigma,
                                  solarize)


def apply_augmentation(images: Tensor, parameters: AugmentationParameters, recipe: ViewRecipe) -> Tensor:
    """[B, C, H, W] float in [0, 1] -> [B, C, size, size] float in [0, 1]."""
    views = crop_resize(images, parameters.boxes, recipe.size, parameters.flip)
    views = color_jitter(views, parameters.jitter_factors, parameters.jitter_order, parameters.jitter)
    if views.shape[1] == 3:
        gray = rgb_to_grayscale(views).expand_as(views)
        views = torch.where(parameters.grayscale.view(-1, 1, 1, 1), gray, views)
    kernel_size = blur_kernel_size(recipe.size, recipe.settings.blur_kernel_fraction)
    views = _apply_to_rows(views, parameters.blur, lambda x, sigma: gaussian_blur(x, sigma, kernel_size),
                           parameters.blur_sigma)
    return _apply_to_rows(views, parameters.solarize, lambda x: solarize(x, recipe.settings.solarize_threshold))


def augment(images: Tensor, recipe: ViewRecipe, generator: torch.Generator) -> Tensor:
    """Draw and apply one augmented view of a float batch in [0, 1]."""
    batch, _, height, width = images.shape
    parameters = draw_augmentation(batch, height, width, recipe, generator, images.device)
    return apply_augmentation(images, parameters, recipe)


def _apply_to_rows(images: Tensor, rows: Tensor, operation: Callable[..., Tensor], *per_row: Tensor) -> Tensor:
    """``operation`` on the selected rows only, so each sample pays only for the operations it gets.

    Writes into ``images`` (callers pass a tensor they own) and returns it.
    """
    if not bool(rows.any()):
        return images
    if bool(rows.all()):
        return operation(images, *per_row)
    images[rows] = operation(images[rows], *(values[rows] for values in per_row))
    return images


def _per_row(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Scale intensities by ``factor[b]`` (0: black, 1: unchanged), clamp to [0, 1]."""
    return (images * _per_row(factor)).clamp(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale version: ``f x + (1 - f) mean``, clamped."""
    mean = rgb_to_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    factor = _per_row(factor)
    return (factor * images + (1 - factor) * mean).clamp(0, 1)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image: ``f x + (1 - f) gray`` (0: grayscale), clamped; no-op on 1 channel."""
    if images.shape[-3] == 1:
        return images
    factor = _per_row(factor)
    return (factor * images + (1 - factor) * rgb_to_grayscale(images)).clamp(0, 1)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue by ``shift[b]`` turns (in [-0.5, 0.5]); no-op on 1 channel."""
    return images if images.shape[-3] == 1 else shift_hue(images, shift)


_JITTER_OPERATIONS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor, apply: Tensor) -> Tensor:
    """Colour jitter with per-sample factors [B, 4] and per-sample order [B, 4] on rows where ``apply``.

    Stage k applies, to each selected row, the operation ``order[b, k]`` (0 brightness, 1 contrast,
    2 saturation, 3 hue) with its factor ``factors[b, order[b, k]]``.
    """
    for stage in range(len(_JITTER_OPERATIONS)):
        for index, operation in enumerate(_JITTER_OPERATIONS):
            rows = apply & (order[:, stage] == index)
            images = _apply_to_rows(images, rows, operation, factors[:, index])
    return images


def blur_kernel_size(side: int, fraction: float = 0.1) -> int:
    """SimCLR's kernel: ``fraction`` of the side, made odd (>= 3): 3 for 32 px, 23 for 224 px."""
    size = max(3, int(side * fraction))
    return size if size % 2 else size + 1


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Float[B, K] normalised 1-D Gaussian kernels, one per sigma, centred on the middle tap."""
    taps = torch.arange(kernel_size, dtype=sigma.dtype, device=sigma.device) - (kernel_size - 1) / 2
    weights = torch.exp(-0.5 * (taps / sigma.unsqueeze(1)) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with sigma ``sigma[b]`` per sample, reflect padding.

    The batch is folded into the channels of one depthwise convolution (groups = B * C), so every
    sample gets its own kernel in two ``conv2d`` calls.
    """
    batch, channels, height, width = images.shape
    radius = kernel_size // 2
    if radius >= min(height, width):
        raise ValueError(f"blur kernel {kernel_size} is too large for {height}x{width} images (reflect padding)")
    kernels = gaussian_kernels(sigma.to(images.dtype), kernel_size).repeat_interleave(channels, dim=0)
    folded = images.reshape(1, batch * channels, height, width)
    folded = F.pad(folded, (radius, radius, radius, radius), mode="reflect")
    folded = F.conv2d(folded, kernels.view(-1, 1, 1, kernel_size), groups=batch * channels)
    folded = F.conv2d(folded, kernels.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return folded.view(batch, channels, height, width)


def solarize(images: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert pixels at or above ``threshold``: ``1 - x`` (torchvision's ``solarize`` on floats)."""
    return torch.where(images >= threshold, 1 - images, images)


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Per-channel ``(x - mean) / std`` of a [B, C, H, W] float batch in [0, 1]."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t
