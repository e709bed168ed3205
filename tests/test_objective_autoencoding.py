"""Denoising autoencoder and context encoder: both learn on real images, the denoising loss is the
emphasised criterion, the context encoder's adversarial term trains each side only on its own
part, the decoder fits every image encoder, state round-trips, and 2 processes equal 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

DENOISING = {"noise": "masking", "noise_fraction": 0.3, "decoder_width": 32}
CONTEXT = {"decoder_width": 32}
ADVERSARIAL = {"decoder_width": 32, "adversarial_weight": 0.1, "discriminator_width": 8}


def build(name, options, architecture="convnext"):
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16, "normalization": "cifar10"}).build_encoder(
        EncoderConfig(architecture, "tiny"))
    return build_objective(name, [encoder], options)


def build_adversarial_context_encoder():
    return build("context_encoder", ADVERSARIAL)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=12)


@pytest.mark.parametrize("name, options", [("denoising_autoencoder", DENOISING), ("context_encoder", CONTEXT)])
def test_autoencoders_overfit_and_round_trip(image, name, options):
    objective = build_objective(name, [image.encoder], options)
    losses = overfit(objective, [image], [raw_batch(image, 12)], steps=15, lr=3e-3)
    assert sum(losses[-4:]) / 4 < 0.6 * sum(losses[:4]) / 4, losses
    # the decoder reads the feature map, so only ConvNeXt's pooled-output norm idles (recipes set
    # train.find_unused_parameters for it)
    unused = {name for name, p in objective.named_parameters() if p.grad is None}
    assert unused == {"encoder.model.layernorm.weight", "encoder.model.layernorm.bias"}, unused
    assert_state_round_trip(objective, lambda: build(name, options))


def test_denoising_loss_is_the_emphasised_criterion(image):
    objective = build("denoising_autoencoder", {**DENOISING, "corrupted_weight": 1.0, "clean_weight": 0.25}).eval()
    (views,) = make_views(objective, [image], [raw_batch(image, 4)], seed=0)
    with torch.no_grad():
        prediction = objective.reconstruct(views)
        loss = objective(views).loss
    error = (prediction - views["targets"]) ** 2
    corrupted = views["mask"]
    assert 0 < corrupted.float().mean() < 1
    expected = (1.0 * error[corrupted].sum() + 0.25 * error[~corrupted].sum()) / (
        1.0 * corrupted.sum() + 0.25 * (~corrupted).sum())
    torch.testing.assert_close(loss, expected)


def test_adversarial_terms_train_each_side_on_its_own_part(image):
    """Discriminator weights get exactly the gradient of -log D(real) - log(1 - D(filled)); the
    encoder-decoder gets exactly that of the L2 term + weight * -log D(filled)."""
    objective = build_adversarial_context_encoder()
    (views,) = make_views(objective, [image], [raw_batch(image, 6)], seed=0)
    objective(views).loss.backward()
    got = {name: p.grad.clone() for name, p in objective.named_parameters() if p.grad is not None}

    reference = build_adversarial_context_encoder()
    prediction = reference.reconstruct(views)
    removed = views["mask"].expand_as(prediction)
    filled = torch.where(removed, prediction, views["targets"])
    D = reference.discriminator
    discriminator_loss = (F.softplus(-D(views["targets"])) + F.softplus(D(filled.detach()))).mean()
    discriminator_grads = torch.autograd.grad(discriminator_loss, list(D.parameters()))
    l2 = ((prediction - views["targets"]) ** 2)[removed].mean()
    generator_loss = l2 + ADVERSARIAL["adversarial_weight"] * F.softplus(-D(filled)).mean()
    decoder = list(reference.decoder.parameters())
    generator_grads = torch.autograd.grad(generator_loss, decoder)

    for (name, _), grad in zip(D.named_parameters(), discriminator_grads):
        torch.testing.assert_close(got[f"discriminator.{name}"], grad, msg=name)
    for (name, _), grad in zip(reference.decoder.named_parameters(), generator_grads):
        torch.testing.assert_close(got[f"decoder.{name}"], grad, msg=name)


@pytest.mark.parametrize("architecture", ["vit", "convnext", "resnet"])
def test_decoder_reconstructs_the_image_layout_for_every_encoder(image, architecture):
    objective = build("context_encoder", {**CONTEXT, "mask": "block"}, architecture)
    (views,) = make_views(objective, [image], [raw_batch(image, 2)], seed=0)
    assert objective.reconstruct(views).shape == views["targets"].shape == (2, 3, 16, 16)


def test_context_encoder_two_processes_equal_one(image):
    objective = build_adversarial_context_encoder()
    views = make_views(objective, [image], [raw_batch(image, 10)], seed=1)
    distributed_equivalence(build_adversarial_context_encoder, views, sizes=[6, 4])
