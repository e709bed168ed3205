"""Span masks over encoder frames for masked prediction (wav2vec 2.0, HuBERT, data2vec style)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["span_mask", "uniform"]


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """U[0, 1) draws from ``generator`` only (on its own device), moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def span_mask(valid_frames: Tensor, num_frames: int, mask_ratio: float, span: int, generator: torch.Generator) -> Tensor:
    """Bool[B, T] masking ``round(mask_ratio * valid_frames[b])`` frames of row b in spans.

    Frames are masked in non-overlapping spans of ``span`` frames (the last span of a row is shorter
    when the count is not a multiple of ``span``), placed uniformly at random inside the row's valid
    frames ``[0, valid_frames[b])``; at least one frame of every non-empty row is masked.

    Why not wav2vec 2.0's sampler: it draws span starts with probability ``mask_time_prob`` and lets
    spans overlap, so the masked fraction varies per clip (``mask_time_prob=0.065``, length 10 masks
    about 49% in expectation). Here ``mask_ratio`` is the fraction actually masked, as HuBERT and
    data2vec report it, and it holds for every row.

    How (stars and bars, vectorised): a row with ``m`` masked frames in ``k`` spans and ``u``
    unmasked frames is an arrangement of ``k`` span tokens among ``u + k`` slots; choosing the ``k``
    slots uniformly (the ``k`` smallest of ``u + k`` uniform scores) and expanding each chosen slot
    into its span gives every arrangement the same probability.
    """
    valid_frames = valid_frames.long().clamp(0, num_frames)
    device = valid_frames.device
    masked = torch.round(valid_frames.double() * mask_ratio).long().clamp_min(1).minimum(valid_frames)
    spans = torch.div(masked + span - 1, span, rounding_mode="floor")
    slots = valid_frames - masked + spans  # <= valid_frames
    position = torch.arange(num_frames, device=device)

    scores = uniform((valid_frames.shape[0], num_frames), generator, device)
    scores = scores.masked_fill(position >= slots[:, None], 2.0)  # slots past the row's end never win
    rank = scores.argsort(dim=1).argsort(dim=1)
    chosen = rank < spans[:, None]  # [B, T] over slots

    # Chosen slot j holding the n-th span starts at frame j + n * (span - 1): the n earlier spans
    # are full length, so each pushes later slots by span - 1 frames.
    order = chosen.long().cumsum(dim=1) - 1
    start = position + order * (span - 1)
    last_length = masked - (spans - 1) * span
    length = torch.where(order == spans[:, None] - 1, last_length[:, None], torch.full_like(order, span))
    # Paint spans with a difference array: +1 at each start, -1 one past each end.
    edges = torch.zeros(valid_frames.shape[0], num_frames + 1, dtype=torch.long, device=device)
    edges.scatter_add_(1, torch.where(chosen, start, num_frames), chosen.long())
    edges.scatter_add_(1, torch.where(chosen, start + length, num_frames), -chosen.long())
    return edges.cumsum(dim=1)[:, :num_frames] > 0
