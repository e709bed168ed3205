"""SimCLR: a simple framework for contrastive learning of visual representations.

Chen, Kornblith, Norouzi, Hinton 2020 ("SimCLR", Algorithm 1), with the deeper projection head of
Chen, Kornblith, Swersky, Norouzi, Hinton 2020 ("SimCLRv2": 3 layers, fine-tune from the middle).
Works on any domain that makes ``augmented`` views.

    x -> two augmented views -> encoder f -> h (pooled) -> head g -> z -> nt_xent(z1, z2)

Hard negatives (options): ``tau_plus`` turns NT-Xent into the debiased contrastive loss (Chuang et
al. 2020) and ``beta`` reweights the negatives by hardness (Robinson et al. 2021); both papers'
code is this SimCLR setting (2N - 2 negatives per anchor).

SimCLRv2 fine-tunes from the middle of its 3-layer head rather than from h (section 2.2):
:meth:`SimCLR.encoder_with_head` gives that network (f then the first k head layers) as an
``Encoder``, which ``multissl.probes.fine_tune`` (or any probe) takes as it is.
"""

from __future__ import annotations

from typing import Annotated

import torch

from multissl.features import Encoder, encode_views
from multissl.losses import nt_xent
from multissl.losses.contrastive import check_hard_negatives
from multissl.modules import ProjectionHead, grad_cache_or_none
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import NonNegativeFloat, Range
from multissl.teacher import HeadedEncoder
from multissl.views import ViewRequest


class SimCLR(Objective):
    name = "simclr"
    min_batch_size = 2  # in-batch contrastive: a row's negatives are the other rows (1 row: loss exactly 0)

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        head_layers: int = 2,
        temperature: float = 0.5,
        policy: str | None = None,
        chunk_size: int | None = None,
        tau_plus: Annotated[float, Range(0, 1)] = 0.0,
        beta: NonNegativeFloat = 0.0,
    ) -> None:
        """head_layers=2 is SimCLR's head, 3 SimCLRv2's; hidden_dim defaults to the encoder width;
        ``policy`` names the domain's augmentation policy (None: the domain's default);
        ``chunk_size`` encodes that many rows at a time with GradCache (memory-bound batches).
        ``tau_plus`` > 0: the debiased contrastive loss (Chuang et al. 2020; their CIFAR-10 runs use
        0.1); ``beta`` > 0: hard-negative reweighting (Robinson et al. 2021; 0.5 to 1 on CIFAR-10,
        with tau_plus 0.1); see :func:`multissl.losses.cross_entropy_at_positives`."""
        super().__init__()
        check_hard_negatives(tau_plus, beta, -1.0)
        self.tau_plus, self.beta = tau_plus, beta
        self.encoder = encoder
        self.grad_cache = grad_cache_or_none(encoder, chunk_size)
        # BN on every layer, the output's with a scale and no shift: both official codebases
        # (the paper's appendix leaves the output BN out; its code has it)
        self.head = ProjectionHead(encoder.dim, hidden_dim or encoder.dim, projection_dim, num_layers=head_layers,
                                   last_batch_norm=True, last_norm_scale=True)
        self.temperature = temperature
        self.policy = policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views) -> ObjectiveOutput:
        first, second = (features.pooled for features in encode_views(self.grad_cache or self.encoder, views["views"][:2]))
        # one head call on both views, so its batch norm sees them together (as the reference)
        z1, z2 = self.head(torch.cat([first, second])).chunk(2)
        loss = nt_xent(z1, z2, temperature=self.temperature, tau_plus=self.tau_plus, beta=self.beta)
        return ObjectiveOutput(loss=loss, logs={"temperature": self.temperature}, embeddings=(z1, z2))

    def encoder_with_head(self, up_to: int = 1) -> HeadedEncoder:
        """f followed by the first ``up_to`` head layers, sharing their weights (SimCLRv2's
        fine-tuning network: ``up_to=1`` of the 3-layer head is the paper's choice). Saved with
        :func:`multissl.teacher.save_teacher`, it loads back as the same network."""
        return HeadedEncoder(self.encoder, self.head, up_to)
