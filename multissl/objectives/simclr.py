"""SimCLR: a simple framework for contrastive learning of visual representations.

Chen, Kornblith, Norouzi, Hinton 2020 ("SimCLR", Algorithm 1), with the deeper projection head of
Chen, Kornblith, Swersky, Norouzi, Hinton 2020 ("SimCLRv2": 3 layers, fine-tune from the middle).
Works on any domain that makes ``augmented`` views.

    x -> two augmented views -> encoder f -> h (pooled) -> head g -> z -> nt_xent(z1, z2)

SimCLRv2 fine-tunes from the middle of its 3-layer head rather than from h (section 2.2):
:meth:`SimCLR.encoder_with_head` gives that network (f then the first k head layers) as an
``Encoder``, which ``multissl.probes.fine_tune`` (or any probe) takes as it is.
"""

from __future__ import annotations

import torch

from torch import nn

from multissl.features import Encoder, Features, encode_views
from multissl.losses import nt_xent
from multissl.modules import ProjectionHead, grad_cache_or_none
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest


class SimCLR(Objective):
    name = "simclr"
    min_batch_size = 2  # in-batch contrastive: a row's negatives are the other rows (1 row: loss exactly 0)

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        head_layers: int = 2,
        temperature: float = 0.5,
        policy: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """head_layers=2 is SimCLR's head, 3 SimCLRv2's; hidden_dim defaults to the encoder width;
        ``policy`` names the domain's augmentation policy (None: the domain's default);
        ``chunk_size`` encodes that many rows at a time with GradCache (memory-bound batches)."""
        super().__init__()
        self.encoder = encoder
        self.grad_cache = grad_cache_or_none(encoder, chunk_size)
        self.head = ProjectionHead(encoder.dim, hidden_dim or encoder.dim, projection_dim, num_layers=head_layers)
        self.temperature = temperature
        self.policy = policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views) -> ObjectiveOutput:
        first, second = (features.pooled for features in encode_views(self.grad_cache or self.encoder, views["views"][:2]))
        # one head call on both views, so its batch norm sees them together (as the reference)
        z1, z2 = self.head(torch.cat([first, second])).chunk(2)
        loss = nt_xent(z1, z2, temperature=self.temperature)
        return ObjectiveOutput(loss=loss, logs={"temperature": self.temperature}, embeddings=(z1, z2))

    def encoder_with_head(self, up_to: int = 1) -> "HeadedEncoder":
        """f followed by the first ``up_to`` head layers, sharing their weights (SimCLRv2's
        fine-tuning network: ``up_to=1`` of the 3-layer head is the paper's choice)."""
        return HeadedEncoder(self.encoder, self.head.truncated(up_to), self.head.hidden_dim if up_to < self.head.num_layers
                             else self.head.out_dim)


class HeadedEncoder(Encoder):
    """An encoder whose pooled features pass through (part of) a projection head: [B, dim]."""

    def __init__(self, encoder: Encoder, head: nn.Module, dim: int) -> None:
        super().__init__()
        self.encoder, self.head, self.dim = encoder, head, dim
        self.model, self.processor, self.pooling = encoder.model, encoder.processor, encoder.pooling

    def forward(self, **inputs) -> Features:
        features = self.encoder(**inputs)
        return Features(pooled=self.head(features.pooled), sequence=features.sequence, mask=features.mask,
                        hidden_states=features.hidden_states)
