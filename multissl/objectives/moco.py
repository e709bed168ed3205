"""Momentum Contrast: MoCo v2 (a queue of negatives) and MoCo v3 (in-batch negatives, a predictor).

He, Fan, Wu, Xie, Girshick 2020 ("MoCo", arXiv:1911.05722); Chen, Fan, Girshick, He 2020 ("MoCo
v2", arXiv:2003.04297: MLP head, stronger augmentation, temperature 0.2); Chen, Xie, He 2021
("MoCo v3", arXiv:2104.02057). Both work on any domain that makes ``augmented`` views.

Both train a query network (encoder + projection head) by gradient and its momentum copy, the key
network, by EMA after each step (:class:`multissl.modules.MomentumEncoder`).
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl import distributed
from multissl.features import Encoder
from multissl.losses import info_nce
from multissl.losses.contrastive import check_hard_negatives
from multissl.modules import (MomentumQueue, ProjectionHead, SplitBatchNorm, batch_shuffle, batch_unshuffle,
                              mix_hard_negatives)
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules import positive_accuracy
from multissl.modules import MomentumEncoder, ProjectedEncoder
from multissl.options import NonNegativeFloat, NonNegativeInt, Range
from multissl.views import ViewRequest

__all__ = ["MoCoV2", "MoCoV3"]


class _MomentumContrast(Objective):
    """What MoCo v2 and v3 share: the query network, its momentum key network, two views."""

    def __init__(self, encoder: Encoder, head: nn.Module, momentum: float, final_momentum: float | None,
                 temperature: float, policy: str | None) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.query_network = ProjectedEncoder(encoder, head)
        self.key_network = MomentumEncoder(self.query_network, momentum, final_momentum)
        self.temperature, self.policy = temperature, policy

    @property
    def encoder(self) -> Encoder:
        return self.query_network.encoder

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.key_network.follow(self.query_network, step, total_steps)


class MoCoV2(_MomentumContrast):
    """MoCo v2: queries against their momentum keys and a queue of past keys.

        q = normalize(g(f(x1)))                      query network, by gradient
        k = normalize(g'(f'(x2)))                    key network = EMA of (f, g), no gradient
        loss = info_nce(q, k, negatives=queue, temperature=0.2)   (MoCo eq. 1; in-batch keys of
                                                     the global batch are negatives too, see below)
        queue.enqueue(k)                             after the loss: FIFO of ``queue_size`` keys

    Shapes: views [B, ...] -> q, k [B, projection_dim]; queue [queue_size, projection_dim].
    The head is MoCo v2's 2-layer MLP without batch norm (encoder.dim -> hidden -> 128). The reference
    scores each query against its own key and the queue only; :func:`info_nce` also scores it
    against the other keys of the global batch: B - 1 negatives beside K = 65,536 that the
    reference meets one step later, from the queue. That keeps one InfoNCE kernel for the toolkit.

    ``symmetric=True`` adds the swapped pair, ``loss = ctr(q1, k2) + ctr(q2, k1)`` (a sum, as the
    MoCo CIFAR-10 demo and MoCo v3 do), against the same queue, and enqueues both views' keys.

    Shuffling BN (MoCo sec. 3.3), on by default, applies only when the key network has batch norm
    (a ResNet; ConvNeXt, ViT, wav2vec2 and BERT have none, and neither has the head): the key batch
    is permuted across every process before the key network and restored after
    (:func:`batch_shuffle`), and each process's key batch is further normalised in
    ``split_batchnorm_splits`` sub-batches (:class:`SplitBatchNorm`, the MoCo single-GPU demo's
    way). So each key is normalised with a random sub-batch, not the one its query was normalised
    in, and BN cannot leak which key is the positive. The default of 2 splits makes this hold on one
    process (where a permutation alone changes nothing: BN over a whole batch is permutation
    invariant); under several processes the shuffle alone suffices, and ``split_batchnorm_splits=1``
    there is exactly the paper's per-GPU setting. Each process's key batch (2B when symmetric) must
    divide into the splits.

    **Hard negatives** (options, off by default). ``tau_plus`` / ``beta``: the debiased contrastive
    loss (Chuang et al. 2020) and hard-negative reweighting (Robinson et al. 2021) over the queue
    and batch negatives (:func:`multissl.losses.cross_entropy_at_positives`). MoCHi (Kalantidis
    et al. 2020; :func:`multissl.modules.mix_hard_negatives`): ``mochi_hardest`` (N),
    ``mochi_pairs`` (s) and ``mochi_query_mixes`` (s') add, per query, s mixtures of two of its N
    hardest queue negatives and s' mixtures of the query with one of them, as extra negatives of
    that query only (ImageNet-1k in the paper: N = 1024, s = 1024, s' = 128; set s = s' = 0 to
    turn MoCHi off). Their random draws follow (``mochi_seed``, step), so a resumed run and N
    processes draw what one uninterrupted process does. Mixing starts at the first step.
    """

    name = "moco_v2"

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        queue_size: int = 65_536,
        temperature: float = 0.2,
        momentum: float = 0.999,
        final_momentum: float | None = None,
        symmetric: bool = False,
        shuffle_batchnorm: bool = True,
        split_batchnorm_splits: int = 2,
        policy: str | None = None,
        tau_plus: Annotated[float, Range(0, 1)] = 0.0,
        beta: NonNegativeFloat = 0.0,
        mochi_hardest: NonNegativeInt = 0,
        mochi_pairs: NonNegativeInt = 0,
        mochi_query_mixes: NonNegativeInt = 0,
        mochi_seed: int = 0,
    ) -> None:
        """hidden_dim defaults to the encoder width (2048 for ResNet-50, MoCo v2's head);
        ``final_momentum`` (e.g. 1.0) turns on the cosine momentum schedule; ``policy`` names the
        domain's augmentation policy (None: the domain's default). ``tau_plus`` / ``beta``: the
        debiased and hard-negative estimators (class doc); ``mochi_*``: MoCHi (N, s, s')."""
        if split_batchnorm_splits < 1:
            raise ValueError(f"split_batchnorm_splits must be >= 1, got {split_batchnorm_splits}")
        check_hard_negatives(tau_plus, beta, -1.0)
        if (mochi_pairs or mochi_query_mixes) and not 1 <= mochi_hardest <= queue_size:
            raise ValueError(f"MoCHi mixes the mochi_hardest negatives of the queue: set it in [1, queue_size="
                             f"{queue_size}], got {mochi_hardest}")
        head = ProjectionHead(encoder.dim, hidden_dim or encoder.dim, projection_dim, num_layers=2, batch_norm=False)
        super().__init__(encoder, head, momentum, final_momentum, temperature, policy)
        self.queue = MomentumQueue(queue_size, projection_dim)
        self.symmetric = symmetric
        self.tau_plus, self.beta = tau_plus, beta
        self.mochi = (mochi_hardest, mochi_pairs, mochi_query_mixes) if mochi_pairs or mochi_query_mixes else None
        self.mochi_seed = mochi_seed
        if self.mochi is not None:  # the draws follow the step, which a resume must restore
            self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.shuffle_batchnorm = shuffle_batchnorm and _has_batchnorm(self.key_network)
        self.split_batchnorm_splits = split_batchnorm_splits if self.shuffle_batchnorm else 1
        if self.shuffle_batchnorm:
            _use_split_batchnorm(self.key_network, split_batchnorm_splits)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        first, second = views["views"][:2]
        query_views, key_views = ([first, second], [second, first]) if self.symmetric else ([first], [second])
        queries = self.query_network(query_views)
        keys = self._keys(key_views)
        negatives = self.queue.negatives()
        loss = sum(info_nce(q, k, negatives=negatives, temperature=self.temperature, tau_plus=self.tau_plus,
                            beta=self.beta, query_negatives=self._synthetic_negatives(q, negatives, view))
                   for view, (q, k) in enumerate(zip(queries, keys)))
        self.queue.enqueue(torch.cat(keys))
        logs = {
            "positive_accuracy": positive_accuracy(queries[0], keys[0], negatives),
            "queue_fill": self.queue.total_enqueued.clamp(max=self.queue.size).float() / self.queue.size,
            "momentum": self.key_network.momentum.clone(),
        }
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(queries[0], keys[0]))

    def _synthetic_negatives(self, queries: Tensor, queue: Tensor, view: int) -> Tensor | None:
        """MoCHi's mixed hard negatives of these queries, drawn from (seed, step, view) for every
        row of the global batch (the same on one process and N)."""
        if self.mochi is None:
            return None
        rows = distributed.local_sizes(queries.shape[0], queries.device)
        generator = torch.Generator().manual_seed(
            (self.mochi_seed * 1_000_003 + int(self.steps_done)) * 2 + view)
        return mix_hard_negatives(queries, queue, *self.mochi, generator,
                                  row_offset=sum(rows[: distributed.rank()]), total_rows=sum(rows))

    def on_step_end(self, step: int, total_steps: int) -> None:
        super().on_step_end(step, total_steps)
        if self.mochi is not None:
            self.steps_done.fill_(step)

    @torch.no_grad()
    def _keys(self, views: list[dict[str, Any]]) -> list[Tensor]:
        """Unit keys ``[B, projection_dim]`` per view, with shuffling BN when it applies."""
        if not self.shuffle_batchnorm:
            return [F.normalize(k, dim=1) for k in self.key_network(views)]
        merged = {name: torch.cat([v[name] for v in views]) for name in views[0]}
        reference = next(iter(merged.values()))
        rows = reference.shape[0]
        if rows % self.split_batchnorm_splits:
            raise ValueError(
                f"moco_v2 (shuffling BN) normalises each process's key batch in split_batchnorm_splits="
                f"{self.split_batchnorm_splits} equal sub-batches, but this process holds {rows} keys: "
                "choose a per-process batch size (doubled when symmetric) divisible by it, or change the option"
            )
        # Shuffle global row ids, then fetch the inputs those ids name: one permutation for every
        # input tensor (pixels, or waveforms and their attention mask).
        start = distributed.rank_offset(rows, reference.device)
        order, unshuffle_index = batch_shuffle(start + torch.arange(rows, device=reference.device))
        shuffled = {name: distributed.gather_no_grad(value)[order] for name, value in merged.items()}
        keys = batch_unshuffle(self.key_network([shuffled])[0], unshuffle_index)
        return list(F.normalize(keys, dim=1).chunk(len(views)))


class MoCoV3(_MomentumContrast):
    """MoCo v3: symmetrised in-batch InfoNCE between the query network (+ predictor) and the keys.

        q1, q2 = predictor(g(f(x1))), predictor(g(f(x2)))     query side, by gradient
        k1, k2 = g'(f'(x1)), g'(f'(x2))                       key network = EMA of (f, g)
        loss = 2 * tau * (ctr(q1, k2) + ctr(q2, k1))           ctr = info_nce, keys of the global
                                                             batch as candidates (no queue)

    This is Algorithm 1 and ``builder.py`` of the paper; the ``2 * tau`` factor offsets the 1 / tau
    the logits put on the gradient. tau = 0.2, the value of the paper's ViT runs (the reference
    code's default, used for its ResNet-50 runs, is 1.0). The projector is 3 layers
    (``projection_layers``, 4096 -> 256) and the predictor 2 layers (4096 -> 256), with batch norm
    after every layer, the output BNs without affine parameters, as the paper states ("all layers in
    both MLPs have BN") and its ViT builder does (its ResNet builder uses a 2-layer projector and no
    BN on the predictor's output). The momentum follows a cosine schedule from 0.99 to 1.
    Shapes: views [B, ...] -> q, k [B, projection_dim].

    Unlike the reference (one call per view), both views go through each network in one call, so
    batch norm normalises them together; with in-batch negatives only, every candidate shares those
    statistics, so they carry no shortcut to the positive.
    """

    name = "moco_v3"
    min_batch_size = 2  # in-batch contrastive: keys of the other rows are the negatives (no queue)

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 256,
        hidden_dim: int = 4096,
        projection_layers: int = 3,
        temperature: float = 0.2,
        momentum: float = 0.99,
        final_momentum: float | None = 1.0,
        policy: str | None = None,
    ) -> None:
        head = ProjectionHead(encoder.dim, hidden_dim, projection_dim, num_layers=projection_layers,
                              batch_norm=True, last_batch_norm=True)
        super().__init__(encoder, head, momentum, final_momentum, temperature, policy)
        self.predictor = ProjectionHead(projection_dim, hidden_dim, projection_dim, num_layers=2,
                                        batch_norm=True, last_batch_norm=True)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        pair = views["views"][:2]
        q1, q2 = self.predictor(torch.cat(self.query_network(pair))).chunk(2)
        k1, k2 = self.key_network(pair)
        contrast = info_nce(q1, k2, temperature=self.temperature) + info_nce(q2, k1, temperature=self.temperature)
        logs = {"positive_accuracy": positive_accuracy(q1, k2), "momentum": self.key_network.momentum.clone()}
        return ObjectiveOutput(loss=2 * self.temperature * contrast, logs=logs, embeddings=(q1, k2))


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _use_split_batchnorm(module: nn.Module, num_splits: int) -> None:
    """Replace every batch norm inside ``module`` by a :class:`SplitBatchNorm` with the same weights
    and running statistics (the key network of the MoCo single-GPU demo). Parameter and buffer
    names are unchanged, so the EMA update still pairs them with the query network's."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SplitBatchNorm):
            split = SplitBatchNorm(child.num_features, num_splits, eps=child.eps, momentum=child.momentum,
                                   affine=child.affine, track_running_stats=child.track_running_stats)
            split.load_state_dict(child.state_dict())
            reference = next(iter(child.state_dict().values()), None)
            if reference is not None:
                split.to(reference.device)
            split.requires_grad_(False).train(child.training)
            setattr(module, name, split)
        else:
            _use_split_batchnorm(child, num_splits)
