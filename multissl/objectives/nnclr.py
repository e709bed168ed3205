"""NNCLR: nearest-neighbour contrastive learning of visual representations.

Dwibedi, Aytar, Tompson, Sermanet, Zisserman 2021 ("With a Little Help from My Friends",
arXiv:2104.14548). Works on any domain that makes ``augmented`` views.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from multissl.features import Encoder
from multissl.losses import info_nce
from multissl.modules import MomentumQueue, Predictor, ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules import positive_accuracy
from multissl.modules import ProjectedEncoder
from multissl.views import ViewRequest

__all__ = ["NNCLR", "nearest_neighbours"]


@torch.no_grad()
def nearest_neighbours(embeddings: Tensor, support: Tensor) -> Tensor:
    """Row i of the result is the row of ``support`` [M, D] nearest to ``embeddings[i]`` [N, D].

    Both are compared as unit vectors, so the highest cosine similarity is the smallest Euclidean
    distance of the paper's ``NN(z, Q) = argmin_q ||z - q||_2``. Returns unit vectors [N, D], no
    gradient (the look-up is not differentiable). Similarities are float32 even under autocast, so
    bf16 rounding does not pick the neighbour.
    """
    with torch.autocast(embeddings.device.type, enabled=False):
        support = F.normalize(support.float(), dim=1)
        closest = (F.normalize(embeddings.float(), dim=1) @ support.T).argmax(dim=1)
    return support[closest]


class NNCLR(Objective):
    """Each view's positive is the nearest neighbour of the other view's projection in a support set.

        z1, z2 = g(f(x1)), g(f(x2))                  projections [B, projection_dim]
        p1, p2 = h(z1), h(z2)                        predictor (paper sec. 4.1)
        n1, n2 = NN(z1, Q), NN(z2, Q)                nearest neighbours in the support set Q, no gradient
        loss = (info_nce(n1, p2) + info_nce(n2, p1)) / 2     (paper eq. 2, symmetrised)
        Q.enqueue(normalize(z1))                     after the loss, FIFO of ``support_size`` rows

    In ``info_nce(n1, p2)`` row i's positive is ``p2[i]`` and the negatives are the other rows of
    ``p2`` in the global batch, each scored against ``n1[i]`` by cosine / ``temperature``: the
    paper's ``exp(NN(z_i, Q) . z_i^+ / tau) / sum_k exp(NN(z_i, Q) . z_k^+ / tau)``. Gradients reach
    the network only through the predictions ``p``, as in the paper. The support set
    (:class:`MomentumQueue`) starts as random unit vectors, as in the authors' setup, and holds real
    embeddings after ``support_size / global batch`` steps (log ``support_fill``).

    Paper sizes: projector 3 layers 2048 wide -> 256 with batch norm, predictor 4096 -> 256,
    support set 98,304, temperature 0.1.
    """

    name = "nnclr"
    min_batch_size = 2  # in-batch contrastive: a row's negatives are the other rows

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 256,
        hidden_dim: int = 2048,
        projection_layers: int = 3,
        predictor_hidden_dim: int = 4096,
        support_size: int = 98_304,
        temperature: float = 0.1,
        policy: str | None = None,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        head = ProjectionHead(encoder.dim, hidden_dim, projection_dim, num_layers=projection_layers,
                              batch_norm=True, last_batch_norm=True)
        self.network = ProjectedEncoder(encoder, head)
        self.predictor = Predictor(projection_dim, predictor_hidden_dim, projection_dim)
        self.support_set = MomentumQueue(support_size, projection_dim)
        self.temperature, self.policy = temperature, policy

    @property
    def encoder(self) -> Encoder:
        return self.network.encoder

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        z1, z2 = self.network(views["views"][:2])
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        support = self.support_set.negatives()
        n1, n2 = nearest_neighbours(z1, support), nearest_neighbours(z2, support)
        loss = (info_nce(n1, p2, temperature=self.temperature) + info_nce(n2, p1, temperature=self.temperature)) / 2
        self.support_set.enqueue(F.normalize(z1.detach(), dim=1))
        logs = {
            "positive_accuracy": positive_accuracy(n1, p2),
            "support_fill": self.support_set.total_enqueued.clamp(max=self.support_set.size).float()
            / self.support_set.size,
        }
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(z1, z2))
