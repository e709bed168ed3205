"""Masked frame prediction for audio, wav2vec 2.0 style (Baevski et al. 2020, arXiv:2006.11477).

    spans of encoder frames are masked (the audio ``masked`` view; the encoder replaces them with
        its learned mask embedding through ``mask_time_indices``)
    the encoder's output at each masked frame predicts that frame's clean content, either
    "regression" (default): a linear head to the clean log-mel frame,
        masked_reconstruction(head(c), targets, mask): MSE over the masked frames (as MAE-AST,
        Baade et al. 2022, and the MAE recipe);
    "contrastive": wav2vec 2.0's task (section 3.2, eq. 3): c_t is projected, the clean frames are
        projected into the same space (q_t, a learned linear map of the clean log-mel frame), and
        c_t must pick q_t out of the q of the other masked frames of the same utterance, by cosine
        similarity / ``temperature`` (0.1, the paper's kappa).

Shapes: encoder sequence [B, T, D], mask Bool[B, T] (True = masked, only valid frames),
targets [B, T, F] (clean log-mel averaged onto the encoder's frames, normalised per clip).

Why regression is the default: its targets are fixed data, so it has no trivial solution and
needs nothing else. wav2vec 2.0 contrasts against *quantised* features of its own conv encoder and
needs the Gumbel quantiser plus a codebook diversity penalty to keep those targets from
collapsing; with continuous targets, a learned projection of the clean log-mel frames (the
paper's continuous-target ablation, table 4, slightly weaker than quantised targets), the
contrastive variant is well posed and kept as the option. Its
distractors are all other masked frames of the utterance, where the paper samples 100 of them: no
sampling randomness (exact under DDP), at a cost of [T, T] scores per utterance (a 16 s clip at 50
frames/s: 800 x 800), small beside the encoder (:func:`multissl.losses.masked_frame_contrastive`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from multissl.features import Encoder
from multissl.losses import masked_frame_contrastive, masked_reconstruction
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = ["MaskedFramePrediction"]


class MaskedFramePrediction(Objective):
    name = "masked_frames"

    def __init__(
        self,
        encoder: Encoder,
        *,
        target: str = "regression",
        target_dim: int = 80,
        projection_dim: int = 256,
        temperature: float = 0.1,
        mask_ratio: float | None = None,
        mask_span: int | None = None,
    ) -> None:
        """target: "regression" or "contrastive" (module doc); target_dim: values per target frame
        (the audio domain's n_mels; n_mfcc with the mfcc front end); projection_dim: the contrastive
        space (wav2vec 2.0's final_dim, 256 for BASE); temperature: its kappa; mask_ratio /
        mask_span: the masked view's options (None: the domain's, 50% in 10-frame spans)."""
        super().__init__()
        if target not in ("regression", "contrastive"):
            raise ValueError(f"target must be 'regression' or 'contrastive', got {target!r}")
        self.encoder = encoder
        self.target = target
        self.target_dim = target_dim
        self.temperature = temperature
        self.view_options = {k: v for k, v in (("mask_ratio", mask_ratio), ("mask_span", mask_span)) if v is not None}
        if target == "regression":
            self.head = nn.Linear(encoder.dim, target_dim)
        else:
            self.head = nn.Linear(encoder.dim, projection_dim)
            self.target_projection = nn.Linear(target_dim, projection_dim)

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("masked", dict(self.view_options)),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        mask, targets = views["mask"], views["targets"]
        if targets.shape[-1] != self.target_dim:
            raise ValueError(
                f"masked frame targets have {targets.shape[-1]} values per frame, the objective predicts "
                f"target_dim={self.target_dim}: set the objective option target_dim to the audio domain's n_mels "
                "(n_mfcc with the mfcc front end)"
            )
        sequence = self.encoder(**views["inputs"]).sequence
        if sequence.shape[:2] != mask.shape:
            raise ValueError(f"encoder frames {tuple(sequence.shape[:2])} do not match the mask {tuple(mask.shape)}")
        if self.target == "regression":
            loss = masked_reconstruction(self.head(sequence), targets, mask)
        else:
            quantized = self.target_projection(targets.to(sequence.dtype))
            loss = masked_frame_contrastive(self.head(sequence), quantized, mask, self.temperature)
        return ObjectiveOutput(loss=loss, logs={"masked_fraction": mask.float().mean().detach()})
