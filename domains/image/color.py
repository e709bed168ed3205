"""Colour-space conversions on batched float images ``[B, 3, H, W]`` with values in [0, 1].

Pure tensor functions (differentiable, any device). RGB means gamma-encoded sRGB throughout.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rgb_to_grayscale", "shift_hue", "rgb_to_lab", "lab_to_rgb"]

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
