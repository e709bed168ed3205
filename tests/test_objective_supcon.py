"""SupCon: the loss is eq. 2 over every view with the dataset's labels, it learns on images and
audio, data without labels is a clear error, state round-trips, and 2 processes equal 1."""

from __future__ import annotations

import math

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

MILD = {"augment": {"crop_scale": (0.5, 1.0), "jitter_strength": 0.5, "blur_probability": 0.0}}
OPTIONS = {"projection_dim": 16, "temperature": 0.1}


def build_supcon():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("supcon", [encoder], OPTIONS)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=16, options=MILD)


def _fresh(setup, options=OPTIONS, architecture="resnet"):
    torch.manual_seed(0)
    return build_objective("supcon", [setup.domain.build_encoder(EncoderConfig(architecture, "tiny"))], options)


def test_supcon_loss_is_equation_2_over_all_views_with_the_dataset_labels(image):
    objective = _fresh(image, {**OPTIONS, "num_views": 3}, "convnext")
    views = make_views(objective, [image], [raw_batch(image, 6)], seed=1)
    labels = views[0]["labels"].tolist()
    assert len(set(labels)) < len(labels), "the batch should hold two rows of one class"
    loss = objective(*views).loss
    with torch.no_grad():
        projections = objective.network(views[0]["views"])  # no batch norm: the same values again

    anchors = [(i, v) for i in range(6) for v in range(3)]
    unit = {(i, v): projections[v][i] / projections[v][i].norm() for i, v in anchors}
    terms = []
    for a in anchors:
        others = [b for b in anchors if b != a]
        positives = [b for b in others if labels[b[0]] == labels[a[0]]]
        log_denominator = math.log(sum(math.exp(float(unit[a] @ unit[b]) / 0.1) for b in others))
        terms.append(-sum(float(unit[a] @ unit[p]) / 0.1 - log_denominator for p in positives) / len(positives))
    assert float(loss.detach()) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_supcon_without_labels_names_the_recipe_key(image):
    objective = _fresh(image)
    views = make_views(objective, [image], [raw_batch(image, 4)], seed=1)
    views[0].pop("labels")  # what a dataset without a mapped label column yields
    with pytest.raises(ValueError, match=r"data\.columns\.label"):
        objective(*views)


def test_supcon_learns_on_images_and_round_trips(image):
    objective = _fresh(image)
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=30, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    assert sum(losses[-5:]) / 5 < math.log(2 * 16 - 1) - 0.5, losses  # chance: all 31 others alike
    assert_state_round_trip(objective, lambda: _fresh(image))


@pytest.mark.slow
def test_supcon_learns_on_spoken_digits(data_root):
    # FSDD files sort by digit: keep two takes of one speaker, so 16 rows hold digits 0-7 twice each.
    audio = tiny_setup("audio", data_root, rows=16, options={"where": {"speaker": "george", "take": "0..1"}})
    batch = raw_batch(audio, 16)
    assert batch["labels"].tolist() == [d for d in range(8) for _ in range(2)]
    objective = build_objective("supcon", [audio.encoder], OPTIONS)
    losses = overfit(objective, [audio], [batch], steps=20, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses


@pytest.mark.slow
def test_supcon_two_processes_equal_one(image):
    views = make_views(build_supcon(), [image], [raw_batch(image, 12)], seed=3)
    distributed_equivalence(build_supcon, views, sizes=[7, 5])
