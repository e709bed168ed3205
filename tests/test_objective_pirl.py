"""PIRL (Misra & van der Maaten 2019): the loss is lambda NCE(m_I, g(tiles)) + (1 - lambda)
NCE(m_I, f(image)) against the bank rows it sampled, the bank keeps the image branch, it learns,
its bank round-trips, and 2 processes equal 1 on the global batch."""

from __future__ import annotations

import math

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.modules import MemoryBank
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

DOMAIN = {"augment": {"crop_scale": (0.5, 1.0), "jitter_strength": 0.5, "blur_probability": 0.0},
          "pretext": {"jigsaw_permutations": 30}}
OPTIONS = {"bank_size": 16, "projection_dim": 16, "num_negatives": 24, "temperature": 0.1}
LEARN = {**OPTIONS, "bank_size": 4096, "num_negatives": 64}  # noise rarely the sample itself


def build_pirl():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("pirl", [encoder], OPTIONS)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=16, options=DOMAIN)


def _fresh(setup, options=OPTIONS):
    torch.manual_seed(0)
    return build_objective("pirl", [setup.domain.build_encoder(EncoderConfig("convnext", "tiny"))], options)


def _naive_nce(scores: list[list[float]], n: int, z: float) -> float:
    total = 0.0
    for row in scores:
        m = len(row) - 1
        h = [math.exp(s) / z / (math.exp(s) / z + m / n) for s in row]
        total -= math.log(h[0]) + sum(math.log(1 - value) for value in h[1:])
    return total / len(scores)


def test_view_holds_the_image_and_its_shuffled_tiles(image):
    views = make_views(build_pirl(), [image], [raw_batch(image, 4)], seed=0)[0]
    assert len(views["parts"]) == 9 and len(views["views"]) == 1
    assert views["views"][0]["pixel_values"].shape == (4, 3, 16, 16) and views["indices"].tolist() == [0, 1, 2, 3]


def test_loss_is_equation_5_against_the_sampled_rows_and_the_bank_keeps_the_image_branch(image):
    objective = _fresh(image, {**OPTIONS, "loss_weight": 0.3})
    views = make_views(objective, [image], [raw_batch(image, 6, start=2)], seed=1)
    bank = objective.bank.features.clone()
    assert torch.allclose(bank.norm(dim=1), torch.ones(16))  # VISSL's norm_init
    out = objective(*views)
    indices = views[0]["indices"]
    with torch.no_grad():
        f, g = objective.embed(views[0]["views"][0], views[0]["parts"])
    fresh = MemoryBank(16, 16)  # the same stream: draw 0 for the tiles' term, draw 1 for the image's
    tile_rows, image_rows = fresh.sample(indices, 24), fresh.sample(indices, 24)

    def scores(embedding, rows):
        return [[float(bank[j] @ embedding[b]) / 0.1 for j in rows[b].tolist()] for b in range(6)]

    tile_scores, image_scores = scores(g, tile_rows), scores(f, image_rows)
    z = 16 * sum(math.exp(s) for row in tile_scores for s in row) / (6 * 25)  # Z from the first term
    expected = 0.3 * _naive_nce(tile_scores, 16, z) + 0.7 * _naive_nce(image_scores, 16, z)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    for b, row in enumerate(indices.tolist()):
        moved = 0.5 * bank[row] + 0.5 * f[b]
        torch.testing.assert_close(objective.bank.features[row], moved / moved.norm(), rtol=1e-5, atol=1e-6)


def test_learns_and_round_trips_its_bank(image):
    objective = _fresh(image, LEARN)
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=30, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    assert int(objective.bank.draws) == 60
    assert_state_round_trip(objective, lambda: _fresh(image, LEARN))


@pytest.mark.slow
def test_two_processes_equal_one(image):
    views = make_views(build_pirl(), [image], [raw_batch(image, 12)], seed=3)
    distributed_equivalence(build_pirl, views, sizes=[7, 5])
