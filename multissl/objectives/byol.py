"""BYOL: Bootstrap Your Own Latent (Grill et al. 2020).

An online network (encoder, projector, predictor) predicts the target network's projection of the
other view; the target (encoder and projector) is an exponential moving average of the online
network and receives no gradient. No negatives.

    v1, v2 = two augmented views (image: BYOL's asymmetric blur/solarize policy)
    z_v  = projector(encoder(v))          online,   [B, 256]
    z'_v = EMA copy of the same on v      target,   [B, 256], no gradient
    loss = byol(predictor(z_1), z'_2) + byol(predictor(z_2), z'_1)      (the paper's L + L~)
    after optimiser step k (1-based):  xi <- tau_k xi + (1 - tau_k) theta,
    tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2                    (tau_base 0.996 -> 1)

The target copies encoder and projector (:class:`~multissl.modules.MomentumEncoder`, shared with MoCo); the
predictor exists only on the online side. Both views go through each network in one call, so batch
norm normalises them together (BYOL's JAX reference runs each view in its own call).
"""

from __future__ import annotations

import torch

from multissl.features import Encoder
from multissl.losses import byol
from multissl.modules import Predictor, ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules import MomentumEncoder, ProjectedEncoder
from multissl.views import ViewRequest


class BYOL(Objective):
    name = "byol"

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 256,
        hidden_dim: int = 4096,
        predictor_hidden_dim: int | None = None,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        policy: str | None = None,
    ) -> None:
        """Paper defaults: projector and predictor 4096 -> 256 with BN on the hidden layer;
        ``predictor_hidden_dim`` defaults to ``hidden_dim``. ``policy`` names the domain's
        augmentation policy ("byol" for images; None: the domain's default)."""
        super().__init__()
        if base_momentum > final_momentum:
            raise ValueError(f"base_momentum {base_momentum} must not exceed final_momentum {final_momentum}")
        self.online = ProjectedEncoder(encoder, ProjectionHead(encoder.dim, hidden_dim, projection_dim, num_layers=2))
        self.predictor = Predictor(projection_dim, predictor_hidden_dim or hidden_dim, projection_dim)
        self.target = MomentumEncoder(self.online, base_momentum, final_momentum)
        self.policy = policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views) -> ObjectiveOutput:
        pair = views["views"][:2]
        z1, z2 = self.online(pair)
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        target1, target2 = self.target(pair)  # no_grad inside; the loss detaches again
        loss = byol(p1, target2) + byol(p2, target1)
        return ObjectiveOutput(loss=loss, logs={"momentum": self.target.momentum.clone()}, embeddings=(z1, z2))

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.target.follow(self.online, step, total_steps)
