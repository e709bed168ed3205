"""Two real gloo processes against one process on the concatenated batch.

For every loss of the similarity / redundancy / metric / reconstruction group: each rank's value
must equal the single-process value on the global batch, and each rank's input gradient divided by
world_size (what DDP's averaging makes of it) must equal the matching rows of the single-process
gradient. Ranks hold unequal row counts (5 and 3) and, for the masked losses, different numbers of
masked positions, one of them none. Everything runs in ONE spawn: starting processes costs seconds.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from multissl import distributed
from multissl.losses import (
    barlow_twins,
    byol,
    contrastive_pair,
    distillation,
    lifted_structured,
    masked_reconstruction,
    masked_token_cross_entropy,
    n_pair,
    nce,
    simsiam,
    triplet,
    vicreg,
)
from tests.dist import run_in_processes

SIZES = [5, 3]
ROWS = sum(SIZES)

Take = Callable[[torch.Tensor], torch.Tensor]  # the rows of a global tensor this process holds


def _global(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(ROWS, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _leaf(take: Take, tensor: torch.Tensor) -> torch.Tensor:
    return take(tensor).clone().requires_grad_(True)


def _patch_mask(rank1_masked: int, seed: int) -> torch.Tensor:
    """[ROWS, 6] mask: rank 0's rows about 60 % masked, rank 1's rows exactly ``rank1_masked`` patches."""
    mask = torch.rand(ROWS, 6, generator=torch.Generator().manual_seed(seed)) < 0.6
    mask[0, 0] = True
    mask[SIZES[0] :] = False
    mask[SIZES[0] :].view(-1)[:rank1_masked] = True
    return mask


# Each case maps `take` to (loss, the leaves whose gradients are compared).


def _barlow_twins(take):
    z1, z2 = _leaf(take, _global(4, seed=1) * 2 + 1), _leaf(take, _global(4, seed=2))
    return barlow_twins(z1, z2, lambd=0.1), [z1, z2]


def _vicreg(take):
    # dimension scales below and above 1 so that the variance hinge is active in some dimensions
    scale = torch.tensor([0.3, 0.6, 1.5, 3.0], dtype=torch.float64)
    z1, z2 = _leaf(take, _global(4, seed=3) * scale), _leaf(take, _global(4, seed=4) * scale)
    return vicreg(z1, z2), [z1, z2]


def _byol(take):
    p = _leaf(take, _global(4, seed=5))
    return byol(p, take(_global(4, seed=6))), [p]


def _simsiam(take):
    p = _leaf(take, _global(4, seed=7))
    return simsiam(p, take(_global(4, seed=8))), [p]


def _distillation(take):
    student = _leaf(take, _global(5, seed=9))
    return distillation(student, take(_global(5, seed=10)), temperature=0.5), [student]


def _mae_normalised(take):
    prediction = _leaf(take, _global(6, 4, seed=11))
    target = take(_global(6, 4, seed=12) * 2 + 1)
    return masked_reconstruction(prediction, target, take(_patch_mask(1, seed=13)), normalize_target=True), [prediction]


def _mae_rank1_unmasked(take):
    prediction = _leaf(take, _global(6, 4, seed=14))
    return masked_reconstruction(prediction, take(_global(6, 4, seed=15)), take(_patch_mask(0, seed=16))), [prediction]


def _emphasised_denoising(take):
    prediction = _leaf(take, _global(6, 4, seed=17))
    corrupted = torch.rand(ROWS, 6, 4, generator=torch.Generator().manual_seed(18)) < 0.3
    corrupted[SIZES[0] :] = False  # rank 1 holds only clean dimensions: only beta reaches it
    loss = masked_reconstruction(
        prediction, take(_global(6, 4, seed=19)), take(corrupted), corrupted_weight=0.9, clean_weight=0.1
    )
    return loss, [prediction]


def _masked_tokens(take):
    logits = _leaf(take, _global(6, 7, seed=20))
    labels = torch.randint(0, 7, (ROWS, 6), generator=torch.Generator().manual_seed(21))
    labels[_patch_mask(2, seed=22)] = -100
    return masked_token_cross_entropy(logits, take(labels)), [logits]


def _n_pair(take):
    anchor, positive = _leaf(take, _global(4, seed=23)), _leaf(take, _global(4, seed=24))
    return n_pair(anchor, positive, l2_reg=0.05), [anchor, positive]


def _lifted_structured(take):
    embeddings = _leaf(take, _global(3, seed=25))
    labels = torch.tensor([0, 1, 2, 0, 3, 1, 2, 0])  # positive pairs within and across ranks
    return lifted_structured(embeddings, take(labels), margin=1.0), [embeddings]


def _triplet(take):
    leaves = [_leaf(take, _global(3, seed=s)) for s in (26, 27, 28)]
    return triplet(*leaves, margin=1.0), leaves


def _contrastive_pair(take):
    x1, x2 = _leaf(take, _global(3, seed=29)), _leaf(take, _global(3, seed=30))
    similar = torch.tensor([True, False, False, True, False, True, False, False])
    return contrastive_pair(x1, x2, take(similar), margin=2.0), [x1, x2]


def _nce(take):
    model_data, model_noise = _leaf(take, _global(seed=31)), _leaf(take, _global(seed=32))
    loss = nce(model_data, take(_global(seed=33)), model_noise, take(_global(seed=34)))
    return loss, [model_data, model_noise]


CASES = {
    "barlow_twins": _barlow_twins,
    "vicreg": _vicreg,
    "byol": _byol,
    "simsiam": _simsiam,
    "distillation": _distillation,
    "mae_normalised": _mae_normalised,
    "mae_rank1_unmasked": _mae_rank1_unmasked,
    "emphasised_denoising": _emphasised_denoising,
    "masked_tokens": _masked_tokens,
    "n_pair": _n_pair,
    "lifted_structured": _lifted_structured,
    "triplet": _triplet,
    "contrastive_pair": _contrastive_pair,
    "nce": _nce,
}


def _run_cases(take: Take, gradient_scale: float) -> dict:
    results = {}
    for name, case in CASES.items():
        loss, leaves = case(take)
        loss.backward()
        results[name] = {"loss": loss.detach(), "grads": [leaf.grad * gradient_scale for leaf in leaves]}
    return results


def _on_this_rank() -> dict:
    start = sum(SIZES[: distributed.rank()])
    rows = SIZES[distributed.rank()]
    return _run_cases(lambda t: t[start : start + rows], 1.0 / distributed.world_size())


@pytest.mark.distributed
def test_two_processes_match_one_process_on_the_global_batch():
    reference = _run_cases(lambda t: t, 1.0)
    per_rank = run_in_processes(_on_this_rank)
    for rank, results in enumerate(per_rank):
        start = sum(SIZES[:rank])
        for name, expected in reference.items():
            got = results[name]
            torch.testing.assert_close(got["loss"], expected["loss"], rtol=1e-7, atol=1e-9, msg=f"{name} rank {rank}")
            for i, (grad, full) in enumerate(zip(got["grads"], expected["grads"])):
                torch.testing.assert_close(
                    grad, full[start : start + SIZES[rank]], rtol=1e-7, atol=1e-9,
                    msg=f"{name} rank {rank} gradient of input {i}",
                )
