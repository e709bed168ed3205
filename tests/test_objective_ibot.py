"""iBOT / DINOv2's objective: learns on real images, the student never sees its masked patches (the
ViT's mask token replaces them), the three terms add up with their weights, it refuses encoders it
cannot use, its state (teacher, both centres, step) round-trips, and 2 processes equal 1 over two
steps (centres, KoLeo's global nearest neighbours and the per-image patch mean)."""

from __future__ import annotations

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from tests.objective_harness import (
    Setup, assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

OPTIONS = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "local_views": 2, "freeze_last_layer_steps": 0,
           "teacher_temperature_warmup_steps": 0, "mask_probability": 0.5}
DOMAIN = {"image_size": 16, "vit_mask_token": True}


def build_ibot(**options):
    torch.manual_seed(0)
    encoder = build_domain("image", DOMAIN).build_encoder(EncoderConfig("vit", "tiny", pooling="cls"))
    return build_objective("ibot", [encoder], {**OPTIONS, **options})


@pytest.fixture(scope="module")
def image(data_root):
    setup = tiny_setup("image", data_root, architecture="vit", rows=16, options={"vit_mask_token": True})
    torch.manual_seed(0)
    return Setup(setup.domain, setup.dataset, setup.domain.build_encoder(EncoderConfig("vit", "tiny", pooling="cls")))


def test_ibot_overfits_a_small_batch_and_round_trips(image):
    objective = build_objective("ibot", [image.encoder], OPTIONS)
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=15, lr=3e-3)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5, losses
    assert objective.cls_centering.center.abs().sum() > 0 and objective.patch_centering.center.abs().sum() > 0
    assert not [name for name, p in objective.named_parameters() if p.requires_grad and p.grad is None], \
        "DDP needs every parameter used (the mask token included)"
    assert_state_round_trip(objective, build_ibot)


def test_views_mask_the_global_crops_only(image):
    objective = build_ibot(mask_probability=1.0, mask_ratio_range=(0.25, 0.5))
    (views,) = make_views(objective, [image], [raw_batch(image, 8)], seed=1)
    assert len(views["masks"]) == len(views["masked_views"]) == 2 and len(views["views"]) == 4
    counts = torch.stack(views["masks"]).sum(dim=-1)  # 4 x 4 patches: 4 to 8 masked per image
    assert counts.min() >= 4 and counts.max() <= 8
    for clean, masked, mask in zip(views["views"], views["masked_views"], views["masks"]):
        assert torch.equal(masked["pixel_values"], clean["pixel_values"]) and torch.equal(masked["bool_masked_pos"], mask)
    half = build_ibot()
    (views,) = make_views(half, [image], [raw_batch(image, 16)], seed=2)
    unmasked_rows = (torch.stack(views["masks"]).sum(dim=-1) == 0).float().mean()
    assert 0.2 < unmasked_rows < 0.8  # about half of the rows are not masked at all (DINOv2)


def test_student_never_sees_its_masked_patches(image):
    objective = build_ibot(mask_probability=1.0)
    (views,) = make_views(objective, [image], [raw_batch(image, 4)], seed=3)
    masked = views["masked_views"][0]
    mask = masked["bool_masked_pos"]
    patch = 4
    pixel_mask = mask.view(-1, 1, 4, 4).repeat_interleave(patch, 2).repeat_interleave(patch, 3).expand_as(
        masked["pixel_values"])
    noisy = torch.where(pixel_mask, torch.randn_like(masked["pixel_values"]) * 5, masked["pixel_values"])
    encoder = objective.student["encoder"]
    torch.testing.assert_close(encoder(pixel_values=noisy, bool_masked_pos=mask).sequence,
                               encoder(**masked).sequence, rtol=0, atol=0)
    assert not torch.equal(encoder(pixel_values=noisy).sequence, encoder(pixel_values=masked["pixel_values"]).sequence)


def test_loss_is_the_weighted_sum_of_its_terms(image):
    (views,) = make_views(build_ibot(), [image], [raw_batch(image, 8)], seed=4)
    out = build_ibot()(views)
    logs = out.logs
    expected = logs["dino_loss"] + logs["ibot_loss"] + 0.1 * logs["koleo_loss"]
    torch.testing.assert_close(out.loss.detach(), expected)
    weighted = build_ibot(dino_weight=0.5, ibot_weight=2.0, koleo_weight=0.0)(views)
    torch.testing.assert_close(weighted.loss.detach(), 0.5 * logs["dino_loss"] + 2.0 * logs["ibot_loss"])


def test_ibot_needs_a_vit_with_cls_pooling():
    domain = build_domain("image", DOMAIN)
    with pytest.raises(ValueError, match="pooling: cls"):
        build_objective("ibot", [domain.build_encoder(EncoderConfig("vit", "tiny", pooling="mean"))], OPTIONS)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("vit", "tiny", pooling="cls"))
    with pytest.raises(ValueError, match="vit_mask_token"):
        encoder(pixel_values=torch.zeros(1, 3, 16, 16), bool_masked_pos=torch.ones(1, 16, dtype=torch.bool))


def test_ibot_two_processes_equal_one_over_two_steps(image):
    objective = build_ibot()
    views = make_views(objective, [image], [raw_batch(image, 10)], seed=5)
    distributed_equivalence(build_ibot, views, sizes=[6, 4], steps=2)
