"""i-Mix (Lee, Zhu, Sohn, Li, Shin & Lee 2021, "i-Mix: A Domain-Agnostic Strategy for Contrastive
Representation Learning", arXiv:2010.08887; official code ``kibok90/imix``, method "npair"): the
N-pair / SimCLR-style contrastive loss with virtual labels mixed like the inputs.

Each sample is its own class (a one-hot virtual label over the batch). One view of every sample is
mixed with another sample's (the image domain's Mixup or CutMix view, per-sample partner and
coefficient); its label is mixed with the same coefficient; the other view stays clean:

    x~_i = lam_i x_i + (1 - lam_i) x_partner(i)          view 1, by the domain (lam = max(l, 1 - l),
                                                        l ~ Beta(alpha, alpha), alpha = 1)
    q = g(f(x~)), k = g(f(x'))                          one encoder and head call for both views
    loss = imix_info_nce(q, k, partner, lam, tau)        tau = 0.2

The head is the code's "mlpbn" (Linear, BN, ReLU, Linear, BN; the output BN here without affine
parameters); both views go through the encoder and head together (the code's ``cat([im_q, im_k])``),
so batch norm sees them together. The code's defaults are kept (CIFAR-10 N-pair: tau 0.2, alpha 1,
input-space mixing, one direction); its mixing at hidden layers (``mix_layers``), the MoCo and BYOL
variants and input mixing of several samples (``inputmix``) are not here.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from multissl.features import Encoder, encode_views
from multissl.losses import imix_info_nce
from multissl.modules import ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import PositiveFloat, PositiveInt
from multissl.views import ViewRequest

__all__ = ["IMix"]


class IMix(Objective):
    name = "imix"

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: PositiveInt = 128,
        hidden_dim: PositiveInt | None = None,
        temperature: PositiveFloat = 0.2,
        mix: Literal["mixup", "cutmix"] = "mixup",
        alpha: PositiveFloat = 1.0,
        policy: str | None = None,
    ) -> None:
        """``mix``: i-Mixup or i-CutMix (the domain's mixing view); ``alpha``: the Beta(alpha, alpha)
        of the coefficients; ``hidden_dim`` defaults to the encoder width; ``policy``: the domain's
        augmentation of both views before mixing."""
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.dim, hidden_dim or encoder.dim, projection_dim, num_layers=2,
                                   batch_norm=True, last_batch_norm=True)
        self.temperature, self.mix, self.alpha, self.policy = temperature, mix, alpha, policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        request = ViewRequest.augmented(self.policy, num_views=2)
        request.options.update(mix=self.mix, mix_alpha=self.alpha)
        return (request,)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        if views.get("mix_partner") is None:
            raise ValueError("imix needs a mixing view ('mix_partner', 'mix_lambda'): the image domain makes one")
        mixed, clean = (f.pooled for f in encode_views(self.encoder, views["views"][:2]))
        query, key = self.head(torch.cat([mixed, clean])).chunk(2)
        lam = views["mix_lambda"]
        loss = imix_info_nce(query, key, views["mix_partner"], lam, self.temperature)
        return ObjectiveOutput(loss=loss, logs={"mix_lambda": lam.float().mean().detach()}, embeddings=(query, key))
