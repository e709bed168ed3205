"""The one contract between encoders and everything that reads them (objectives, probes, hub).

Every encoder, whatever its modality, returns :class:`Features`. Objectives read only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Features", "Encoder", "InputGeometry", "masked_mean", "encode_views"]


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


@dataclass(frozen=True)
class InputGeometry:
    """The fixed shape of what a 2-D (image) encoder reads and returns, set by the domain that
    builds it. Objectives that build a decoder at construction (MAE, autoencoders) read this, never
    a processor or a Hugging Face config.

    channels:    C of the inputs the domain makes.
    size:        (H, W) of those inputs.
    grid:        (rows, columns) of ``Features.sequence`` at that size (row-major positions).
    patch_size:  side of the input patch behind each position for a patch encoder (ViT: it can run
                 on visible patches only, MAE); None for encoders whose positions overlap (convnets).
    """

    channels: int
    size: tuple[int, int]
    grid: tuple[int, int]
    patch_size: int | None = None


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
        geometry:  :class:`InputGeometry` of 2-D encoders (set by the domain), else None.
        joint_projection: [P, D] or None: a cross-modal objective's linear map (no bias) from
                   ``pooled`` into the space it shares with another domain's encoder (CLIP).
                   Retrieval and zero-shot probes compare embeddings through it; it is saved
                   beside the model (``multissl.hub``), outside the ``transformers`` weights.
    """

    model: nn.Module
    dim: int
    processor: Any = None
    pooling: str = "mean"
    geometry: InputGeometry | None = None
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


def _signature(inputs: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v.shape[1:]) if hasattr(v, "shape") else None) for k, v in inputs.items()))


def encode_views(encoder: nn.Module, views: list[dict[str, Any]]) -> list[Features]:
    """Encode several views of one batch with as few encoder calls as possible.

    Views whose inputs have equal shapes (beyond the batch dimension) are concatenated along the
    batch and encoded in one call, as SimCLR's reference implementation does: one pass is faster,
    and batch norm then normalises all views together, so no view carries its own batch
    statistics as a shortcut. Multi-crop's smaller local views form their own call.
    Returns one Features per view, in order.
    """
    groups: dict[tuple, list[int]] = {}
    for index, inputs in enumerate(views):
        groups.setdefault(_signature(inputs), []).append(index)
    out: list[Features | None] = [None] * len(views)
    for indices in groups.values():
        rows = [next(iter(views[i].values())).shape[0] for i in indices]
        merged = {key: torch.cat([views[i][key] for i in indices]) for key in views[indices[0]]}
        features = encoder(**merged)
        for i, part in zip(indices, _split(features, rows)):
            out[i] = part
    return out  # type: ignore[return-value]


def _split(features: Features, rows: list[int]) -> list[Features]:
    def chunks(tensor):
        return tensor.split(rows) if tensor is not None else [None] * len(rows)

    hidden = (
        list(zip(*[h.split(rows) for h in features.hidden_states])) if features.hidden_states is not None
        else [None] * len(rows)
    )
    return [
        Features(pooled=p, sequence=s, mask=m, hidden_states=tuple(h) if h is not None else None)
        for p, s, m, h in zip(chunks(features.pooled), chunks(features.sequence), chunks(features.mask), hidden)
    ]
