"""Barlow Twins: self-supervised learning via redundancy reduction (Zbontar et al. 2021).

Make the cross-correlation matrix of the two views' embeddings, computed over the (global) batch,
as close to the identity as possible: invariance on the diagonal, decorrelation off it.

    z_v  = projector(encoder(v))     3 layers, 8192 wide in the paper, BN + ReLU on the hidden layers
    C    = z1n^T z2n / N             each dimension standardised over the global batch, [D, D]
    loss = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2       (lambd = 5e-3)

The projector's last linear layer keeps a bias (the reference's has none): the loss standardises
every dimension, so a constant shift cancels exactly.
"""

from __future__ import annotations

from multissl.features import Encoder
from multissl.losses import barlow_twins_terms
from multissl.modules import ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules import ProjectedEncoder
from multissl.views import ViewRequest


class BarlowTwins(Objective):
    name = "barlow_twins"
    min_batch_size = 3  # standardises over the batch: at 2 rows every entry of C is +-1, nothing to decorrelate

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 8192,
        hidden_dim: int | None = None,
        projector_layers: int = 3,
        lambd: float = 5e-3,
        policy: str | None = None,
    ) -> None:
        """``hidden_dim`` defaults to ``projection_dim`` (the paper's 8192-8192-8192); ``lambd``
        weighs the redundancy term; ``policy``: the domain's augmentation policy (None: default)."""
        super().__init__()
        if lambd < 0:
            raise ValueError(f"lambd must be >= 0, got {lambd}")
        projector = ProjectionHead(encoder.dim, hidden_dim or projection_dim, projection_dim,
                                   num_layers=projector_layers)
        self.online = ProjectedEncoder(encoder, projector)
        self.lambd, self.policy = lambd, policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views) -> ObjectiveOutput:
        z1, z2 = self.online(views["views"][:2])
        # barlow_twins() is exactly this sum; taking the terms once lets us log them without a
        # second D x D cross-correlation (and its all-reduce).
        terms = barlow_twins_terms(z1, z2)
        loss = terms.invariance + self.lambd * terms.redundancy
        logs = {"invariance": terms.invariance.detach(), "redundancy": terms.redundancy.detach()}
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(z1, z2))
