"""Spectral contrastive learning: learns on real images, is the official estimate of the loss on its
own projections, round-trips, and 2 processes equal 1."""

from __future__ import annotations

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.features import encode_views
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)
from tests.test_losses_contrastive import naive_spectral

OPTIONS = {"projection_dim": 16, "hidden_dim": 32}
MILD = {"augment": {"crop_scale": (0.5, 1.0), "jitter_strength": 0.5, "blur_probability": 0.0}}


def build_spectral():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("spectral_contrastive", [encoder], OPTIONS)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=16, options=MILD)


def test_spectral_contrastive_learns_on_images_and_round_trips(image):
    objective = build_spectral()
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=25, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    assert_state_round_trip(objective, build_spectral)


def test_spectral_contrastive_loss_is_the_official_estimate(image):
    objective = build_spectral()
    views = make_views(objective, [image], [raw_batch(image, 6)], seed=1)
    out = objective(*views)
    with torch.no_grad():  # one encoder call, one head call: the same batch statistics again
        first, second = (f.pooled for f in encode_views(objective.encoder, views[0]["views"][:2]))
        z1, z2 = objective.head(torch.cat([first, second])).chunk(2)
    # the head's output BN makes rows of norm ~sqrt(16) > 1: the sqrt(mu) clipping is exercised
    assert (z1.norm(dim=1) > 1).all()
    torch.testing.assert_close(out.loss.double(), naive_spectral(z1.double(), z2.double(), 1.0), rtol=1e-5, atol=1e-5)


def test_spectral_contrastive_two_processes_equal_one(image):
    views = make_views(build_spectral(), [image], [raw_batch(image, 12)], seed=3)
    distributed_equivalence(build_spectral, views, sizes=[7, 5])
