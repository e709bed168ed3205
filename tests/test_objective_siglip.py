"""SigLIP on real Flickr8k image-caption pairs: learns, is Algorithm 1 on its own embeddings with
the paper's initial t and b, round-trips, 2 processes equal 1, and its projections serve the
zero-shot helpers as CLIP's do."""

from __future__ import annotations

import math

import pytest
import torch

from domains import EncoderConfig
from multissl.objectives import build_objective
from multissl.probes.retrieval import joint_zero_shot_classifier
from tests.objective_harness import assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch
from tests.test_losses_contrastive import naive_siglip
from tests.test_objective_clip import NO_DROPOUT, _distinct_photos, pair_setups


def build_siglip(block_size: int = 4096, seed: int = 0):
    """Same weights every call (module level: the 2-process test rebuilds it in each process)."""
    image, text = pair_setups()
    torch.manual_seed(seed)
    image_encoder = image.domain.build_encoder(EncoderConfig("convnext", "tiny"))
    text_encoder = text.domain.build_encoder(EncoderConfig("bert", "tiny", overrides=NO_DROPOUT))
    return build_objective("siglip", [image_encoder, text_encoder], {"projection_dim": 16, "block_size": block_size})


def build_siglip_in_small_tiles():
    return build_siglip(block_size=3)


def pair_views(objective, rows: int, seed: int = 0):
    setups = pair_setups()
    return make_views(objective, list(setups), [raw_batch(s, rows) for s in setups], seed=seed)


@pytest.fixture(scope="module")
def pairs(data_root):
    assert _distinct_photos(24), "captions.csv is no longer grouped by photo: pick rows another way"
    return pair_setups()


def test_siglip_aligns_real_pairs_and_round_trips(pairs):
    image, text = pairs
    objective = build_siglip()
    losses = overfit(objective, [image, text], [raw_batch(image, 16), raw_batch(text, 16)], steps=45, lr=3e-3)
    # Chance: embeddings that know nothing, with the best bias, score each of the 16 rows as 16 coin
    # flips of probability 1/16, a loss of 16 * H(1/16) ~ 3.74 nats. The first steps only move the
    # bias from its -10 start down to that plateau; learning the pairs must then leave it behind.
    p = 1 / 16
    chance = -16 * (p * math.log(p) + (1 - p) * math.log(1 - p))
    assert sum(losses[-5:]) / 5 < chance - 1.0, losses
    assert float(objective.logit_bias.detach()) != -10.0 and float(objective.logit_scale().detach()) != 10.0  # both learn
    assert_state_round_trip(objective, build_siglip)


def test_siglip_loss_is_algorithm_1_from_the_papers_initialisation(pairs):
    objective = build_siglip(block_size=5)
    views = pair_views(objective, 7)
    with torch.no_grad():
        z_a = objective.embed(0, views[0]["inputs"])
        z_b = objective.embed(1, views[1]["inputs"])
        expected = naive_siglip(z_a.double(), z_b.double(), 10.0, -10.0)
        out = objective(*views)
    torch.testing.assert_close(out.loss.double(), expected, atol=1e-5, rtol=1e-5)
    assert math.isclose(float(out.logs["logit_scale"]), 10.0, rel_tol=1e-6)
    assert float(out.logs["logit_bias"]) == -10.0
    # t is not clipped by default (big_vision); max_logit_scale clips it after a step (open_clip)
    with torch.no_grad():
        objective.logit_scale.log_scale.fill_(math.log(500.0))
    objective.on_step_end(1, 10)
    assert math.isclose(float(objective.logit_scale()), 500.0, rel_tol=1e-5)
    image, text = pairs
    clipped = build_objective("siglip", [image.encoder, text.encoder], {"max_logit_scale": 100.0})
    with torch.no_grad():
        clipped.logit_scale.log_scale.fill_(math.log(500.0))
    clipped.on_step_end(1, 10)
    assert math.isclose(float(clipped.logit_scale()), 100.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="initial_logit_scale"):
        build_objective("siglip", [image.encoder, text.encoder], {"max_logit_scale": 5.0})


def test_siglip_two_processes_equal_one(pairs):
    views = pair_views(build_siglip(), 12, seed=5)
    distributed_equivalence(build_siglip_in_small_tiles, views, sizes=[7, 5])


def test_siglip_projections_serve_zero_shot_and_the_encoders(pairs):
    _, text = pairs
    siglip = build_objective("siglip", [text.encoder, text.encoder], {"projection_dim": 16})
    assert siglip.joint_projections() == (siglip.projection_a, siglip.projection_b)
    classes = joint_zero_shot_classifier(siglip, ["dog", "girl"], ["a photo of a {}."])
    assert classes.shape == (2, 16) and torch.isfinite(classes).all()
