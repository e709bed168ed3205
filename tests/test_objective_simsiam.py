"""SimSiam: learns on images, its loss is the paper's symmetric form, state round-trips, and
2 processes equal 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

OPTIONS = {"projection_dim": 64, "predictor_hidden_dim": 16}
# SimSiam learns slowly from SimCLR-strength crops of 16 px images in a few dozen steps; milder
# views let a short run show learning (the method, not the augmentation, is under test here).
MILD_VIEWS = {"augment": {"crop_scale": [0.5, 1.0], "jitter_strength": 0.5, "blur_probability": 0.0}}


def build_simsiam():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("simsiam", [encoder], OPTIONS)


def _mean(values):
    return sum(values) / len(values)


def test_simsiam_overfits_a_small_batch_and_round_trips(data_root):
    setup = tiny_setup("image", data_root, rows=16, options=MILD_VIEWS)
    objective = build_objective("simsiam", [setup.encoder], OPTIONS)
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=30, lr=3e-3)
    # -cos lies in [-1, 1]; unrelated random projections start near 0
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.15, losses
    assert min(losses) >= -1 - 1e-5
    assert_state_round_trip(objective, build_simsiam)


def test_simsiam_loss_is_the_symmetric_negative_cosine_with_stop_gradient(data_root):
    """Against the paper's formula written out per row, 1/2 D(p1, z2) + 1/2 D(p2, z1) with
    D(p, z) = -cos(p, stopgrad(z)): same value and same parameter gradients (without the
    stop-gradient the gradients would differ)."""
    setup = tiny_setup("image", data_root, rows=8)
    objective = build_simsiam()
    (views,) = make_views(objective, [setup], [raw_batch(setup, 8)], seed=1)
    z1, z2 = objective.online(views["views"][:2])
    p1, p2 = objective.predictor(torch.cat([z1, z2])).chunk(2)
    def negative_cosine(p, z):
        return -F.cosine_similarity(p, z.detach(), dim=0)

    rows = [0.5 * (negative_cosine(p1[i], z2[i]) + negative_cosine(p2[i], z1[i])) for i in range(8)]
    expected = sum(rows) / 8
    expected.backward()
    expected_grads = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
    objective.zero_grad(set_to_none=True)
    out = objective(views)
    out.loss.backward()
    torch.testing.assert_close(out.loss, expected.detach(), rtol=1e-5, atol=1e-6)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(dict(objective.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6, msg=name)
    # BN on the projector's output (no affine): each dimension standardised over the 2B rows
    both = torch.cat(out.embeddings).detach()
    torch.testing.assert_close(both.mean(0), torch.zeros(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(both.var(0, unbiased=False), torch.ones(64), atol=1e-3, rtol=0)


def test_simsiam_two_processes_equal_one(data_root):
    setup = tiny_setup("image", data_root, rows=12)
    objective = build_simsiam()
    views = make_views(objective, [setup], [raw_batch(setup, 12)], seed=3)
    distributed_equivalence(build_simsiam, views, sizes=[7, 5])
