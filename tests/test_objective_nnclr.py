"""NNCLR: nearest neighbours are the paper's, the loss is eq. 2 symmetrised, it learns on images
and text, the support set round-trips, and 2 processes equal 1."""

from __future__ import annotations

import math

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from multissl.objectives.nnclr import nearest_neighbours
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

MILD = {"augment": {"crop_scale": (0.5, 1.0), "jitter_strength": 0.5, "blur_probability": 0.0}}
OPTIONS = {"projection_dim": 16, "hidden_dim": 32, "predictor_hidden_dim": 32, "support_size": 32, "temperature": 0.1}


def build_nnclr():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("nnclr", [encoder], OPTIONS)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=16, options=MILD)


def _fresh(setup, architecture="resnet"):
    torch.manual_seed(0)
    return build_objective("nnclr", [setup.domain.build_encoder(EncoderConfig(architecture, "tiny"))], OPTIONS)


def test_nearest_neighbours_are_the_closest_unit_vectors():
    generator = torch.Generator().manual_seed(0)
    embeddings, support = torch.randn(6, 5, generator=generator), torch.randn(9, 5, generator=generator) * 3
    found = nearest_neighbours(embeddings, support)
    for i, z in enumerate(embeddings):
        unit = z / z.norm()
        distances = [float((unit - q / q.norm()).norm()) for q in support]
        best = support[distances.index(min(distances))]
        torch.testing.assert_close(found[i], best / best.norm())


def test_nnclr_loss_is_equation_2_symmetrised_and_enqueues_the_first_view(image):
    objective = _fresh(image)
    with torch.no_grad():  # a support set of real-looking, distinct rows
        objective.support_set.keys.copy_(torch.nn.functional.normalize(torch.randn(32, 16), dim=1))
    views = make_views(objective, [image], [raw_batch(image, 8)], seed=1)
    support = objective.support_set.keys.clone()
    loss = objective(*views).loss

    # The same forward again (train-mode batch norm depends only on the batch), then eq. 2 by loops.
    with torch.no_grad():
        z1, z2 = objective.network(views[0]["views"][:2])
        p1, p2 = objective.predictor(torch.cat([z1, z2])).chunk(2)

    def cosine(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    def one_way(z, p):
        total = 0.0
        for i in range(len(z)):
            neighbour = support[max(range(len(support)), key=lambda j: cosine(z[i], support[j]))]
            scores = [cosine(neighbour, p[k]) / 0.1 for k in range(len(p))]
            total += -(scores[i] - math.log(sum(math.exp(s) for s in scores)))
        return total / len(z)

    expected = (one_way(z1, p2) + one_way(z2, p1)) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(objective.support_set.keys[:8], torch.nn.functional.normalize(z1, dim=1))
    torch.testing.assert_close(objective.support_set.keys[8:], support[8:])


def test_nnclr_learns_on_images_and_round_trips_the_support_set(image):
    objective = _fresh(image)
    steps = 30
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=steps, lr=3e-3)
    # After two steps the support set (32 rows) holds only real embeddings; compare from there.
    # Neighbours are poor positives until the network tells images apart, so on images a tiny
    # network only climbs from worse than chance to about chance here; text below goes further.
    assert sum(losses[-5:]) / 5 < sum(losses[2:7]) / 5 - 0.5, losses
    assert int(objective.support_set.total_enqueued) == steps * 16
    assert {"support_set.keys", "support_set.pointer", "support_set.total_enqueued"} <= set(objective.state_dict())
    assert_state_round_trip(objective, lambda: _fresh(image))


def test_nnclr_learns_on_text(data_root):
    """Text views are identical copies (the domain's dropout policy) that dropout makes differ."""
    text = tiny_setup("text", data_root, rows=16)
    torch.manual_seed(0)
    objective = build_objective("nnclr", [text.encoder], OPTIONS)
    losses = overfit(objective, [text], [raw_batch(text, 16)], steps=20, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[2:7]) / 5 - 0.5, losses
    assert sum(losses[-5:]) / 5 < math.log(16) - 1.0, losses  # chance: log(16) candidates alike


@pytest.mark.slow
def test_nnclr_two_processes_equal_one(image):
    """Exact: every process looks neighbours up in the same support set, and the predictions of the
    global batch are the candidates. The tiny ConvNeXt's stem gradients reach ~40 here, so float32
    summation order alone moves them by ~5e-5 (a relative 1e-6): atol is set for that scale."""
    views = make_views(build_nnclr(), [image], [raw_batch(image, 12)], seed=3)
    distributed_equivalence(build_nnclr, views, sizes=[7, 5], atol=2e-4)
