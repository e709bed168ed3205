"""MoCo's dictionary of negative keys as a first-in-first-out queue (He et al. 2020, sec. 3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl import distributed

__all__ = ["MomentumQueue"]


class MomentumQueue(nn.Module):
    """A ring buffer of the ``size`` most recent keys, each ``[dim]``, shared by all ranks.

    State (all persistent buffers, so ``state_dict`` and ``accelerator.save_state`` carry it and a
    resumed run sees the same negatives):

    * ``keys`` ``[size, dim]``: the queue. MoCo stores it transposed (``[dim, size]``); rows are
      what ``q @ keys.T`` wants.
    * ``pointer`` (0-d long): the row the next key is written to.
    * ``total_enqueued`` (0-d long): how many keys were ever enqueued, so an objective can tell the
      rows still holding their initial random values (``total_enqueued < size``) and ignore them if
      it chooses (:meth:`negatives` with ``filled_only=True``). MoCo itself uses them.

    Initial rows are random unit vectors, as in MoCo: an uninformative set of negatives with the
    same norm as real (L2-normalised) keys, so the first steps' logits are on the scale of the
    later ones and nothing divides by a zero norm. They are drawn from a generator seeded with
    ``seed`` so that every rank builds the same queue without communication and the global random
    stream is left untouched.

    :meth:`enqueue` all-gathers the keys of every rank (rank order, rows in order) and writes them
    in that order, so every rank holds the same queue, equal to the queue one process would hold
    after enqueueing the concatenated global batch. Batches need not divide ``size`` (MoCo asserts
    they do): writes wrap around, and a global batch longer than the queue leaves its last ``size``
    keys. Keys are stored in the queue's dtype (float32 by default) whatever autocast produced.
    A non-finite key is not checked for here (it would cost a device sync every step): the same
    key is the positive of this step's loss, which shows it first.
    """

    keys: Tensor
    pointer: Tensor
    total_enqueued: Tensor

    def __init__(self, size: int, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be >= 1, got size={size}, dim={dim}")
        initial = torch.randn(size, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.register_buffer("keys", F.normalize(initial, dim=1).to(dtype))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_enqueued", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def dim(self) -> int:
        return self.keys.shape[1]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Gather ``keys`` ``[n, dim]`` from every rank and write them after the newest key.

        Must be called by every rank (it is a collective), with any ``n >= 0`` per rank.
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim or not keys.is_floating_point():
            raise ValueError(
                f"keys must be a floating [n, {self.dim}] tensor, got {keys.dtype} {tuple(keys.shape)}"
            )
        gathered = distributed.gather_no_grad(keys).to(device=self.keys.device, dtype=self.keys.dtype)
        count = gathered.shape[0]
        if count == 0:
            return
        slots = (self.pointer + torch.arange(count, device=self.keys.device)) % self.size
        # Only the last `size` keys survive a batch longer than the queue; keeping them alone makes
        # the slots unique, so the scatter is deterministic.
        self.keys.index_copy_(0, slots[-self.size :], gathered[-self.size :])
        self.pointer.copy_((self.pointer + count) % self.size)
        self.total_enqueued.add_(count)

    def negatives(self, filled_only: bool = False) -> Tensor:
        """A detached copy of the queue ``[size, dim]`` (or ``[min(total_enqueued, size), dim]``).

        A copy, as MoCo's ``queue.clone().detach()``: ``enqueue`` writes in place, which would
        corrupt a logits matmul that autograd saved the queue for. ``filled_only`` drops the rows
        still holding their random initial values (rows are written from 0 upwards, so those are
        the tail); it reads ``total_enqueued`` on the host, a device sync.
        """
        rows = self.size if not filled_only else min(int(self.total_enqueued), self.size)
        return self.keys[:rows].clone()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
