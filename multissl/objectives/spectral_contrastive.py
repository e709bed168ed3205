"""Spectral contrastive learning (HaoChen, Wei, Gaidon, Ma 2021, "Provable Guarantees for
Self-Supervised Deep Learning with Spectral Contrastive Loss", arXiv:2106.04156).

    x -> two augmented views -> encoder f -> h (pooled) -> head g -> z
    loss = spectral_contrastive(z1, z2, mu) = -2 E[z1_i . z2_i] + E_{i != j}[(z1_i . z2_j)^2]

(:func:`multissl.losses.spectral_contrastive`, with the official code's norm clipping at sqrt(mu)
and division by mu). Minimising it factorises the normalised adjacency matrix of the augmentation
graph, so a linear probe on the features recovers what the augmentations keep connected.

The head is the official code's (``cifar_resnet_1_mlp_norelu.py``): Linear -> BN -> ReLU ->
Linear -> BN, 2048 wide, 1000 outputs on CIFAR-10, the output BN with a learnable scale and shift
and no ReLU after it ("norelu"). The paper's ImageNet runs use a 3-layer 8192-wide head and mu = 10
(``head_layers``, ``hidden_dim``, ``projection_dim``, ``mu``). Both views go through the network in
one call, the toolkit's convention (SimCLR's reference), so batch norm normalises them together;
the official code encodes each view in its own call. Works on any domain that makes ``augmented``
views.
"""

from __future__ import annotations

import torch
from torch import nn

from multissl.features import Encoder, encode_views
from multissl.losses import spectral_contrastive
from multissl.modules import ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import PositiveFloat, PositiveInt
from multissl.views import ViewRequest

__all__ = ["SpectralContrastive"]


class SpectralContrastive(Objective):
    name = "spectral_contrastive"

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: PositiveInt = 1000,
        hidden_dim: PositiveInt = 2048,
        head_layers: PositiveInt = 2,
        mu: PositiveFloat = 1.0,
        policy: str | None = None,
    ) -> None:
        """``mu``: squared radius the projections are clipped to (1 on CIFAR-10, 10 on ImageNet in
        the official configs); ``policy``: the domain's augmentation policy (None: its default)."""
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(
            ProjectionHead(encoder.dim, hidden_dim, projection_dim, num_layers=head_layers, batch_norm=True,
                           last_batch_norm=False),
            nn.BatchNorm1d(projection_dim),
        )
        self.mu, self.policy = mu, policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views) -> ObjectiveOutput:
        first, second = (features.pooled for features in encode_views(self.encoder, views["views"][:2]))
        z1, z2 = self.head(torch.cat([first, second])).chunk(2)  # one head call: BN sees both views
        loss = spectral_contrastive(z1, z2, mu=self.mu)
        return ObjectiveOutput(loss=loss, logs={"projection_norm": z1.detach().norm(dim=1).mean()}, embeddings=(z1, z2))
