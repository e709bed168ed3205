"""SimSiam: exploring simple Siamese representation learning (Chen & He 2021).

One network on both views, a predictor on top, and a stop-gradient on the other branch: no
negatives, no momentum encoder, no large batches. The stop-gradient is what prevents collapse
(inside :func:`multissl.losses.simsiam`).

    z_v = projector(encoder(v))      3 layers, 2048 wide, BN on every layer incl. the output, [B, 2048]
    p_v = predictor(z_v)             bottleneck 2048 -> 512 -> 2048, BN on the hidden layer only
    loss = 1/2 simsiam(p_1, z_2) + 1/2 simsiam(p_2, z_1)      simsiam = -cos(p, stopgrad(z)), min -1
"""

from __future__ import annotations

import torch

from multissl.features import Encoder
from multissl.losses import simsiam
from multissl.modules import Predictor, ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules import ProjectedEncoder
from multissl.views import ViewRequest


class SimSiam(Objective):
    name = "simsiam"

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 2048,
        hidden_dim: int | None = None,
        projector_layers: int = 3,
        predictor_hidden_dim: int = 512,
        fix_predictor_lr: bool = True,
        policy: str | None = None,
    ) -> None:
        """``hidden_dim`` (the projector's) defaults to ``projection_dim``, as the paper's 2048/2048;
        ``projector_layers`` 3 on ImageNet, 2 in the paper's CIFAR-10 experiments; the predictor's
        bottleneck is a quarter of the width there (512). ``fix_predictor_lr``: the predictor's
        learning rate stays at its peak while the rest decays (the reference's ``--fix-pred-lr``,
        with which its results were reported; the paper, sec. 4.2: "a constant lr (without decay)
        for h" works better). ``policy``: the domain's augmentation policy (None: its default)."""
        super().__init__()
        projector = ProjectionHead(encoder.dim, hidden_dim or projection_dim, projection_dim,
                                   num_layers=projector_layers, last_batch_norm=True)
        self.online = ProjectedEncoder(encoder, projector)
        self.predictor = Predictor(projection_dim, predictor_hidden_dim, projection_dim)
        self.policy, self.fix_predictor_lr = policy, fix_predictor_lr

    def fixed_learning_rate(self) -> set[str]:
        """Parameters the schedule leaves at the peak lr (:func:`multissl.optim.parameter_groups`)."""
        return {f"predictor.{name}" for name, _ in self.predictor.named_parameters()} if self.fix_predictor_lr else set()

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views) -> ObjectiveOutput:
        z1, z2 = self.online(views["views"][:2])
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        loss = 0.5 * (simsiam(p1, z2) + simsiam(p2, z1))
        return ObjectiveOutput(loss=loss, embeddings=(z1, z2))
