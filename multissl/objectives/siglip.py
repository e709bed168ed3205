"""SigLIP: sigmoid loss for language-image pre-training, between any two domains.

Zhai, Mustafa, Kolesnikov, Beyer 2023, "Sigmoid Loss for Language Image Pre-Training"
(arXiv:2303.15343, Algorithm 1). CLIP's two towers (:class:`multissl.objectives.clip.CLIP`: one
domain's encoder per side, linear projections into a joint space, L2-normalised) with CLIP's
softmax replaced by an independent binary classification of every pair of the global batch:

    z_ij = t * cos(z_a_i, z_b_j) + b          t = exp(t'), learnable; b learnable
    loss = -1/N sum_i sum_j log sigmoid(+-z_ij)     + on the N matching pairs, - on the N^2 - N others

(:func:`multissl.losses.siglip_loss`). Initialisation as the paper: t' = log 10, b = -10, so the
loss starts near its value for a batch of all-negative pairs and the rare positives do not swamp
it. As the official code (big_vision's two-tower model), t is not clipped (``max_logit_scale``
None); set it to 100 to clip as open_clip does. Nothing is specific to images and text.

Under N processes each rank scores its rows against the global batch's other side (gathered with
gradient, as CLIP here, where the paper's chunked implementation passes chunks between
neighbouring devices); the loss is computed in ``block_size`` x ``block_size`` tiles recomputed in
the backward pass, so memory grows with the global batch, not with its square. ``chunk_size``
encodes through GradCache, as CLIP. The learned projections become the encoders'
``joint_projection`` (retrieval and zero-shot probes), and zero-shot classification works as
for CLIP (:func:`multissl.probes.retrieval.joint_zero_shot_classifier`): ranking by cosine is
ranking by z, since t > 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from multissl.features import Encoder
from multissl.losses import siglip_loss
from multissl.objectives.base import ObjectiveOutput
from multissl.objectives.clip import CLIP
from multissl.options import PositiveFloat, PositiveInt

__all__ = ["SigLIP"]


class SigLIP(CLIP):
    name = "siglip"

    def __init__(
        self,
        encoder_a: Encoder,
        encoder_b: Encoder,
        *,
        projection_dim: PositiveInt = 512,
        initial_logit_scale: PositiveFloat = 10.0,
        initial_bias: float = -10.0,
        max_logit_scale: PositiveFloat | None = None,
        augment: bool | Sequence[bool] = False,
        chunk_size: PositiveInt | None = None,
        block_size: PositiveInt = 4096,
    ) -> None:
        """``encoder_a``/``encoder_b``: the two domains' encoders, recipe order. ``initial_logit_scale``:
        t at the start (the paper: 10, i.e. t' = log 10); ``initial_bias``: b (-10);
        ``max_logit_scale``: clip t after every step (None: never, as big_vision). ``augment``: one
        ``augmented`` view per side instead of ``plain`` (per side or both). ``chunk_size``:
        GradCache rows per encoder call; ``block_size``: rows and columns of each loss tile."""
        limit = math.inf if max_logit_scale is None else max_logit_scale
        if initial_logit_scale > limit:
            raise ValueError(f"initial_logit_scale {initial_logit_scale} exceeds max_logit_scale {max_logit_scale}")
        super().__init__(encoder_a, encoder_b, projection_dim=projection_dim,
                         initial_temperature=1.0 / initial_logit_scale, max_logit_scale=limit, queue_size=0,
                         augment=augment, chunk_size=chunk_size)
        self.logit_bias = nn.Parameter(torch.tensor(float(initial_bias)))
        self.block_size = block_size

    def forward(self, views_a: dict[str, Any], views_b: dict[str, Any]) -> ObjectiveOutput:
        z_a, z_b = self.joint_embeddings(views_a, views_b)
        scale = self.logit_scale()
        loss = siglip_loss(z_a, z_b, scale, self.logit_bias, block_size=self.block_size)
        logs = {"logit_scale": scale.detach(), "logit_bias": self.logit_bias.detach()}
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(z_a, z_b))
