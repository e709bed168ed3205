"""multissl.distributed against one process: values and gradients, equal and unequal row counts."""

from __future__ import annotations

import torch

from multissl import distributed
from tests.dist import run_in_processes


def _global_inputs(sizes: list[int]) -> torch.Tensor:
    return torch.randn(sum(sizes), 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def _gather_and_mean(sizes: list[int]) -> dict:
    rank = distributed.rank()
    full = _global_inputs(sizes)
    start = sum(sizes[:rank])
    local = full[start : start + sizes[rank]].clone().requires_grad_(True)
    gathered = distributed.gather_with_grad(local)
    # a loss where every row of the global batch meets every local row
    terms = (local @ gathered.T).pow(2).sum(dim=1)
    loss = distributed.global_mean(terms)
    loss.backward()
    return {
        "gathered": gathered.detach(),
        "loss": loss.detach(),
        "grad": local.grad / distributed.world_size(),  # what DDP's averaging makes of it
        "offset": torch.tensor(distributed.rank_offset(sizes[rank])),
    }


def _reference(sizes: list[int]) -> dict:
    full = _global_inputs(sizes).requires_grad_(True)
    loss = (full @ full.T).pow(2).sum(dim=1).mean()
    loss.backward()
    return {"loss": loss.detach(), "grad": full.grad}


def test_single_process_is_identity():
    x = torch.randn(4, 3)
    assert distributed.gather_with_grad(x) is x
    assert distributed.world_size() == 1 and distributed.rank() == 0
    torch.testing.assert_close(distributed.global_mean(torch.arange(4.0)), torch.tensor(1.5))


def test_two_processes_match_one_equal_and_unequal_sizes():
    for sizes in ([3, 3], [4, 2]):
        ref = _reference(sizes)
        results = run_in_processes(_gather_and_mean, sizes)
        full = _global_inputs(sizes)
        for rank, res in enumerate(results):
            start = sum(sizes[:rank])
            torch.testing.assert_close(res["gathered"], full)
            torch.testing.assert_close(res["loss"], ref["loss"])
            torch.testing.assert_close(res["grad"], ref["grad"][start : start + sizes[rank]])
            assert int(res["offset"]) == start
