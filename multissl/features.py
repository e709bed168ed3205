"""The one contract between encoders and everything that reads them (objectives, probes, hub).

Every encoder, whatever its modality, returns :class:`Features`. Objectives read only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Features", "Encoder", "masked_mean"]


@dataclass
class Features:
    """What an encoder call returns.

    pooled:        [B, D] the representation probes use (CLS token or masked mean, per config).
    sequence:      [B, T, D] frames, patches or tokens, where the encoder has them (CPC, masked
                   prediction, frame-level probes); None for encoders without a sequence.
    mask:          [B, T] bool, True where ``sequence`` holds real content (not padding).
    hidden_states: every layer's output, each [B, T, D] (or [B, D] for convnets pooled per stage),
                   first the embeddings; filled only when the encoder was asked for them
                   (layer-weighted probes).
    """

    pooled: Tensor
    sequence: Tensor | None = None
    mask: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None

    def __post_init__(self) -> None:
        if self.pooled.dim() != 2:
            raise ValueError(f"Features.pooled must be [B, D], got shape {tuple(self.pooled.shape)}")
        if self.sequence is not None and self.sequence.dim() != 3:
            raise ValueError(f"Features.sequence must be [B, T, D], got shape {tuple(self.sequence.shape)}")
        if self.mask is not None and self.sequence is not None and self.mask.shape != self.sequence.shape[:2]:
            raise ValueError(
                f"Features.mask {tuple(self.mask.shape)} must match sequence[:2] {tuple(self.sequence.shape[:2])}"
            )


def masked_mean(sequence: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over valid positions: sequence [B, T, D], mask [B, T] bool (None: all valid) -> [B, D]."""
    if mask is None:
        return sequence.mean(dim=1)
    weights = mask.to(sequence.dtype).unsqueeze(-1)
    return (sequence * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class Encoder(nn.Module):
    """A thin adapter around one Hugging Face ``PreTrainedModel`` that returns :class:`Features`.

    Domains subclass it. The wrapped ``model`` is what the Hub receives (``save_pretrained``), so
    a pushed encoder loads with ``transformers.AutoModel`` and no multissl installed.

    Attributes:
        model:     the ``transformers.PreTrainedModel``.
        dim:       width D of ``Features.pooled``.
        processor: the matching image processor / feature extractor / tokenizer, or None.
        pooling:   "cls" or "mean" (how ``pooled`` is made from ``sequence``).
        joint_projection: [P, D] or None: a cross-modal objective's linear map (no bias) from
                   ``pooled`` into the space it shares with another domain's encoder (CLIP).
                   Retrieval and zero-shot probes compare embeddings through it; it is saved
                   beside the model (``multissl.hub``), outside the ``transformers`` weights.
    """

    model: nn.Module
    dim: int
    processor: Any = None
    pooling: str = "mean"
    joint_projection: Tensor | None = None

    def to_joint_space(self, pooled: Tensor) -> Tensor:
        """``pooled`` [N, D] -> [N, P] through ``joint_projection`` when set; else unchanged."""
        if self.joint_projection is None:
            return pooled
        weight = self.joint_projection.to(device=pooled.device, dtype=pooled.dtype)
        if weight.shape[1] != pooled.shape[-1]:
            raise ValueError(f"joint projection expects {weight.shape[1]}-d features, got {pooled.shape[-1]}-d")
        return pooled @ weight.T

    def forward(self, **inputs: Tensor) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def save_pretrained(self, folder: str, **kwargs: Any) -> None:
        """Save the stock model (safetensors) and its processor into ``folder``."""
        self.model.save_pretrained(folder, safe_serialization=True, **kwargs)
        if self.processor is not None:
            self.processor.save_pretrained(folder)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
