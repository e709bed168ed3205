"""Instance discrimination with a memory bank (Wu, Xiong, Yu & Lin 2018, "Unsupervised Feature
Learning via Non-Parametric Instance Discrimination", arXiv:1805.01978; official code
``zhirongw/lemniscate.pytorch``). Works on any domain whose views carry sample ids ("indices").

Every training sample is a class of its own, and the classifier is non-parametric: class i is the
stored feature v_i of sample i in a memory bank, so the softmax over n classes is
``exp(v_i^T f / tau) / sum_j exp(v_j^T f / tau)`` (eq. 2), approximated by NCE against m noise rows:

    f = normalize(W h),  h = encoder(one augmented view)     W: linear to 128-d (the paper's fc)
    rows = [i, j_1 .. j_m]                                     own row, m uniform noise rows
    scores = v_rows^T f / tau                                  tau = 0.07, m = 4096
    loss = memory_bank_nce(scores, n, Z)                       eq. 7, Z fixed from the first batch
    bank: v_i <- normalize(0.5 v_i + 0.5 f)                    after the loss, every rank's rows

``loss="softmax"`` takes the cross-entropy over the m + 1 sampled scores with the own row as the
target instead (the "softmax" option of CMC's code and VISSL's ``cross_entropy``). The bank is one
row per training sample: set ``bank_size`` to the number of training rows. The official defaults
are kept (4096 noise rows, tau 0.07, momentum 0.5, a linear head); the paper's proximal
regularisation (sec. 3.4) is not in the official code and not here. The paper's augmentation
(random resized crop scale 0.2-1, colour jitter 0.4, grayscale 0.2, flip) is the recipe's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F

from multissl.features import Encoder
from multissl.modules import MemoryBank, ProjectionHead, sample_ids
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import PositiveFloat, PositiveInt, Range
from multissl.views import ViewRequest

__all__ = ["InstanceDiscrimination"]


class InstanceDiscrimination(Objective):
    name = "instance_discrimination"

    def __init__(
        self,
        encoder: Encoder,
        *,
        bank_size: PositiveInt,
        projection_dim: PositiveInt = 128,
        num_negatives: PositiveInt = 4096,
        temperature: PositiveFloat = 0.07,
        momentum: Annotated[float, Range(0, 1)] = 0.5,
        loss: Literal["nce", "softmax"] = "nce",
        policy: str | None = None,
    ) -> None:
        """``bank_size``: the number of training rows (sample ids run from 0 to bank_size - 1);
        ``num_negatives``: m noise rows per sample; ``policy``: the domain's augmentation policy."""
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.dim, encoder.dim, projection_dim, num_layers=1, batch_norm=False)
        self.bank = MemoryBank(bank_size, projection_dim, momentum)
        self.num_negatives, self.temperature, self.loss, self.policy = num_negatives, temperature, loss, policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy, num_views=1),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        indices = sample_ids(views, self.name)
        f = F.normalize(self.head(self.encoder(**views["views"][0]).pooled).float(), dim=1)
        rows = self.bank.sample(indices, self.num_negatives)
        scores = self.bank.scores(f, rows, self.temperature)
        with torch.no_grad():
            accuracy = (scores[:, 0] >= scores[:, 1:].amax(dim=1)).float().mean()
            stored = self.bank.features[indices].clone()
        loss = self.bank.loss(scores, self.loss)
        self.bank.update(f, indices)
        logs = {"positive_accuracy": accuracy, "normalizer": self.bank.normalizer.clone()}
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(f, stored))
