"""A memory bank: one stored feature per training sample (Wu et al. 2018, "Unsupervised Feature
Learning via Non-Parametric Instance Discrimination", sec. 3.2), shared by instance
discrimination, PIRL and CMC.

Where MoCo's queue (:class:`multissl.modules.MomentumQueue`) holds the most recent keys, the bank
holds a row for every sample of the training set, addressed by its id (the views' "indices",
:mod:`multissl.views`), refreshed each time the sample is seen with momentum:
``v_i <- normalize(m v_i + (1 - m) f_i)`` (m = 0.5 in all three official codes). Scores against it
take m rows drawn uniformly at random as noise (:meth:`MemoryBank.sample`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl import distributed
from multissl.losses import cross_entropy_at_positives, memory_bank_nce

__all__ = ["MemoryBank", "uniform_draws", "sample_ids"]

_MASK31 = (1 << 31) - 1
# odd multipliers below 2^31: every product of two 31-bit values stays below 2^62 (no int64 overflow)
_MULTIPLIERS = (0x2C1B3C6D, 0x297A2D39, 0x1B873593, 0x68E31DA5)


def _hash31(values: Tensor) -> Tensor:
    """A 31-bit integer mixing function (xor-shift and multiply rounds) applied elementwise."""
    for multiplier in _MULTIPLIERS:
        values = ((values ^ (values >> 15)) * multiplier) & _MASK31
    return values ^ (values >> 16)


def uniform_draws(seed: int | Tensor, first_row: int, rows: int, count: int, high: int,
                  device: torch.device | str) -> Tensor:
    """Long[rows, count] uniform in {0, ..., high - 1}: rows ``first_row .. first_row + rows - 1`` of
    a stream identified by ``seed`` (0-d long tensor or int), each entry a hash of (seed, row, column).

    A counter-based stream: any rank computes exactly its own rows of the global batch's draws,
    on the device, without drawing (or holding) the other ranks' rows, so N processes draw what one
    process draws for the global batch. ``high`` below 2^31; the modulo's bias is below high / 2^31.
    """
    if not 1 <= high <= _MASK31:
        raise ValueError(f"high must be in [1, 2^31 - 1], got {high}")
    seed = torch.as_tensor(seed, dtype=torch.long, device=device)
    row = torch.arange(first_row, first_row + rows, dtype=torch.long, device=device)[:, None]
    column = torch.arange(count, dtype=torch.long, device=device)[None, :]
    key = _hash31(_hash31(seed & _MASK31) ^ (row & _MASK31))
    return _hash31(key ^ _hash31(column + 0x5BD1E995)) % high


class MemoryBank(nn.Module):
    """``size`` stored features of width ``dim``, one per training sample, exact under N processes.

    State (persistent buffers, so ``state_dict`` and ``accelerator.save_state`` carry it):

    * ``features`` ``[size, dim]`` float32: row i is sample i's feature. Initialised as the official
      codes (lemniscate, CMC) do, uniform in ``[-s, s]`` with ``s = 1 / sqrt(dim / 3)`` (rows of
      about unit norm, not normalised; ``normalize_init=True`` normalises them, as VISSL's PIRL),
      from a generator seeded with ``seed``: every rank builds the same bank without communication.
    * ``normalizer`` (0-d float32): NCE's constant partition function Z of the scores against this
      bank, 0 until :meth:`normalizer_from` sets it from the first batch (then fixed).
    * ``draws`` (0-d long): how many times :meth:`sample` drew noise; it seeds the next draw, so a
      resumed run draws the same noise as an uninterrupted one.

    Under N processes every rank holds the same bank: :meth:`update` gathers every rank's ids and
    features (rank order) and applies them as one process would the global batch, and
    :meth:`sample` gives each rank its own rows of the draws one process makes for the global batch.
    """

    features: Tensor
    normalizer: Tensor
    draws: Tensor

    def __init__(self, size: int, dim: int, momentum: float = 0.5, *, normalize_init: bool = False,
                 seed: int = 0) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be >= 1, got size={size}, dim={dim}")
        if size > _MASK31:
            raise ValueError(f"a bank holds at most 2^31 - 1 rows, got {size}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        bound = 1.0 / math.sqrt(dim / 3)
        initial = torch.rand(size, dim, generator=torch.Generator().manual_seed(seed)) * (2 * bound) - bound
        self.register_buffer("features", F.normalize(initial, dim=1) if normalize_init else initial)
        self.register_buffer("normalizer", torch.zeros(()))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self.momentum, self.seed = momentum, seed

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    @torch.no_grad()
    def sample(self, indices: Tensor, num_noise: int) -> Tensor:
        """Long[n, 1 + num_noise]: each of this rank's ``indices`` [n] (its own row, column 0), then
        ``num_noise`` rows drawn uniformly from the whole bank (with replacement; a row may be its
        own noise, as in the official codes). A collective: every rank must call it."""
        self._check_indices(indices)
        start = distributed.rank_offset(indices.shape[0], indices.device)
        noise = uniform_draws(self.draws * 1_000_003 + self.seed, start, indices.shape[0], num_noise, self.size,
                              indices.device)
        self.draws.add_(1)
        return torch.cat([indices.to(torch.long)[:, None], noise], dim=1)

    def scores(self, embeddings: Tensor, rows: Tensor, temperature: float) -> Tensor:
        """``[n, k]``: ``v_{rows[b, j]}^T embeddings[b] / temperature`` (float32; the bank's rows carry
        no gradient, the embeddings [n, dim] do). The embeddings are used as given: normalise them.

        The official codes gather the rows ([n, k, dim], 4 GB at 256 x 32,000 x 128) and multiply;
        where that is larger than a copy of the bank plus the scores of every row ([size, dim] +
        [n, size]), the drawn rows are picked from those instead (the same values, to float
        rounding). The copy is what backward reads, since :meth:`update` writes in place."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings must be [n, {self.dim}], got {tuple(embeddings.shape)}")
        n, k = rows.shape
        with torch.autocast(embeddings.device.type, enabled=False):
            anchors = embeddings.float() / temperature
            if self.size * (self.dim + n) <= n * k * self.dim:
                return (anchors @ self.features.clone().T).gather(1, rows)
            stored = self.features[rows.reshape(-1)].view(n, k, self.dim)
            return torch.einsum("nkd,nd->nk", stored, anchors)

    @torch.no_grad()
    def normalizer_from(self, scores: Tensor) -> Tensor:
        """NCE's Z, set once from the first scores against this bank (Wu et al. 2018, eq. 6):
        ``size * mean(exp(scores))`` over every entry of the global batch's scores (positives
        included, as lemniscate's ``out.mean() * outputSize``); later calls return it unchanged.
        A collective (one all-reduce of two numbers), with no host synchronisation."""
        exponentials = scores.detach().double().exp()
        totals = distributed.all_reduce_sum(torch.stack([exponentials.sum(), exponentials.new_tensor(scores.numel())]))
        estimate = (totals[0] / totals[1].clamp_min(1.0) * self.size).to(self.normalizer.dtype)
        self.normalizer.copy_(torch.where(self.normalizer > 0, self.normalizer, estimate))
        return self.normalizer.clone()

    @torch.no_grad()
    def update(self, embeddings: Tensor, indices: Tensor) -> None:
        """Gather every rank's ``embeddings`` [n, dim] and ``indices`` [n] and move each named row
        towards its embedding: ``v_i <- normalize(momentum * v_i + (1 - momentum) * f_i)``. A sample
        that appears twice in the global batch takes its last occurrence. A collective."""
        if embeddings.shape != (indices.shape[0], self.dim):
            raise ValueError(f"embeddings must be [{indices.shape[0]}, {self.dim}] for {indices.shape[0]} indices, "
                             f"got {tuple(embeddings.shape)}")
        ids = distributed.gather_no_grad(indices.to(torch.long))
        values = distributed.gather_no_grad(embeddings.detach().float())
        if ids.numel() == 0:
            return
        self._check_indices(ids)
        unique, inverse = torch.unique(ids, return_inverse=True)
        last = torch.zeros_like(unique).scatter_reduce_(0, inverse, torch.arange(ids.shape[0], device=ids.device),
                                                        reduce="amax", include_self=False)
        rows, values = ids[last], values[last].to(self.features.device)
        moved = self.momentum * self.features[rows] + (1.0 - self.momentum) * values
        self.features.index_copy_(0, rows, F.normalize(moved, dim=1))

    def loss(self, scores: Tensor, kind: str = "nce") -> Tensor:
        """The loss of ``scores`` [n, 1 + m] against this bank (column 0 the own row): "nce",
        :func:`~multissl.losses.memory_bank_nce` with this bank's Z (set from these scores the first
        time), or "softmax", the cross-entropy over the m + 1 sampled rows with the own row as the
        target (CMC's ``--softmax``, VISSL's ``cross_entropy``). Both are means over the global batch."""
        if kind == "nce":
            return memory_bank_nce(scores, self.size, self.normalizer_from(scores))
        if kind == "softmax":
            return cross_entropy_at_positives(scores.clone(), scores.new_zeros(scores.shape[0], dtype=torch.long))
        raise ValueError(f"memory-bank loss must be 'nce' or 'softmax', got {kind!r}")

    def _check_indices(self, indices: Tensor) -> None:
        if indices.dim() != 1 or indices.is_floating_point():
            raise ValueError(f"indices must be an integer [n] tensor, got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.size):
            raise ValueError(
                f"sample ids {int(indices.min())}..{int(indices.max())} do not fit a memory bank of {self.size} rows: "
                "set the objective's bank_size to the number of training rows (at least the largest id + 1)"
            )

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, momentum={self.momentum}"


def sample_ids(views: dict, method: str) -> Tensor:
    """The views' sample ids ("indices" Long[B]), or an error saying why ``method`` needs them."""
    if views.get("indices") is None:
        raise ValueError(f"{method} indexes its memory bank by sample id, and these views carry no 'indices': "
                         "load the rows through the domain (its load numbers them as row_index)")
    return views["indices"]
