"""Fixed sine-cosine position codes, shared by the objectives' own small transformers (the MAE
decoder, CPC's causal context network).

Vaswani et al. 2017 (section 3.5) in one dimension; MAE (He et al. 2022, reference code
``get_2d_sincos_pos_embed``) in two: half the channels code the row, half the column. Fixed codes
have no parameters, so they never need resizing or saving, and work for any sequence length or
patch grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sincos_1d", "sincos_2d"]


def _sincos(positions: Tensor, dim: int) -> Tensor:
    """positions [N] (float) -> [N, dim]: sin on the first half of the channels, cos on the second,
    frequencies 1 / 10000^(i / (dim / 2))."""
    if dim % 2:
        raise ValueError(f"sine-cosine codes need an even width, got {dim}")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2))
    angles = positions.double()[:, None] * frequencies[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_1d(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Codes of positions 0..length-1: [length, dim]."""
    return _sincos(torch.arange(length, device=device), dim)


def sincos_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Codes of a height x width grid in row-major order (MAE's patch order): [height * width, dim],
    the first dim / 2 channels coding the row, the rest the column."""
    if dim % 4:
        raise ValueError(f"2-D sine-cosine codes need a width divisible by 4, got {dim}")
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return torch.cat([_sincos(rows, dim // 2), _sincos(cols, dim // 2)], dim=1)
