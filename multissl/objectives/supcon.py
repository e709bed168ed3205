"""SupCon: supervised contrastive learning.

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan 2020 (arXiv:2004.11362).
Works on any domain that makes ``augmented`` views of a dataset with labels.
"""

from __future__ import annotations

from typing import Any

import torch

from multissl.features import Encoder
from multissl.losses import supcon
from multissl.modules import ProjectedEncoder, ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = ["SupCon"]


class SupCon(Objective):
    """Pull together every view of every sample of the same class; push the other classes away.

        z_v = g(f(x_v))  for each of the V augmented views            [B, projection_dim]
        loss = supcon(stack([z_1 .. z_V], dim=1), labels, temperature)  (paper eq. 2, L_out)

    ``labels`` [B] come with the views from the dataset's label column (``views["labels"]``).
    :func:`multissl.losses.supcon` normalises z onto the unit sphere, treats each of the B * V
    (global) views as an anchor whose positives are all other views with its label, and averages
    over anchors. The head is the paper's projection network: one hidden layer (2048 in the paper;
    the encoder width by default) -> 128, ReLU, no batch norm. Temperature 0.1 (paper sec. 4).
    """

    name = "supcon"
    min_batch_size = 2  # in-batch contrastive: positives and negatives are the other rows

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        num_views: int = 2,
        temperature: float = 0.1,
        policy: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """``chunk_size`` encodes that many rows at a time with GradCache (memory-bound batches)."""
        super().__init__()
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        head = ProjectionHead(encoder.dim, hidden_dim or encoder.dim, projection_dim, num_layers=2, batch_norm=False)
        self.network = ProjectedEncoder(encoder, head, chunk_size)
        self.num_views, self.temperature, self.policy = num_views, temperature, policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy, self.num_views),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        labels = views.get("labels")
        if labels is None:
            raise ValueError(
                "supcon needs a class label per row, but these views carry none: map the dataset's label "
                "column in the recipe as data.columns.label (e.g. data.columns.label=label)"
            )
        projections = self.network(views["views"][: self.num_views])
        loss = supcon(torch.stack(projections, dim=1), labels, temperature=self.temperature)
        embeddings = (projections[0], projections[1]) if len(projections) > 1 else None
        return ObjectiveOutput(loss=loss, logs={}, embeddings=embeddings)
