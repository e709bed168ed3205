"""Collectives that keep contrastive and batch-statistic losses exact under data parallelism.

The convention every loss in :mod:`multissl.losses` follows under ``N`` processes:

* **Value.** Each rank returns the value one process would compute on the concatenated global
  batch (ranks ordered by rank, rows in order within a rank).
* **Gradient.** Each rank's backward produces ``N x`` the gradient of that global loss with
  respect to its own rows. DistributedDataParallel averages parameter gradients over the ``N``
  ranks, so after its all-reduce the parameter gradients equal the single-process ones exactly.

Two pieces make this work (the open_clip "gather with grad, local loss" scheme):

* :func:`gather_with_grad` concatenates every rank's rows; its backward *sums* the incoming
  gradients over ranks and hands each rank its own slice, because every rank's loss depends on
  every rank's rows.
* :func:`global_mean` turns this rank's per-row loss terms into the global mean: value exact on
  every rank, gradient scaled by ``N / global_rows`` so that unequal per-rank batch sizes (a last
  short batch, a skipped bad sample) still average correctly.

``accelerate``'s ``gather`` carries no gradient; never use it for negatives.
Every function here is the identity (or the plain reduction) when no process group is running.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "is_distributed",
    "world_size",
    "rank",
    "gather_with_grad",
    "gather_no_grad",
    "all_reduce_sum_with_grad",
    "all_reduce_sum",
    "global_mean",
    "rank_offset",
    "local_sizes",
]


def is_distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_sizes(rows: int, device: torch.device | None = None) -> list[int]:
    """The number of rows every rank holds, in rank order (one small all-gather)."""
    if not is_distributed():
        return [rows]
    size = torch.tensor([rows], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def rank_offset(rows: int, device: torch.device | None = None) -> int:
    """Index of this rank's first row in the global batch: where its positives start."""
    return sum(local_sizes(rows, device)[: rank()])


def _gather_padded(tensor: Tensor, sizes: list[int]) -> Tensor:
    """All-gather along dim 0 when ranks may hold different numbers of rows."""
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad])
    chunks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded.contiguous())
    return torch.cat([chunk[:size] for chunk, size in zip(chunks, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        sizes = local_sizes(tensor.shape[0], tensor.device)
        ctx.sizes = sizes
        return _gather_padded(tensor, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        # Every rank's loss saw every rank's rows: sum their gradients, keep our slice.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: rank()])
        return grad[start : start + ctx.sizes[rank()]]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` [n_r, ...] from every rank into [sum n_r, ...], keeping gradients.

    Ranks may hold different row counts. Backward sums the gradient over ranks and returns this
    rank's slice. Identity without a process group.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def gather_no_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every rank without gradient (queue updates, evaluation)."""
    if not is_distributed():
        return tensor
    return _gather_padded(tensor.detach(), local_sizes(tensor.shape[0], tensor.device))


class _AllReduceSumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        out = tensor.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        # d(sum_r x_r)/dx_q = I, and every rank's loss used the sum: add their gradients.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum_with_grad(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks (batch statistics: Barlow Twins, VICReg), differentiably."""
    if not is_distributed():
        return tensor
    return _AllReduceSumWithGrad.apply(tensor)


@torch.no_grad()
def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks without gradient; returns a new tensor."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def global_mean(local_terms: Tensor) -> Tensor:
    """Mean of per-row loss terms over the global batch.

    ``local_terms`` holds this rank's per-row terms (any shape; every element is one row). The
    result has the global mean as its value on every rank, and as gradient
    ``world_size / global_rows`` times the gradient of this rank's sum, which DDP's averaging
    turns into the exact gradient of the global mean.
    """
    local_sum = local_terms.sum()
    if not is_distributed():
        return local_sum / max(local_terms.numel(), 1)
    counts = all_reduce_sum(torch.tensor(float(local_terms.numel()), device=local_sum.device))
    scaled = local_sum * (world_size() / counts.clamp_min(1.0))
    exact = all_reduce_sum(local_sum) / counts.clamp_min(1.0)
    return scaled + (exact - scaled).detach()
