"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun 2022).

Three explicit terms on the two views' expansions, statistics over the (global) batch: keep each
dimension's standard deviation above 1 (no collapse), pull the two views together, decorrelate the
dimensions. No negatives, no stop-gradient, no momentum encoder.

    z_v  = expander(encoder(v))      3 layers, 8192 wide in the paper, BN + ReLU on the hidden layers
    loss = 25 * mse(z1, z2) + 25 * (v(z1) + v(z2)) / 2 + 1 * (c(z1) + c(z2))
           v: mean_d relu(1 - std_d),  c: sum of squared off-diagonal covariances / D

The two views' variance terms are averaged, as the reference code (the weights were tuned on it);
``variance_views: sum`` adds them, as the paper writes.

The expander's last linear layer keeps a bias (the reference's has none): every term is
translation invariant in z (variance and covariance centre; the shift is shared by both views in
the invariance term), so the bias has no gradient and stays at its initial value.
"""

from __future__ import annotations

from typing import Literal

from multissl.features import Encoder
from multissl.losses import vicreg_terms
from multissl.modules import ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules import ProjectedEncoder
from multissl.views import ViewRequest


class VICReg(Objective):
    name = "vicreg"
    min_batch_size = 3  # batch variance/covariance: at 2 rows the covariance has rank 1, nothing to decorrelate

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 8192,
        hidden_dim: int | None = None,
        expander_layers: int = 3,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        variance_views: Literal["mean", "sum"] = "mean",
        policy: str | None = None,
    ) -> None:
        """Weights are the paper's lambda, mu, nu; ``hidden_dim`` defaults to ``projection_dim``;
        ``policy``: the domain's augmentation policy (None: its default)."""
        super().__init__()
        for name, value in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        expander = ProjectionHead(encoder.dim, hidden_dim or projection_dim, projection_dim, num_layers=expander_layers)
        self.online = ProjectedEncoder(encoder, expander)
        self.sim_weight, self.var_weight, self.cov_weight, self.policy = sim_weight, var_weight, cov_weight, policy
        self.variance_views = variance_views

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views) -> ObjectiveOutput:
        z1, z2 = self.online(views["views"][:2])
        # vicreg() is exactly this weighted sum; the terms once give the loss and the logs.
        terms = vicreg_terms(z1, z2, variance_views=self.variance_views)
        loss = (self.sim_weight * terms.invariance + self.var_weight * terms.variance
                + self.cov_weight * terms.covariance)
        logs = {name: value.detach() for name, value in terms._asdict().items()}
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(z1, z2))
