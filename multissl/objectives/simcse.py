"""SimCSE: simple contrastive learning of sentence embeddings (Gao, Yao, Chen 2021, arXiv:2104.08821).

Unsupervised (section 3): every sentence is encoded twice; dropout alone makes the two views
differ (the domain's ``augmented`` view, policy "dropout": identical copies).
    h_i, h_i' = pooled features of the two passes (+ the MLP below)
    loss = info_nce(h, h', temperature=0.05): -log e^{sim(h_i, h_i')/t} / sum_j e^{sim(h_i, h_j')/t}
           (eq. 4; sim = cosine; the other sentences of the global batch are the negatives)
Supervised (section 4, eq. 5): NLI triplets (policy "pair": anchor, entailment, contradiction).
    the anchor's columns are every positive h_j^+ and every hard negative h_j^- of the global batch:
    loss = -log e^{sim(h_i, h_i^+)/t} / sum_j (e^{sim(h_i, h_j^+)/t} + e^{sim(h_i, h_j^-)/t})
    = info_nce(anchors, positives, negatives=gathered hard negatives). Without a hard-negative
    column it is eq. 4 on the pairs.

Pooling: the encoder's ``Features.pooled`` (set ``pooling: cls`` on the encoder for the paper's
[CLS]) followed, when ``mlp`` is on, by the paper's MLP (dense + tanh, BERT's pooler layout).
The MLP is used in training only: probes and pushed encoders read the encoder's pooled features,
which is the paper's choice for unsupervised SimCSE ("w/ MLP (train)", table 6); for supervised
SimCSE the paper keeps the MLP at test time as well, which a pushed encoder does not carry.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from multissl.distributed import gather_with_grad
from multissl.features import Encoder, encode_views
from multissl.losses import info_nce
from multissl.modules import grad_cache_or_none
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = ["SimCSE"]


class SimCSE(Objective):
    name = "simcse"
    min_batch_size = 2  # in-batch contrastive: a sentence's negatives are the other sentences

    def __init__(
        self,
        encoder: Encoder,
        *,
        temperature: float = 0.05,
        mlp: bool = True,
        policy: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """policy: the text domain's augmentation policy; None is its default ("dropout":
        unsupervised SimCSE), "pair" is supervised SimCSE on pair columns (+ hard negatives).
        ``chunk_size`` encodes that many rows at a time with GradCache (dropout replayed exactly)."""
        super().__init__()
        self.encoder = encoder
        self.grad_cache = grad_cache_or_none(encoder, chunk_size)
        self.temperature = temperature
        self.policy = policy
        self.mlp = nn.Sequential(nn.Linear(encoder.dim, encoder.dim), nn.Tanh()) if mlp else nn.Identity()

    def view_requests(self) -> tuple[ViewRequest, ...]:
        if self.policy == "pair":
            return (ViewRequest("augmented", {"policy": "pair"}),)
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        inputs = views["views"]
        if not 2 <= len(inputs) <= 3:
            raise ValueError(f"SimCSE takes 2 views (or anchor, positive, hard negative), got {len(inputs)}")
        # one encoder call for every view (equal shapes), so the rows share nothing but the weights
        pooled = [self.mlp(features.pooled) for features in encode_views(self.grad_cache or self.encoder, inputs)]
        anchors, positives = pooled[0], pooled[1]
        hard_negatives = gather_with_grad(pooled[2]) if len(pooled) == 3 else None
        loss = info_nce(anchors, positives, negatives=hard_negatives, temperature=self.temperature)
        return ObjectiveOutput(loss=loss, logs={"hard_negatives": float(hard_negatives is not None)},
                               embeddings=(anchors, positives))
