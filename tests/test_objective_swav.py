"""SwAV: Sinkhorn-Knopp against a naive loop and its marginals, codes over the global batch (2
processes = 1), the objective's swapped prediction against the paper's formula, frozen and
re-normalised prototypes, learning on images (multi-crop + queue) and text, state round trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from domains import EncoderConfig, build_domain
from multissl import distributed
from multissl.losses import sinkhorn_knopp, swapped_prediction
from multissl.objectives import build_objective
from tests.dist import run_in_processes
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

OPTIONS = {"projection_dim": 16, "hidden_dim": 32, "num_prototypes": 8, "freeze_prototypes_steps": 3,
           "local_views": 2, "queue_size": 32, "queue_start_step": 5}


def build_swav():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("swav", [encoder], OPTIONS)


def build_swav_with_a_full_queue():
    """Past the frozen steps, with a full queue of fixed unit vectors, so the codes include queue rows."""
    objective = build_swav()
    generator = torch.Generator().manual_seed(7)
    for queue in objective.queues:
        queue.keys.copy_(F.normalize(torch.randn(queue.keys.shape, generator=generator), dim=1))
        queue.total_enqueued.fill_(queue.size)
    objective.steps_done.fill_(10)
    return objective


def naive_sinkhorn(scores: torch.Tensor, iterations: int, epsilon: float) -> torch.Tensor:
    """SwAV's distributed_sinkhorn on one process, written as loops over samples and prototypes."""
    samples, prototypes = scores.shape
    q = [[math.exp(float(scores[b, k]) / epsilon) for k in range(prototypes)] for b in range(samples)]
    total = sum(sum(row) for row in q)
    q = [[value / total for value in row] for row in q]
    for _ in range(iterations):
        for k in range(prototypes):
            column = sum(q[b][k] for b in range(samples))
            for b in range(samples):
                q[b][k] /= column * prototypes
        for b in range(samples):
            row = sum(q[b])
            q[b] = [value / (row * samples) for value in q[b]]
    return torch.tensor(q, dtype=torch.float64) * samples


def _unit_scores(samples: int, prototypes: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(samples, 6, generator=generator, dtype=torch.float64), dim=1)
    c = F.normalize(torch.randn(prototypes, 6, generator=generator, dtype=torch.float64), dim=1)
    return z @ c.T


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_a_naive_loop(iterations):
    scores = _unit_scores(7, 5, seed=iterations)
    torch.testing.assert_close(sinkhorn_knopp(scores, iterations, 0.05), naive_sinkhorn(scores, iterations, 0.05),
                               rtol=1e-9, atol=1e-12)
    # float32 input: same codes to float32 precision (the max shift keeps exp in range)
    torch.testing.assert_close(sinkhorn_knopp(scores.float(), iterations, 0.05),
                               naive_sinkhorn(scores, iterations, 0.05).float(), rtol=1e-4, atol=1e-6)


