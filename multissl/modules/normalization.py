"""Shuffling BN (MoCo, He et al. 2020, sec. 3.3): keep batch norm from leaking which key is the
query's positive.

With batch norm, a query and its positive key computed in the same sub-batch share batch
statistics, and the model can "cheat" the pretext task through them. MoCo shuffles the key batch
across GPUs before the key encoder and unshuffles after, so each key is normalised with a different
sub-batch than its query. Two pieces here:

* :func:`batch_shuffle` / :func:`batch_unshuffle`: the multi-process form. Gather every rank's rows,
  permute them with one permutation drawn on rank 0 and broadcast, hand each rank its slice; the
  inverse gathers again and puts every row back on the rank and position it came from.
* :class:`SplitBatchNorm`: the single-device form from the MoCo reference's single-GPU demo. Batch
  norm computes statistics over ``num_splits`` sub-batches separately, as ``num_splits`` GPUs would;
  combined with :func:`batch_shuffle` (a plain permutation on one process) it reproduces shuffle-BN
  on one device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from multissl import distributed

__all__ = ["SplitBatchNorm", "GlobalBatchNorm", "convert_to_global_batchnorm", "batch_shuffle", "batch_unshuffle"]


class SplitBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm with statistics computed per sub-batch: input ``[N, C, *]`` with ``N`` divisible
    by ``num_splits``; sub-batch ``k`` is rows ``[k N/S, (k+1) N/S)``, the rows GPU ``k`` would hold.

    Training: each sub-batch is normalised with its own mean and biased variance, with shared affine
    parameters; each running statistic moves towards the mean over sub-batches of their statistics
    (the same as averaging ``num_splits`` BN copies updated from the same running state, which is
    what the MoCo demo does). Evaluation: plain batch norm with the running statistics. A drop-in
    for ``nn.BatchNorm1d/2d/3d`` (``SplitBatchNorm(C, num_splits)`` accepts the same inputs).
    """

    def __init__(self, num_features: int, num_splits: int, **batch_norm_kwargs) -> None:
        super().__init__(num_features, **batch_norm_kwargs)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"SplitBatchNorm expects [N, C, *] input, got shape {tuple(input.shape)}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training or self.num_splits == 1:
            return super().forward(input)
        splits, rows, channels, rest = self.num_splits, input.shape[0], input.shape[1], input.shape[2:]
        if rows % splits:
            raise ValueError(f"batch of {rows} rows does not divide into num_splits={splits} sub-batches")
        # Sub-batches side by side along channels: [S, N/S, C, *] -> [N/S, S*C, *]; one batch_norm
        # call then normalises every (sub-batch, channel) pair with its own statistics.
        grouped = input.reshape(splits, rows // splits, channels, *rest).transpose(0, 1)
        grouped = grouped.reshape(rows // splits, splits * channels, *rest)
        factor = 0.0
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        running_mean = self.running_mean.repeat(splits) if self.track_running_stats else None
        running_var = self.running_var.repeat(splits) if self.track_running_stats else None
        out = F.batch_norm(
            grouped, running_mean, running_var,
            self.weight.repeat(splits) if self.affine else None,
            self.bias.repeat(splits) if self.affine else None,
            True, factor, self.eps,
        )
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.copy_(running_mean.view(splits, channels).mean(dim=0))
                self.running_var.copy_(running_var.view(splits, channels).mean(dim=0))
        out = out.reshape(rows // splits, splits, channels, *rest).transpose(0, 1)
        return out.reshape(rows, channels, *rest)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


def batch_shuffle(rows: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Shuffle the global batch across ranks; return this rank's shuffled rows and the inverse.

    ``rows`` ``[n_r, ...]`` on rank ``r`` (ranks may hold different ``n_r``). Returns ``shuffled``
    ``[n_r, ...]``, this rank's slice of ``global[permutation]``, and ``unshuffle_index`` ``[sum n_r]``
    (long), the inverse permutation, to pass to :func:`batch_unshuffle`. The permutation is drawn on
    rank 0 (from ``generator`` if given, on the rows' device) and broadcast, so all ranks agree.
    Every rank must call it (collectives). One process: a plain permutation of the rows.

    Gradients flow (through :func:`multissl.distributed.gather_with_grad`), though MoCo's key path
    runs under ``no_grad`` where nothing is recorded.
    """
    gathered = distributed.gather_with_grad(rows)
    total = gathered.shape[0]
    if distributed.rank() == 0:
        permutation = torch.randperm(total, generator=generator, device=generator.device if generator else rows.device)
        permutation = permutation.to(rows.device)
    else:
        permutation = torch.empty(total, dtype=torch.long, device=rows.device)
    if distributed.is_distributed():
        dist.broadcast(permutation, src=0)
    start = distributed.rank_offset(rows.shape[0], rows.device)
    shuffled = gathered[permutation[start : start + rows.shape[0]]]
    return shuffled, torch.argsort(permutation)


def batch_unshuffle(rows: Tensor, unshuffle_index: Tensor) -> Tensor:
    """Undo :func:`batch_shuffle`: ``rows`` is this rank's output for its shuffled rows; returns the
    outputs in this rank's original row order (output row ``i`` belongs to input row ``i``)."""
    gathered = distributed.gather_with_grad(rows)
    if gathered.shape[0] != unshuffle_index.shape[0]:
        raise ValueError(
            f"global batch of {gathered.shape[0]} rows does not match unshuffle_index of {unshuffle_index.shape[0]}"
        )
    start = distributed.rank_offset(rows.shape[0], rows.device)
    return gathered[unshuffle_index[start : start + rows.shape[0]].to(rows.device)]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics span the global batch of every process.

    SimCLR (Chen et al. 2020, sec. 2.3, "Global BN") and BYOL aggregate BN mean and variance over
    all devices: with per-device statistics a positive pair normalised on one device can use them
    as a shortcut, and the result would depend on how the batch is split. ``nn.SyncBatchNorm`` does
    this on GPUs only; this module does it on any device through
    :func:`multissl.distributed.all_reduce_sum_with_grad` (two passes: the mean, then the centred
    second moment, for accuracy in low precision), so N processes compute exactly what one process
    computes on the concatenated batch, gradients included. Without a process group, or in eval
    mode, it is plain batch norm. Input ``[N, C, *]``; running variance is unbiased, as in PyTorch.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects [N, C, *] input, got shape {tuple(input.shape)}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and distributed.is_distributed()):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.to(torch.promote_types(input.dtype, torch.float32))  # statistics in >= fp32
        count = distributed.all_reduce_sum(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = distributed.all_reduce_sum_with_grad(x.sum(dim=dims)) / count
        centred = x - mean.view(shape)
        var = distributed.all_reduce_sum_with_grad(centred.pow(2).sum(dim=dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (count / (count - 1).clamp_min(1.0))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), factor)
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` by :class:`GlobalBatchNorm` (weights and
    running statistics kept), like ``nn.SyncBatchNorm.convert_sync_batchnorm`` but on any device.
    :class:`SplitBatchNorm` layers are left alone: their per-split statistics are the point."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, (SplitBatchNorm, GlobalBatchNorm)):
        reference = module.weight if module.affine else module.running_mean
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
            device=reference.device if reference is not None else None,
            dtype=reference.dtype if reference is not None else None,
        )
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        replacement = convert_to_global_batchnorm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module
