"""GlobalBatchNorm: 2 processes compute what 1 process computes on the concatenated batch."""

from __future__ import annotations

import torch
from torch import nn

from multissl import distributed
from multissl.modules import GlobalBatchNorm, convert_to_global_batchnorm
from tests.dist import run_in_processes

SIZES = [5, 3]


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(sum(SIZES), 4, 3, 3, generator=g, dtype=torch.float64) * 2 + 1


def _reference_bn():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _distributed_run() -> dict:
    bn = convert_to_global_batchnorm(nn.Sequential(_reference_bn()))[0]
    rank = distributed.rank()
    start = sum(SIZES[:rank])
    x = _inputs()[start : start + SIZES[rank]].clone().requires_grad_(True)
    out = bn(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    distributed.global_mean((out * weights).flatten(1).sum(1)).backward()
    return {"out": out.detach(), "grad": x.grad / distributed.world_size(), "weight_grad": bn.weight.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var}


def test_single_process_equals_batchnorm():
    ref, converted = _reference_bn(), convert_to_global_batchnorm(nn.Sequential(_reference_bn()))[0]
    assert isinstance(converted, GlobalBatchNorm)
    x = _inputs()
    torch.testing.assert_close(converted(x), ref(x))
    torch.testing.assert_close(converted.running_var, ref.running_var)


def test_two_processes_equal_one_on_the_global_batch():
    bn = _reference_bn()
    x = _inputs().requires_grad_(True)
    out = bn(x)
    # the same per-row weighting the workers use, built per rank slice
    per_rank = [torch.linspace(-1, 1, SIZES[r] * 36, dtype=out.dtype).view(SIZES[r], 4, 3, 3) for r in range(2)]
    (out * torch.cat(per_rank)).flatten(1).sum(1).mean().backward()
    results = run_in_processes(_distributed_run)
    for rank, res in enumerate(results):
        start = sum(SIZES[:rank])
        rows = slice(start, start + SIZES[rank])
        torch.testing.assert_close(res["out"], out.detach()[rows])
        torch.testing.assert_close(res["grad"], x.grad[rows])
        torch.testing.assert_close(res["running_mean"], bn.running_mean)
        torch.testing.assert_close(res["running_var"], bn.running_var)
    # parameter gradients after DDP's average equal the single-process ones
    averaged = sum(res["weight_grad"] for res in results) / len(results)
    torch.testing.assert_close(averaged, bn.weight.grad)
