"""CLIP: contrastive language-image pre-training, between any two domains.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"
(arXiv:2103.00020, Figure 3 and section 2.5). Nothing here is specific to images or text: each
side is one domain's encoder (image-text, audio-text, image-audio...), row i of both sides is a pair.

    x_a -> encoder_a -> pooled -> W_a (linear, no bias) -> z_a      (joint space, L2-normalised)
    x_b -> encoder_b -> pooled -> W_b (linear, no bias) -> z_b
    loss = clip_loss(z_a, z_b, logit_scale): symmetric cross-entropy over the (global) batch

``logit_scale`` is a :class:`~multissl.modules.LearnableTemperature` (initial temperature 0.07,
scale clamped at 100 after every step). ``chunk_size`` encodes through GradCache
(:mod:`multissl.modules.gradcache`), so the contrastive batch is bounded by the memory of the
[B, D] representations, not of the encoders' activations.

**Small batches: a queue of negatives** (``queue_size > 0``; not in the CLIP paper, MoCo's
dictionary, He et al. 2020). Each side keeps a :class:`~multissl.modules.MomentumQueue` of its
recent joint embeddings; the loss becomes
``(info_nce(z_a, z_b, negatives=queue_b) + info_nce(z_b, z_a, negatives=queue_a)) / 2`` at
temperature ``1 / logit_scale``: each row is contrasted with the global batch of the other side
plus that side's queue. There is no momentum encoder: queued embeddings come from the encoders of
the last few steps and go stale as they train, so keep the queue a few batches long. The queues
are persistent buffers (a resume sees the same negatives); this step's embeddings are enqueued
after the loss is computed.

Zero-shot classification with a CLIP objective during or after training (section 3.1.4) is
evaluation, so it lives with the probes: :func:`multissl.probes.retrieval.joint_zero_shot_classifier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl.features import Encoder
from multissl.losses import clip_loss, info_nce
from multissl.modules import LearnableTemperature, MomentumQueue, grad_cache_or_none
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = ["CLIP"]


def _per_side(name: str, value: Any, kind: type) -> tuple[Any, Any]:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    if len(values) != 2 or not all(isinstance(v, kind) for v in values):
        raise ValueError(f"{name} must be a {kind.__name__} or one per domain (2), got {value!r}")
    return values


class CLIP(Objective):
    name = "clip"
    min_batch_size = 2  # in-batch contrastive: a pair's negatives are the other pairs

    def __init__(
        self,
        encoder_a: Encoder,
        encoder_b: Encoder,
        *,
        projection_dim: int = 512,
        initial_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        queue_size: int = 0,
        augment: bool | Sequence[bool] = False,
        chunk_size: int | None = None,
    ) -> None:
        """``encoder_a``/``encoder_b``: the two domains' encoders, recipe order (the same encoder
        may serve both). ``augment``: ask each domain (or both) for one ``augmented`` view instead
        of the ``plain`` one (CLIP itself uses only a random square crop). ``queue_size``: rows of
        negatives kept per side (0: CLIP's in-batch loss). ``chunk_size``: GradCache chunk rows."""
        super().__init__()
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.augment = _per_side("augment", augment, bool)
        self.encoder_a, self.encoder_b = encoder_a, encoder_b
        self.grad_caches = (grad_cache_or_none(encoder_a, chunk_size), grad_cache_or_none(encoder_b, chunk_size))
        self.projection_a = nn.Linear(encoder_a.dim, projection_dim, bias=False)
        self.projection_b = nn.Linear(encoder_b.dim, projection_dim, bias=False)
        self.logit_scale = LearnableTemperature(initial_temperature, max_logit_scale)
        self.queue_a = MomentumQueue(queue_size, projection_dim, seed=1) if queue_size else None
        self.queue_b = MomentumQueue(queue_size, projection_dim, seed=2) if queue_size else None

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return tuple(ViewRequest("augmented", {"num_views": 1}) if augment else ViewRequest("plain")
                     for augment in self.augment)

    def side(self, side: int) -> tuple[Encoder, nn.Linear]:
        """(encoder, joint-space projection) of side 0 (the first domain) or 1 (the second)."""
        if side not in (0, 1):
            raise ValueError(f"side must be 0 (first domain) or 1 (second domain), got {side!r}")
        return (self.encoder_a, self.projection_a) if side == 0 else (self.encoder_b, self.projection_b)

    def project(self, side: int, pooled: Tensor) -> Tensor:
        """Joint-space embeddings [B, projection_dim], L2-normalised, of one side's pooled features."""
        return F.normalize(self.side(side)[1](pooled), dim=-1)

    def embed(self, side: int, inputs: dict[str, Tensor]) -> Tensor:
        """Joint-space embeddings [B, projection_dim] (L2-normalised) of one side's encoder inputs."""
        return self.project(side, self.side(side)[0](**inputs).pooled)

    def joint_embeddings(self, views_a: dict[str, Any], views_b: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Both sides' joint-space embeddings [B, projection_dim] (L2-normalised) of one step's
        views, through GradCache when ``chunk_size`` is set."""
        encoders = [cached or encoder for cached, encoder in zip(self.grad_caches, (self.encoder_a, self.encoder_b))]
        pooled = [encode(**(views["views"][0] if augment else views["inputs"])).pooled
                  for encode, views, augment in zip(encoders, (views_a, views_b), self.augment)]
        return self.project(0, pooled[0]), self.project(1, pooled[1])

    def forward(self, views_a: dict[str, Any], views_b: dict[str, Any]) -> ObjectiveOutput:
        z_a, z_b = self.joint_embeddings(views_a, views_b)
        scale = self.logit_scale()
        if self.queue_a is None or self.queue_b is None:
            loss = clip_loss(z_a, z_b, scale)
        else:
            temperature = 1.0 / scale
            loss = (info_nce(z_a, z_b, self.queue_b.negatives(), temperature)
                    + info_nce(z_b, z_a, self.queue_a.negatives(), temperature)) / 2
            if self.training:
                self.queue_a.enqueue(z_a.detach())
                self.queue_b.enqueue(z_b.detach())
        logs = {"logit_scale": scale.detach(), "temperature": (1.0 / scale).detach()}
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(z_a, z_b))

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.logit_scale.clamp_()

    def joint_projections(self) -> tuple[nn.Module, nn.Module]:
        return self.projection_a, self.projection_b
