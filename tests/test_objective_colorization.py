"""Colorization (Zhang et al. 2016): soft encoding, rebalancing and annealed mean match the paper's
formulas written out naively; the objective learns on real CIFAR-10 images, round-trips its prior,
and 2 processes equal 1."""

from __future__ import annotations

import math

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from domains.image.color import AB_BIN_SIZE, AB_LIMIT, NUM_AB_BINS as NUM_BINS, ab_bin_centres, soft_encode
from multissl.objectives.colorization import annealed_mean, rebalancing_weights
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

OPTIONS = {"hidden_dim": 16, "output_stride": 2}


def _naive_centres():
    values = [-AB_LIMIT + AB_BIN_SIZE * i for i in range(int(2 * AB_LIMIT / AB_BIN_SIZE) + 1)]
    return [(a, b) for a in values for b in values]


def test_soft_encoding_is_five_nearest_bins_with_gaussian_weights():
    torch.manual_seed(0)
    ab = torch.rand(2, 2, 3, 4) * 200 - 100
    ab[0, :, 0, 0] = torch.tensor([20.0, -30.0])  # exactly on a centre
    ab[1, :, 2, 3] = torch.tensor([-118.0, 113.0])  # beyond the grid's corner: clamped onto it
    ab[1, :, 0, 1] = torch.tensor([-110.0, -107.0])  # on the rim, next to a corner
    bins, weights = soft_encode(ab, neighbours=5, sigma=5.0)
    centres = _naive_centres()
    assert torch.equal(ab_bin_centres(), torch.tensor(centres))
    for b in range(2):
        for y in range(3):
            for x in range(4):
                a_value, b_value = (min(max(ab[b, c, y, x].item(), -AB_LIMIT), AB_LIMIT) for c in (0, 1))
                distances = [(a_value - ca) ** 2 + (b_value - cb) ** 2 for ca, cb in centres]
                chosen = bins[b, :, y, x].tolist()
                assert len(set(chosen)) == 5, (b, y, x)
                # the chosen bins are 5 nearest ones (ties, e.g. at a corner, may go either way)
                assert sorted(distances[q] for q in chosen) == pytest.approx(sorted(distances)[:5])
                assert distances[chosen[0]] == pytest.approx(min(distances))
                gaussian = [math.exp(-distances[q] / (2 * 5.0**2)) for q in chosen]
                expected = [g / sum(gaussian) for g in gaussian]
                assert weights[b, :, y, x].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_rebalancing_weights_follow_eq_4():
    torch.manual_seed(1)
    counts = torch.zeros(NUM_BINS)
    counts[torch.randint(0, NUM_BINS, (40,))] += torch.rand(40) * 100 + 1
    weights = rebalancing_weights(counts, ab_bin_centres(), mix=0.5, sigma=5.0)
    centres = _naive_centres()
    probability = (counts / counts.sum()).tolist()
    smoothed = []
    for ca, cb in centres:
        smoothed.append(sum(p * math.exp(-((ca - a) ** 2 + (cb - b) ** 2) / (2 * 25.0))
                            for p, (a, b) in zip(probability, centres) if p))
    total = sum(smoothed)
    smoothed = [s / total for s in smoothed]
    seen = sum(1 for c in counts.tolist() if c > 0)
    raw = [1 / (0.5 * s + 0.5 / seen) for s in smoothed]
    scale = sum(s * r for s, r in zip(smoothed, raw))
    torch.testing.assert_close(weights, torch.tensor([r / scale for r in raw]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rebalancing_weights(counts, ab_bin_centres(), mix=1.0), torch.ones(NUM_BINS))
    with pytest.raises(ValueError, match="no ab values counted"):
        rebalancing_weights(torch.zeros(NUM_BINS), ab_bin_centres())


def test_annealed_mean_is_the_tempered_expectation():
    torch.manual_seed(2)
    logits = torch.randn(1, NUM_BINS, 2, 1)
    centres = ab_bin_centres()
    for y in range(2):
        p = torch.softmax(logits[0, :, y, 0].double() / 0.38, dim=0)
        expected = (p[:, None] * centres.double()).sum(0)
        torch.testing.assert_close(annealed_mean(logits, centres)[0, :, y, 0].double(), expected, rtol=1e-5, atol=1e-4)


def build_colorization():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("colorization", [encoder], OPTIONS)


def test_colorization_learns_on_real_images_and_round_trips(data_root):
    setup = tiny_setup("image", data_root, rows=16)
    objective = build_objective("colorization", [setup.encoder], OPTIONS)
    assert [(r.kind, r.options) for r in objective.view_requests()] == [("corrupted", {"task": "colorization", "output_stride": 2})]
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=25, lr=3e-3)
    # starts near log(Q = 529) = 6.3 (weighted); must fall by far more than noise
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    assert float(objective.ab_counts.sum()) == 25 * 16 * 8 * 8  # every training pixel at 8x8 counted once
    assert_state_round_trip(objective, lambda: build_objective(
        "colorization", [tiny_setup("image", data_root, rows=16).encoder], OPTIONS))


def test_colorization_two_processes_equal_one(data_root):
    """The prior's histogram is summed over processes, so both see the weights one process sees."""
    setup = tiny_setup("image", data_root, rows=12)
    views = make_views(build_colorization(), [setup], [raw_batch(setup, 12)], seed=3)
    distributed_equivalence(build_colorization, views, sizes=[7, 5])
