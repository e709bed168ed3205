"""SimCLR: learns on images, state round-trips, and 2 processes equal 1."""

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


def test_simclr_overfits_a_small_batch_and_round_trips(data_root):
    setup = tiny_setup("image", data_root, rows=16)
    objective = build_objective("simclr", [setup.encoder], {"temperature": 0.2, "projection_dim": 16})
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=25, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    assert_state_round_trip(objective, lambda: build_objective(
        "simclr", [tiny_setup("image", data_root, rows=16).encoder], {"temperature": 0.2, "projection_dim": 16}))


def test_simclr_two_processes_equal_one(data_root):
    setup = tiny_setup("image", data_root, rows=12)
    objective = build_simclr()
    views = make_views(objective, [setup], [raw_batch(setup, 12)], seed=3)
    distributed_equivalence(build_simclr, views, sizes=[7, 5])


def test_simclrv2_fine_tunes_from_the_middle_of_its_head(data_root):
    from multissl.probes.classification import fine_tune
    from multissl.views import ViewRequest

    setup = tiny_setup("image", data_root, rows=16)
    objective = build_objective("simclr", [setup.encoder], {"head_layers": 3, "hidden_dim": 24, "projection_dim": 8})
    network = objective.encoder_with_head(up_to=1)
    batch = raw_batch(setup, 16)
    inputs = setup.domain.make_views(batch, ViewRequest("plain"), torch.Generator())["inputs"]
    network.eval()
    objective.eval()
    features = network(**inputs).pooled
    assert features.shape == (16, 24)
    # the same numbers as running the head's first layer by hand
    torch.testing.assert_close(features, objective.head(setup.encoder(**inputs).pooled, up_to=1))
    before = objective.head.layers[0][0].weight.detach().clone()
    fine_tune(network, lambda b, g: setup.domain.make_views(b, ViewRequest("plain"), g)["inputs"], [batch],
              num_classes=10, epochs=2, learning_rate=1e-2)
    assert not torch.equal(objective.head.layers[0][0].weight, before), "the head's first layer is fine-tuned too"
