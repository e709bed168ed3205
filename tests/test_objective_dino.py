"""DINO: learns on real images (multi-crop) and audio, its head and schedules do what the reference
does (cosine logits, teacher temperature warm-up, last layer frozen, centre), its state (EMA teacher,
centre, step) round-trips, and 2 processes equal 1 over two steps (the centre moved by the first)."""

from __future__ import annotations

import copy

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.losses import dino
from multissl.modules import DINOHead
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

OPTIONS = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "local_views": 2, "freeze_last_layer_steps": 0}


def build_dino(**options):
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("vit", "tiny", pooling="cls"))
    return build_objective("dino", [encoder], {**OPTIONS, **options})


def _mean(values):
    return sum(values) / len(values)


@torch.no_grad()
def _loss_against_the_final_teacher(objective, student, setup, batch) -> float:
    """DINO's loss of ``student`` on fresh views against the objective's teacher and centre: a trained
    student must match the teacher better than the student it started as (the running loss alone
    also moves with the centre, which starts at 0)."""
    (views,) = make_views(objective, [setup], [batch], seed=999)
    teacher = objective.teacher(views["views"][:2])
    return float(dino(student(views["views"]), teacher, objective.centering.center, 0.1, 0.04))


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, architecture="vit", rows=16)


def test_dino_overfits_images_with_local_crops_and_round_trips(image):
    objective = build_objective("dino", [image.encoder], OPTIONS)
    (views,) = make_views(objective, [image], [raw_batch(image, 4)], seed=1)
    assert [v["pixel_values"].shape[-1] for v in views["views"]] == [16, 16, 8, 8]  # 2 globals, 2 locals
    initial, batch = copy.deepcopy(objective.student), raw_batch(image, 16)
    losses = overfit(objective, [image], [batch], steps=20, lr=3e-3)
    # ln(64) = 4.16 for unrelated distributions; matching crops drives the cross-entropy down
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.8, losses
    trained = _loss_against_the_final_teacher(objective, objective.student, image, batch)
    assert trained < _loss_against_the_final_teacher(objective, initial, image, batch) - 1.0
    assert objective.centering.center.abs().sum() > 0, "the centre never moved"
    teacher = dict(objective.teacher.module.named_parameters())
    assert any(not torch.equal(teacher[k], v) for k, v in objective.student.named_parameters()), "teacher never moved"
    assert int(objective.steps_done) == 20
    assert_state_round_trip(objective, build_dino)


def test_head_logits_are_cosines_with_a_normalised_last_layer():
    torch.manual_seed(0)
    x = torch.randn(5, 8) * 10
    head = DINOHead(8, out_dim=12, hidden_dim=16, bottleneck_dim=4)
    logits = head(x)
    assert logits.shape == (5, 12) and logits.abs().max() <= 1 + 1e-6
    assert [name for name, _ in head.named_parameters() if "last_layer" in name] == ["last_layer.weight"]
    learned = DINOHead(8, out_dim=12, hidden_dim=16, bottleneck_dim=4, norm_last_layer=False)
    assert learned.last_layer_scale is not None and learned.last_layer_scale.requires_grad


def test_teacher_temperature_warms_up_and_the_last_layer_thaws(image):
    objective = build_dino(warmup_teacher_temperature=0.04, teacher_temperature=0.08,
                           teacher_temperature_warmup_steps=4, freeze_last_layer_steps=2)
    (views,) = make_views(objective, [image], [raw_batch(image, 4)], seed=2)

    def step(done: int):
        objective.steps_done.fill_(done)
        objective.zero_grad(set_to_none=True)
        out = objective(views)
        out.loss.backward()
        return out, objective.student.head.last_layer.weight.grad

    out, grad = step(0)
    assert float(out.logs["teacher_temperature"]) == pytest.approx(0.04)
    assert grad is not None and grad.abs().max() == 0, "frozen last layer received a gradient"
    assert objective.student.head.mlp[0].weight.grad.abs().max() > 0  # the rest of the head still learns
    out, grad = step(2)
    assert float(out.logs["teacher_temperature"]) == pytest.approx(0.06)
    assert grad.abs().max() > 0
    out, _ = step(10)
    assert float(out.logs["teacher_temperature"]) == pytest.approx(0.08)


def test_centre_is_the_ema_of_the_teachers_global_crops(image):
    objective = build_dino()
    (views,) = make_views(objective, [image], [raw_batch(image, 4)], seed=3)
    teacher = torch.cat(objective.teacher(views["views"][:2]))
    objective(views)
    torch.testing.assert_close(objective.centering.center, 0.1 * teacher.mean(dim=0), rtol=1e-5, atol=1e-6)


def test_dino_two_processes_equal_one_over_two_steps(image):
    objective = build_dino()
    views = make_views(objective, [image], [raw_batch(image, 10)], seed=4)
    distributed_equivalence(build_dino, views, sizes=[6, 4], steps=2)


@pytest.mark.slow  # a second domain: runs in CI, kept out of the quick loop
def test_dino_overfits_audio_without_local_crops(data_root):
    setup = tiny_setup("audio", data_root, rows=16)
    objective = build_objective("dino", [setup.encoder], {**OPTIONS, "local_views": 0})
    initial, batch = copy.deepcopy(objective.student), raw_batch(setup, 16)
    losses = overfit(objective, [setup], [batch], steps=15, lr=1e-3)
    # the running loss starts low (a random wav2vec2 gives every clip nearly the same output) and
    # rises as the centre removes that shared part; the student still learns the teacher's targets
    trained = _loss_against_the_final_teacher(objective, objective.student, setup, batch)
    assert trained < _loss_against_the_final_teacher(objective, initial, setup, batch) - 0.2, losses
