"""Barlow Twins and VICReg: learn on images (Barlow Twins also on text), their loss and logged
terms are the papers' weighted sums of the redundancy-reduction terms, and 2 processes equal 1."""

from __future__ import annotations

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.losses import barlow_twins, vicreg
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

BARLOW_OPTIONS = {"projection_dim": 32, "hidden_dim": 32}
VICREG_OPTIONS = {"projection_dim": 32, "hidden_dim": 32}


def _image_encoder():
    return build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))


def build_barlow_twins():
    torch.manual_seed(0)
    return build_objective("barlow_twins", [_image_encoder()], BARLOW_OPTIONS)


def build_vicreg():
    torch.manual_seed(0)
    return build_objective("vicreg", [_image_encoder()], VICREG_OPTIONS)


def _mean(values):
    return sum(values) / len(values)


#: VICReg's loss falls slowly from SimCLR-strength crops of 16 px images in a few dozen steps (its
#: variance hinge and invariance pull against each other); milder views show the learning clearly.
MILD_VIEWS = {"augment": {"crop_scale": [0.5, 1.0], "jitter_strength": 0.5, "blur_probability": 0.0}}


@pytest.fixture(scope="module")
def image_setup(data_root):
    return tiny_setup("image", data_root, rows=16)


def test_barlow_twins_overfits_images_and_round_trips(image_setup):
    objective = build_barlow_twins()
    losses = overfit(objective, [image_setup], [raw_batch(image_setup, 16)], steps=25, lr=3e-3)
    # starts near D = 32 (the invariance term, 1 per dimension); a quarter off is a clear margin
    assert _mean(losses[-5:]) < 0.75 * _mean(losses[:5]), losses
    assert_state_round_trip(objective, build_barlow_twins)


def test_vicreg_overfits_images_and_round_trips(data_root):
    setup = tiny_setup("image", data_root, rows=16, options=MILD_VIEWS)
    objective = build_vicreg()
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=30, lr=1e-2)
    # starts near 20, dominated by 25 x the views' mean variance hinge (~0.7 each: small initial
    # output scale); the step-to-step noise from fresh views is ~1, so a 5-step mean moves by ~0.5
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 2.0, losses
    assert_state_round_trip(objective, build_vicreg)


@pytest.mark.slow  # a second domain: runs in CI, kept out of the quick loop
def test_barlow_twins_overfits_text(data_root):
    setup = tiny_setup("text", data_root, rows=16)
    objective = build_objective("barlow_twins", [setup.encoder], BARLOW_OPTIONS)
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=15, lr=3e-3)
    assert _mean(losses[-5:]) < 0.5 * _mean(losses[:5]), losses


@pytest.mark.parametrize("name, factory, loss, weights", [
    ("barlow_twins", build_barlow_twins, barlow_twins, {"lambd": 5e-3}),
    ("vicreg", build_vicreg, vicreg, {"sim_weight": 25.0, "var_weight": 25.0, "cov_weight": 1.0}),
])
def test_loss_is_the_papers_weighted_sum_and_logs_its_terms(name, factory, loss, weights, image_setup):
    """The objective's loss equals the pure loss function with the paper's weights on the
    embeddings it returns, and the logged terms recombine into it."""
    objective = factory()
    (views,) = make_views(objective, [image_setup], [raw_batch(image_setup, 8)], seed=5)
    out = objective(views)
    z1, z2 = out.embeddings
    torch.testing.assert_close(out.loss, loss(z1, z2, **weights), rtol=1e-5, atol=1e-5)
    if name == "barlow_twins":
        recombined = out.logs["invariance"] + 5e-3 * out.logs["redundancy"]
    else:
        recombined = 25 * out.logs["invariance"] + 25 * out.logs["variance"] + out.logs["covariance"]
    torch.testing.assert_close(recombined, out.loss.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory", [build_barlow_twins, build_vicreg], ids=["barlow_twins", "vicreg"])
def test_two_processes_equal_one(factory, image_setup):
    objective = factory()
    views = make_views(objective, [image_setup], [raw_batch(image_setup, 12)], seed=3)
    # Gradients here reach ~500 (sums over D and D^2 entries, through the whole encoder); fp32
    # round-off in the differently ordered global sums is ~1e-6 of that, whereas per-process
    # statistics (the bug this catches) change gradients by a sizeable fraction of their size.
    distributed_equivalence(factory, views, sizes=[7, 5], atol=1e-3)
