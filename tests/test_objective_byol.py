"""BYOL: learns on images and text, its target follows the EMA rule exactly, its state
round-trips, and 2 processes equal 1."""

from __future__ import annotations

import math

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

OPTIONS = {"projection_dim": 16, "hidden_dim": 32, "policy": "byol"}


def build_byol():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("byol", [encoder], OPTIONS)


def _mean(values):
    return sum(values) / len(values)


def test_byol_overfits_images_and_round_trips_its_target(data_root):
    setup = tiny_setup("image", data_root, rows=16)
    objective = build_objective("byol", [setup.encoder], OPTIONS)
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=25, lr=3e-3)
    # each direction is 2 - 2 cos in [0, 4]; the sum starts near 4 (unrelated random projections)
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.8, losses
    target = dict(objective.target.named_parameters())
    online = dict(objective.online.named_parameters())
    assert any(not torch.equal(target[f"module.{k}"], v) for k, v in online.items()), \
        "the target never moved away from its initial copy"
    assert_state_round_trip(objective, build_byol)


@pytest.mark.slow  # a second domain: runs in CI, kept out of the quick loop
def test_byol_overfits_text_with_the_domain_default_views(data_root):
    setup = tiny_setup("text", data_root, rows=16)
    objective = build_objective("byol", [setup.encoder], {"projection_dim": 16, "hidden_dim": 32})
    assert "policy" not in objective.view_requests()[0].options  # text has no "byol" policy
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=20, lr=3e-3)
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.8, losses


@pytest.mark.slow
def test_byol_overfits_audio(data_root):
    setup = tiny_setup("audio", data_root, rows=16)
    objective = build_objective("byol", [setup.encoder], {"projection_dim": 16, "hidden_dim": 32})
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=15, lr=3e-3)
    assert _mean(losses[-4:]) < _mean(losses[:4]) - 0.4, losses


def _paper_tau(k: int, total: int, base: float = 0.996) -> float:
    """Grill et al. 2020, sec. 3.2, written out here independently of the module under test."""
    return 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2


@pytest.mark.parametrize("step, total", [(1, 10), (4, 10), (10, 10)])
def test_target_moves_by_exactly_the_ema_rule(step, total):
    objective = build_byol()
    generator = torch.Generator().manual_seed(step)
    with torch.no_grad():  # stand in for an optimiser step: move the online network anywhere
        for parameter in objective.online.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
        for name, buffer in objective.online.named_buffers():
            if buffer.is_floating_point():  # batch-norm running statistics follow the EMA too
                buffer.add_(torch.rand(buffer.shape, generator=generator))
    before = {k: v.clone() for k, v in objective.target.module.state_dict().items()}
    online = {k: v.clone() for k, v in objective.online.state_dict().items()}
    objective.on_step_end(step, total)
    tau = _paper_tau(step, total)
    after = objective.target.module.state_dict()
    for name, value in after.items():
        if value.is_floating_point():
            expected = tau * before[name].double() + (1 - tau) * online[name].double()
            torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-7, msg=name)
        else:  # integer buffers (batch counts) are copied
            assert torch.equal(value, online[name]), name
    assert float(objective.target.momentum) == pytest.approx(tau, abs=1e-7)
    assert not any(p.requires_grad for p in objective.target.parameters())
    assert "predictor" not in "".join(objective.target.state_dict())  # the target has no predictor


def test_byol_two_processes_equal_one(data_root):
    setup = tiny_setup("image", data_root, rows=12)
    objective = build_byol()
    views = make_views(objective, [setup], [raw_batch(setup, 12)], seed=3)
    distributed_equivalence(build_byol, views, sizes=[7, 5])
