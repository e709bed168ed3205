"""Colour-space conversions on batched float images ``[B, 3, H, W]`` with values in [0, 1].

Pure tensor functions (differentiable, any device). RGB means gamma-encoded sRGB throughout.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["rgb_to_grayscale", "shift_hue", "rgb_to_lab", "lab_to_rgb", "ab_bin_centres", "soft_encode", "AB_BIN_SIZE",
           "AB_LIMIT", "NUM_AB_BINS"]

# ITU-R BT.601 luma, as Pillow's convert("L"); torchvision uses 0.2989 for red.
_LUMA = (0.299, 0.587, 0.114)

# sRGB (D65) linear RGB -> CIE XYZ, IEC 61966-2-1; its rows sum to the D65 white point below.
_RGB_TO_XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    dtype=torch.float64,
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_LAB_EPSILON = (6 / 29) ** 3  # CIE 1976: below this f(t) is linear


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """[B, 3, H, W] -> [B, 1, H, W] luma (BT.601); a 1-channel input is returned as is."""
    if images.shape[-3] == 1:
        return images
    red, green, blue = images.unbind(dim=-3)
    return (_LUMA[0] * red + _LUMA[1] * green + _LUMA[2] * blue).unsqueeze(-3)


def shift_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of [B, 3, H, W] RGB images by ``shift[b]`` turns (torchvision's ``adjust_hue``).

    A hue rotation keeps each pixel's maximum and minimum channel (HSV value and chroma), so only
    the hue is computed, in sixths of a turn, and the channels are rebuilt with HSV's closed form:
    channel n in {R: 5, G: 3, B: 1} is ``max - chroma clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6``. Gray pixels (chroma 0) stay as they are.
    """
    red, green, blue = images.unbind(dim=-3)
    maximum, argmax = images.max(dim=-3)
    chroma = maximum - images.min(dim=-3).values
    safe_chroma = chroma.clamp_min(1e-12)
    # ties between channels give the same hue from either formula, so argmax's choice does not matter
    sixths = torch.where(
        argmax == 0, (green - blue) / safe_chroma,
        torch.where(argmax == 1, (blue - red) / safe_chroma + 2, (red - green) / safe_chroma + 4),
    )
    sixths = sixths + 6 * shift.view(-1, 1, 1).to(images.dtype)
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device).view(3, 1, 1)
    k = (offsets + sixths.unsqueeze(-3)) % 6
    ramp = torch.minimum(k, 4 - k).clamp_(0, 1)
    return maximum.unsqueeze(-3) - chroma.unsqueeze(-3) * ramp


def _srgb_to_linear(images: Tensor) -> Tensor:
    return torch.where(images <= 0.04045, images / 12.92, ((images.clamp_min(0) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(images: Tensor) -> Tensor:
    return torch.where(images <= 0.0031308, 12.92 * images, 1.055 * images.clamp_min(0) ** (1 / 2.4) - 0.055)


def _white(images: Tensor) -> Tensor:
    return torch.tensor(_WHITE_D65, dtype=images.dtype, device=images.device).view(3, 1, 1)


def rgb_to_lab(images: Tensor) -> Tensor:
    """[B, 3, H, W] sRGB in [0, 1] -> CIE L*a*b* (D65): L in [0, 100], a and b roughly [-110, 110].

    sRGB gamma is undone, linear RGB goes to XYZ (IEC 61966-2-1 matrix), XYZ is divided by the D65
    white and mapped with the CIE 1976 cube-root function.
    """
    matrix = _RGB_TO_XYZ.to(dtype=images.dtype, device=images.device)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, _srgb_to_linear(images)) / _white(images)
    f = torch.where(xyz > _LAB_EPSILON, xyz.clamp_min(_LAB_EPSILON) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(dim=-3)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=-3)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_lab` (not clamped: out-of-gamut colours leave [0, 1])."""
    lightness, a, b = lab.unbind(dim=-3)
    fy = (lightness + 16) / 116
    f = torch.stack((fy + a / 500, fy, fy - b / 200), dim=-3)
    xyz = torch.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _white(lab)
    matrix = torch.linalg.inv(_RGB_TO_XYZ).to(dtype=lab.dtype, device=lab.device)
    return _linear_to_srgb(torch.einsum("ij,...jhw->...ihw", matrix, xyz))


# ----------------------------------------------------------------------------------------------
# ab quantisation for colorization as classification (Zhang et al. 2016)

AB_BIN_SIZE = 10.0  #: side of a bin in the ab plane (Zhang et al.: 10)
AB_LIMIT = 110.0  #: bin centres run from -AB_LIMIT to AB_LIMIT on both axes
_GRID = int(round(2 * AB_LIMIT / AB_BIN_SIZE)) + 1  # 23 centres per axis
NUM_AB_BINS = _GRID * _GRID  #: colour classes of the colorization view (23 x 23)


def ab_bin_centres(device: torch.device | None = None) -> Tensor:
    """Float[Q, 2]: the (a, b) centre of every bin, a-major: bin ``i * 23 + j`` is (a_i, b_j)."""
    axis = torch.arange(_GRID, dtype=torch.float32, device=device) * AB_BIN_SIZE - AB_LIMIT
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)


def soft_encode(ab: Tensor, neighbours: int = 5, sigma: float = 5.0) -> tuple[Tensor, Tensor]:
    """Zhang et al.'s soft encoding of ab values [B, 2, H, W] (Zhang, Isola, Efros 2016, "Colorful
    Image Colorization", section 2.1): the targets of the ``corrupted`` view's colorization task.

    Returns (bins Long[B, k, H, W], weights [B, k, H, W]): the ``k = neighbours`` nearest bin
    centres of each pixel, nearest first, and Gaussian weights ``exp(-d^2 / 2 sigma^2)`` normalised
    to sum to 1 over them. ab is first clamped onto the grid's extent (no sRGB colour lies outside
    it). The k nearest centres (k <= 5) then lie within two steps of the nearest one: a centre three
    steps away is >= 25 off on that axis, while even at a corner of the grid five centres of the
    5 x 5 block lie within 20. So 25 candidates per pixel are scored, never all Q.
    """
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"ab must be [B, 2, H, W], got {tuple(ab.shape)}")
    if not 1 <= neighbours <= 5:
        raise ValueError(f"neighbours must be in [1, 5] (the 5x5 block argument below), got {neighbours}")
    ab = ab.float().clamp(-AB_LIMIT, AB_LIMIT)
    nearest = ((ab + AB_LIMIT) / AB_BIN_SIZE).round().long()  # [B, 2, H, W]
    steps = torch.arange(-2, 3, device=ab.device)
    index = nearest[:, :, None] + steps[:, None, None]  # [B, 2, 5, H, W]: candidate a / b grid indices
    inside = (index >= 0) & (index < _GRID)
    index = index.clamp(0, _GRID - 1)  # candidates off the grid (near its rim) are never chosen
    axis_squared = (ab[:, :, None] - (index.float() * AB_BIN_SIZE - AB_LIMIT)).square()
    axis_squared = axis_squared.masked_fill(~inside, float("inf"))
    squared = (axis_squared[:, 0, :, None] + axis_squared[:, 1, None, :]).flatten(1, 2)  # [B, 25, H, W]
    squared, chosen = squared.topk(neighbours, dim=1, largest=False)  # sorted: nearest first
    bins = index[:, 0].gather(1, chosen // 5) * _GRID + index[:, 1].gather(1, chosen % 5)
    weights = torch.softmax(-squared / (2 * sigma**2), dim=1)  # = normalised Gaussian weights
    return bins, weights
