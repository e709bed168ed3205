"""A narrow transformer that predicts representations at positions it is only told the place of.

I-JEPA's predictor (Assran et al. 2023, section 3 and ``VisionTransformerPredictor`` of the reference
``src/models/vision_transformer.py``): the context encoder's tokens are projected to the predictor's
width and given the fixed 2-D sine-cosine code of their patch; one learned mask token, plus the code
of each position to predict, stands for every target; the transformer runs over context and mask
tokens together, and the outputs at the mask tokens are normalised and projected back to the
encoder's width. MAE's decoder (He et al. 2022) is the same computation with the masked patches as
the queries and pixels as the output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multissl.modules.positions import sincos_2d

__all__ = ["MaskTokenPredictor", "pre_norm_transformer"]


def pre_norm_transformer(dim: int, depth: int, heads: int) -> nn.TransformerEncoder:
    """``depth`` pre-norm ViT blocks of width ``dim`` (MLP 4x, GELU, no dropout): the body of MAE's
    decoder and of I-JEPA's predictor, as in both reference codes."""
    layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class MaskTokenPredictor(nn.Module):
    """``forward(context, context_positions, query_positions, grid)`` -> predictions at the queries.

    context [B, K, in_dim]: tokens of K known positions; context_positions Long[B, K] and
    query_positions Long[B, Q]: row-major indices into the ``grid`` (rows, columns) of patches.
    Returns [B, Q, out_dim]. Pre-norm blocks (GELU MLP of 4x the width, no dropout), a final layer
    norm and a linear projection, as the reference; the mask token starts from a truncated normal
    of std 0.02. I-JEPA's ViT-H predictor is 12 blocks of width 384 (``pred_depth``, ``pred_emb_dim``).
    """

    def __init__(self, in_dim: int, out_dim: int, dim: int = 384, depth: int = 12, heads: int = 12) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"predictor width {dim} is not divisible by its {heads} heads")
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = pre_norm_transformer(dim, depth, heads)
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, out_dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: Tensor, context_positions: Tensor, query_positions: Tensor,
                grid: tuple[int, int]) -> Tensor:
        if context_positions.shape != context.shape[:2] or query_positions.shape[0] != context.shape[0]:
            raise ValueError(f"positions {tuple(context_positions.shape)} / {tuple(query_positions.shape)} do not fit "
                             f"the context {tuple(context.shape)}")
        tokens = self.embed(context)
        codes = sincos_2d(*grid, tokens.shape[-1], device=tokens.device).to(tokens.dtype)
        tokens = tokens + codes[context_positions]
        queries = self.mask_token.to(tokens.dtype) + codes[query_positions]
        out = self.blocks(torch.cat([tokens, queries], dim=1))[:, context.shape[1]:]
        return self.project(self.norm(out))
