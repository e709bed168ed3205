"""SimCLR: learns on real images, state round-trips, and 2 processes equal 1."""

from __future__ import annotations

import torch

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)


def build_simclr():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("simclr", [encoder], {"temperature": 0.2, "projection_dim": 16})


def test_simclr_overfits_a_small_batch_and_round_trips(shared_data):
    setup = tiny_setup("image", shared_data, rows=16)
    objective = build_objective("simclr", [setup.encoder], {"temperature": 0.2, "projection_dim": 16})
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=25, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    assert_state_round_trip(objective, lambda: build_objective(
        "simclr", [tiny_setup("image", shared_data, rows=16).encoder], {"temperature": 0.2, "projection_dim": 16}))


def test_simclr_two_processes_equal_one(shared_data):
    setup = tiny_setup("image", shared_data, rows=12)
    objective = build_simclr()
    views = make_views(objective, [setup], [raw_batch(setup, 12)], seed=3)
    distributed_equivalence(build_simclr, views, sizes=[7, 5])