def test_sinkhorn_marginals():
    """Rows are distributions (exactly, as the last step normalises them); prototypes share the
    samples equally (B/K each) once the iterations converge."""
    samples, prototypes = 24, 6
    scores = _unit_scores(samples, prototypes, seed=0)
    codes = sinkhorn_knopp(scores, 3, 0.05)
    assert (codes >= 0).all()
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(samples, dtype=torch.float64), rtol=0, atol=1e-12)
    converged = sinkhorn_knopp(scores, 500, 0.05)
    uniform = torch.full((prototypes,), samples / prototypes, dtype=torch.float64)
    torch.testing.assert_close(converged.sum(dim=0), uniform, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn_knopp(scores, 0, 0.05)


SIZES = [5, 3]


def _sinkhorn_worker(scores: torch.Tensor, predictions: torch.Tensor) -> dict:
    start = sum(SIZES[: distributed.rank()])
    rows = slice(start, start + SIZES[distributed.rank()])
    local_predictions = predictions[rows].clone().requires_grad_(True)
    codes = sinkhorn_knopp(scores[rows], 3, 0.05)
    loss = swapped_prediction(local_predictions, codes, temperature=0.1)
    loss.backward()
    return {"codes": codes, "loss": loss.detach(), "grad": local_predictions.grad}


def test_sinkhorn_codes_and_swapped_prediction_over_the_global_batch():
    """Two processes holding 5 and 3 samples get exactly the codes one process computes on all 8
    (prototype masses are normalised over every process), and the same loss and gradients."""
    scores = _unit_scores(sum(SIZES), 4, seed=11)
    predictions = _unit_scores(sum(SIZES), 4, seed=12)
    reference_predictions = predictions.clone().requires_grad_(True)
    reference_codes = sinkhorn_knopp(scores, 3, 0.05)
    reference_loss = swapped_prediction(reference_predictions, reference_codes, temperature=0.1)
    reference_loss.backward()
    # the local-batch codes differ: the global normalisation matters
    assert not torch.allclose(sinkhorn_knopp(scores[:5], 3, 0.05), reference_codes[:5], atol=1e-3)
    results = run_in_processes(_sinkhorn_worker, scores, predictions)
    torch.testing.assert_close(torch.cat([r["codes"] for r in results]), reference_codes, rtol=1e-9, atol=1e-12)
    for result in results:
        torch.testing.assert_close(result["loss"], reference_loss.detach(), rtol=1e-9, atol=1e-12)
    # DDP averages the per-process gradients: each process holds world_size x its rows' gradient
    gathered = torch.cat([r["grad"] for r in results]) / len(results)
    torch.testing.assert_close(gathered, reference_predictions.grad, rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def image_setup(data_root):
    return tiny_setup("image", data_root, rows=16)


def test_swav_loss_is_the_swapped_prediction_of_global_codes(image_setup):
    """The paper's multi-crop loss written out: codes from the 2 global crops only (naive Sinkhorn
    on the batch), each predicted from every other crop, averaged over predicting crops and codes."""
    objective = build_swav()
    (views,) = make_views(objective, [image_setup], [raw_batch(image_setup, 8)], seed=2)
    assert len(views["views"]) == 4 and views["views"][2]["pixel_values"].shape[-1] < 16  # 2 global + 2 local
    with torch.no_grad():
        z = [F.normalize(p, dim=1) for p in objective.online(views["views"])]
        scores = [zv @ objective.prototypes.weight.T for zv in z]
        expected = 0.0
        for g in range(2):
            codes = naive_sinkhorn(scores[g].double(), 3, 0.05).float()
            for v in [v for v in range(4) if v != g]:
                rows = [-(codes[i] * F.log_softmax(scores[v][i] / 0.1, dim=0)).sum() for i in range(8)]
                expected += sum(rows) / 8 / 3
        out = objective(views)
    torch.testing.assert_close(out.loss, torch.as_tensor(expected / 2), rtol=1e-4, atol=1e-5)


def test_prototypes_are_frozen_then_trained_and_stay_unit(image_setup):
    objective = build_swav()
    (views,) = make_views(objective, [image_setup], [raw_batch(image_setup, 8)], seed=4)
    objective(views).loss.backward()
    assert torch.count_nonzero(objective.prototypes.weight.grad) == 0  # frozen for the first 3 steps
    assert objective.online.head.layers[0][0].weight.grad.abs().sum() > 0
    objective.zero_grad(set_to_none=True)
    objective.steps_done.fill_(3)
    objective(views).loss.backward()
    assert objective.prototypes.weight.grad.abs().sum() > 0
    with torch.no_grad():
        objective.prototypes.weight.mul_(torch.rand(8, 1) * 3 + 0.1)  # an optimiser step changes norms
    objective.on_step_end(4, 10)
    torch.testing.assert_close(objective.prototypes.weight.norm(dim=1), torch.ones(8), rtol=0, atol=1e-6)
    assert int(objective.steps_done) == 4


def _mean(values):
    return sum(values) / len(values)


def test_swav_overfits_images_with_multicrop_and_a_queue_and_round_trips(image_setup):
    objective = build_swav()
    initial_directions = objective.prototypes.weight.detach().clone()
    losses = overfit(objective, [image_setup], [raw_batch(image_setup, 16)], steps=20, lr=3e-3)
    # cross-entropy against soft codes over 8 prototypes starts near log 8 ~ 2.1 plus their entropy
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.4, losses
    # the queue fills from step 5 on (after 5 completed steps): 15 steps x 16 rows per global view
    assert int(objective.queues[0].total_enqueued) == 15 * 16
    assert not torch.allclose(objective.prototypes.weight, initial_directions)
    assert_state_round_trip(objective, build_swav)


@pytest.mark.slow  # a second domain: runs in CI, kept out of the quick loop
def test_swav_overfits_text(data_root):
    setup = tiny_setup("text", data_root, rows=16)
    objective = build_objective("swav", [setup.encoder], {"projection_dim": 16, "hidden_dim": 32, "num_prototypes": 8,
                                                          "freeze_prototypes_steps": 2})
    assert "local_views" not in objective.view_requests()[0].options  # text offers no multi-crop
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=12, lr=3e-3)
    assert _mean(losses[-4:]) < 0.5 * _mean(losses[:4]), losses


def test_swav_two_processes_equal_one(image_setup):
    """Multi-crop, a full queue (each process adds its slice of it to the Sinkhorn problem) and
    global batch norm: loss and gradients equal one process's on the whole batch."""
    objective = build_swav_with_a_full_queue()
    views = make_views(objective, [image_setup], [raw_batch(image_setup, 12)], seed=3)
    distributed_equivalence(build_swav_with_a_full_queue, views, sizes=[7, 5], atol=1e-4)
