"""multissl.modules under two real gloo processes: the MoCo queue and shuffle-BN's batch shuffle.

One spawn runs every check (each start costs seconds of imports)."""

from __future__ import annotations

import pytest
import torch

from multissl import distributed
from multissl.modules import MomentumQueue, batch_shuffle, batch_unshuffle
from tests.dist import run_in_processes

QUEUE_SIZE, DIM = 10, 4
# per step, rows on rank 0 and rank 1: unequal, not dividing the queue, one longer than it
ENQUEUE_SIZES = [(3, 5), (4, 4), (6, 2), (0, 3), (9, 8)]
SHUFFLE_SIZES = (4, 6)


def _global_keys(step: int) -> torch.Tensor:
    return torch.randn(sum(ENQUEUE_SIZES[step]), DIM, generator=torch.Generator().manual_seed(100 + step))


def _global_rows() -> torch.Tensor:
    total = sum(SHUFFLE_SIZES)
    return torch.stack([torch.arange(total, dtype=torch.float64), -torch.arange(total, dtype=torch.float64)], dim=1)


def _on_each_rank() -> dict:
    rank = distributed.rank()
    queue = MomentumQueue(QUEUE_SIZE, DIM)
    queue_states = []
    for step, sizes in enumerate(ENQUEUE_SIZES):
        start = sum(sizes[:rank])
        queue.enqueue(_global_keys(step)[start : start + sizes[rank]])
        queue_states.append({k: v.clone() for k, v in queue.state_dict().items()})

    start = sum(SHUFFLE_SIZES[:rank])
    local = _global_rows()[start : start + SHUFFLE_SIZES[rank]].clone().requires_grad_(True)
    # only rank 0's generator matters: the others' must be ignored, so give them another seed
    shuffled, unshuffle_index = batch_shuffle(local, generator=torch.Generator().manual_seed(11 + rank))
    restored = batch_unshuffle(shuffled * 3.0, unshuffle_index)
    # a loss that weighs each shuffled row by its global position (rank offset + row)
    positions = torch.arange(start, start + SHUFFLE_SIZES[rank], dtype=torch.float64)[:, None]
    (shuffled * positions).sum().backward()
    return {
        "queue_states": queue_states,
        "shuffled": shuffled.detach(),
        "unshuffle_index": unshuffle_index,
        "restored": restored.detach(),
        "local": local.detach(),
        "grad": local.grad,
    }


@pytest.mark.distributed
def test_queue_and_batch_shuffle_under_two_processes():
    results = run_in_processes(_on_each_rank)

    # queue: both ranks equal one process enqueueing the concatenated global keys
    reference = MomentumQueue(QUEUE_SIZE, DIM)
    for step in range(len(ENQUEUE_SIZES)):
        reference.enqueue(_global_keys(step))
        for result in results:
            for name, value in reference.state_dict().items():
                assert torch.equal(result["queue_states"][step][name], value), (step, name)
    assert int(reference.total_enqueued) == sum(map(sum, ENQUEUE_SIZES))

    # shuffle: one permutation shared by both ranks, rows really cross ranks, unshuffle restores
    rows = _global_rows()
    index_0, index_1 = results[0]["unshuffle_index"], results[1]["unshuffle_index"]
    assert torch.equal(index_0, index_1)
    permutation = torch.argsort(index_0)
    assert torch.equal(torch.cat([r["shuffled"] for r in results]), rows[permutation])
    rank_of_source = [0 if int(source) < SHUFFLE_SIZES[0] else 1 for source in permutation]
    assert 1 in rank_of_source[: SHUFFLE_SIZES[0]] and 0 in rank_of_source[SHUFFLE_SIZES[0] :]
    for result in results:
        assert torch.equal(result["restored"], result["local"] * 3.0)

    # gradient: global row i sits at global position unshuffle_index[i]
    grads = torch.cat([r["grad"] for r in results])
    assert torch.equal(grads, index_0.double()[:, None].expand(-1, 2))
