"""Instance discrimination (Wu et al. 2018): the loss is eq. 7 against the bank rows it sampled,
the bank moves by momentum towards this step's features, it learns on images and text, its bank
round-trips through a checkpoint, and 2 processes equal 1 on the global batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from domains import EncoderConfig, build_domain
from multissl.modules import MemoryBank
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

MILD = {"augment": {"crop_scale": (0.5, 1.0), "jitter_strength": 0.5, "blur_probability": 0.0}}
OPTIONS = {"bank_size": 16, "projection_dim": 16, "num_negatives": 24, "temperature": 0.1}
# to learn, noise must rarely be the sample itself: a bank far larger than the 16 rows trained on,
# as a real dataset's bank is (the other rows keep their random initial values, easy noise)
LEARN = {**OPTIONS, "bank_size": 4096, "num_negatives": 64}


def build_instance_discrimination():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("instance_discrimination", [encoder], OPTIONS)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=16, options=MILD)


def _fresh(setup, options=OPTIONS):
    torch.manual_seed(0)
    return build_objective("instance_discrimination", [setup.domain.build_encoder(EncoderConfig("convnext", "tiny"))],
                           options)


def _naive_nce(scores: list[list[float]], n: int, z: float) -> float:
    total = 0.0
    for row in scores:
        m = len(row) - 1
        h = [math.exp(s) / z / (math.exp(s) / z + m / n) for s in row]
        total -= math.log(h[0]) + sum(math.log(1 - value) for value in h[1:])
    return total / len(scores)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_loss_is_equation_7_against_the_sampled_rows_and_the_bank_moves(image, loss):
    objective = _fresh(image, {**OPTIONS, "loss": loss})
    views = make_views(objective, [image], [raw_batch(image, 6, start=4)], seed=1)
    bank = objective.bank.features.clone()
    out = objective(*views)
    indices = views[0]["indices"]
    assert indices.tolist() == [4, 5, 6, 7, 8, 9]
    with torch.no_grad():
        f = F.normalize(objective.head(objective.encoder(**views[0]["views"][0]).pooled), dim=1)
    rows = MemoryBank(16, 16).sample(indices, 24)  # a fresh bank draws the first step's noise again
    assert rows[:, 0].tolist() == indices.tolist()
    scores = [[float(bank[j] @ f[b]) / 0.1 for j in rows[b].tolist()] for b in range(6)]
    if loss == "nce":
        z = 16 * sum(math.exp(s) for row in scores for s in row) / (6 * 25)  # eq. 6, from this first batch
        expected = _naive_nce(scores, 16, z)
        assert float(objective.bank.normalizer) == pytest.approx(z, rel=1e-5)
    else:
        expected = sum(math.log(sum(math.exp(s) for s in row)) - row[0] for row in scores) / 6
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    for b, row in enumerate(indices.tolist()):  # v_i <- normalize(0.5 v_i + 0.5 f_i)
        moved = 0.5 * bank[row] + 0.5 * f[b]
        torch.testing.assert_close(objective.bank.features[row], moved / moved.norm(), rtol=1e-5, atol=1e-6)
    assert torch.equal(objective.bank.features[:4], bank[:4])


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_learns_on_images_and_round_trips_its_bank(image, loss):
    objective = _fresh(image, {**LEARN, "loss": loss})
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=30, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    assert int(objective.bank.draws) == 30 and (float(objective.bank.normalizer) > 0) == (loss == "nce")
    state = objective.state_dict()
    assert {"bank.features", "bank.normalizer", "bank.draws"} <= set(state)
    assert_state_round_trip(objective, lambda: _fresh(image, {**LEARN, "loss": loss}))


@pytest.mark.slow
def test_learns_on_text(data_root):
    text = tiny_setup("text", data_root, rows=16)
    torch.manual_seed(0)
    objective = build_objective("instance_discrimination", [text.encoder], LEARN)
    losses = overfit(objective, [text], [raw_batch(text, 16)], steps=20, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses


def test_views_without_sample_ids_are_refused(image):
    objective = _fresh(image)
    views = make_views(objective, [image], [raw_batch(image, 4)], seed=0)
    del views[0]["indices"]
    with pytest.raises(ValueError, match="indices"):
        objective(*views)
    too_small = _fresh(image, {**OPTIONS, "bank_size": 8})
    with pytest.raises(ValueError, match="bank_size"):
        too_small(*make_views(too_small, [image], [raw_batch(image, 4, start=8)], seed=0))


@pytest.mark.slow
def test_two_processes_equal_one(image):
    views = make_views(build_instance_discrimination(), [image], [raw_batch(image, 12)], seed=3)
    distributed_equivalence(build_instance_discrimination, views, sizes=[7, 5])
