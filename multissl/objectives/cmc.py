"""CMC: Contrastive Multiview Coding (Tian, Krishnan & Isola 2019, arXiv:1906.05849; official code
``HobbitLong/CMC``: ``NCEAverage``, ``NCECriterion``, ``train_CMC.py``).

Two views of each sample, each with its own encoder, head and memory bank; each view's embedding
is contrasted against the other view's bank (eq. 3-4 with NCE, the two terms summed, eq. 5):

    z_a = normalize(W_a h_a(view a)),  z_b = normalize(W_b h_b(view b))     linear heads to 128
    rows = [i, j_1 .. j_m]             own row and m = 4096 uniform noise rows (one draw, both banks)
    loss = NCE(bank_b[rows] . z_a / tau) + NCE(bank_a[rows] . z_b / tau)    tau = 0.07
    bank_a[i] <- normalize(0.5 bank_a[i] + 0.5 z_a);  the same for b        after the loss

A "view" is a domain: the L and ab channels of one image (two image domains on the same rows,
``color_space`` "L" and "ab", with ``same_crop`` so both convert one crop, as the official code
does), or any two domains (image and text, image and audio), each bank indexed by its own domain's
sample ids. Each bank's Z is fixed from the first scores against it (Z_l from the L embeddings
against the ab bank, as the official ``params[2]``). ``loss="softmax"`` takes the cross-entropy over
the m + 1 sampled rows instead (the official code's later ``--softmax``). The official defaults are
kept: 4096 noise rows, tau 0.07, momentum 0.5, 128-d, unnormalised uniform initial banks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from multissl.features import Encoder
from multissl.modules import MemoryBank, sample_ids
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import PositiveFloat, PositiveInt, Range
from multissl.views import ViewRequest

__all__ = ["CMC"]


class CMC(Objective):
    name = "cmc"

    def __init__(
        self,
        encoder_a: Encoder,
        encoder_b: Encoder,
        *,
        bank_size: PositiveInt,
        projection_dim: PositiveInt = 128,
        num_negatives: PositiveInt = 4096,
        temperature: PositiveFloat = 0.07,
        momentum: Annotated[float, Range(0, 1)] = 0.5,
        loss: Literal["nce", "softmax"] = "nce",
        same_crop: bool = False,
        policy: str | None = None,
    ) -> None:
        """``bank_size``: the number of training rows of each domain (one row per sample id);
        ``same_crop``: the first domain replays the random draws it used so the second (an image
        domain on the same rows) cuts the same crop (CMC's L/ab); ``policy``: the domains' augmentation."""
        super().__init__()
        self.encoder_a, self.encoder_b = encoder_a, encoder_b
        self.head_a = nn.Linear(encoder_a.dim, projection_dim)
        self.head_b = nn.Linear(encoder_b.dim, projection_dim)
        self.bank_a = MemoryBank(bank_size, projection_dim, momentum, seed=0)
        self.bank_b = MemoryBank(bank_size, projection_dim, momentum, seed=1)
        self.num_negatives, self.temperature, self.loss = num_negatives, temperature, loss
        self.same_crop, self.policy = same_crop, policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        first = ViewRequest.augmented(self.policy, num_views=1)
        if self.same_crop:
            first.options["replay"] = True
        return first, ViewRequest.augmented(self.policy, num_views=1)

    def forward(self, views_a: dict[str, Any], views_b: dict[str, Any]) -> ObjectiveOutput:
        ids_a, ids_b = sample_ids(views_a, self.name), sample_ids(views_b, self.name)
        z_a = F.normalize(self.head_a(self.encoder_a(**views_a["views"][0]).pooled).float(), dim=1)
        z_b = F.normalize(self.head_b(self.encoder_b(**views_b["views"][0]).pooled).float(), dim=1)
        noise = self.bank_a.sample(ids_a, self.num_negatives)[:, 1:]
        # z_a against the other view's bank, at the row of its own sample, and the reverse
        scores_a = self.bank_b.scores(z_a, torch.cat([ids_b[:, None], noise], dim=1), self.temperature)
        scores_b = self.bank_a.scores(z_b, torch.cat([ids_a[:, None], noise], dim=1), self.temperature)
        with torch.no_grad():
            accuracy = [(s[:, 0] >= s[:, 1:].amax(dim=1)).float().mean() for s in (scores_a, scores_b)]
        loss_a, loss_b = self.bank_b.loss(scores_a, self.loss), self.bank_a.loss(scores_b, self.loss)
        self.bank_a.update(z_a, ids_a)
        self.bank_b.update(z_b, ids_b)
        logs = {"loss_a": loss_a.detach(), "loss_b": loss_b.detach(), "positive_accuracy_a": accuracy[0],
                "positive_accuracy_b": accuracy[1]}
        return ObjectiveOutput(loss=loss_a + loss_b, logs=logs, embeddings=(z_a, z_b))
