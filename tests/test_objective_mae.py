"""MAE: learns on real images, its encoder sees the visible patches only, the decoder puts every
token back where it came from, it refuses non-ViT encoders, state round-trips, 2 processes equal 1
(masks fixed in the views)."""

from __future__ import annotations

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from multissl.modules import sincos_2d
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

OPTIONS = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}


def build_mae():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("vit", "tiny"))
    return build_objective("mae", [encoder], OPTIONS)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, architecture="vit", rows=12)


def test_mae_overfits_a_small_batch_and_round_trips(image):
    objective = build_objective("mae", [image.encoder], OPTIONS)
    losses = overfit(objective, [image], [raw_batch(image, 12)], steps=20, lr=3e-3)
    # norm_pix targets have unit variance per patch: a loss well below 1 means real reconstruction
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5 and losses[-1] < 1.0, losses
    assert not [name for name, p in objective.named_parameters() if p.requires_grad and p.grad is None], "DDP needs every parameter used"
    assert_state_round_trip(objective, build_mae)


def test_encoder_sees_only_the_visible_patches(image):
    objective = build_mae()
    (views,) = make_views(objective, [image], [raw_batch(image, 4)], seed=5)
    pixels = views["inputs"]["pixel_values"].clone().requires_grad_(True)
    patch = objective.patch_size
    columns = pixels.shape[-1] // patch
    # a per-pixel map of the masked patches
    masked_pixels = views["mask"].view(-1, 1, columns, columns).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    noisy = torch.where(masked_pixels, torch.randn_like(pixels) * 5, pixels.detach())

    encoder = objective.encoder
    keep = views["inputs"]["keep_index"]
    torch.testing.assert_close(encoder(pixel_values=noisy, keep_index=keep).sequence,
                               encoder(pixel_values=pixels.detach(), keep_index=keep).sequence, rtol=0, atol=0)
    # the loss reads the masked pixels only through the targets, never through the encoder
    views = dict(views, inputs=dict(views["inputs"], pixel_values=pixels))
    objective(views).loss.backward()
    masked_grad = pixels.grad.abs()[masked_pixels.expand_as(pixels)]
    visible_grad = pixels.grad.abs()[~masked_pixels.expand_as(pixels)]
    assert masked_grad.max() == 0 and visible_grad.max() > 0


def test_decoder_puts_tokens_back_in_place():
    """The decoder's input equals a loop that writes visible token i at patch keep_index[i] and
    the mask token elsewhere, plus the position code of each patch."""
    torch.manual_seed(0)
    decoder = build_mae().decoder
    visible = torch.randn(2, 3, 64)
    keep_index = torch.tensor([[0, 5, 9], [2, 3, 15]])
    captured = {}
    decoder.blocks.register_forward_pre_hook(lambda module, args: captured.setdefault("input", args[0]))
    decoder(visible, keep_index, (4, 4))
    expected = decoder.mask_token.detach().expand(2, 16, 32).clone()
    for row in range(2):
        for slot, patch in enumerate(keep_index[row].tolist()):
            expected[row, patch] = decoder.embed(visible[row, slot]).detach()
    expected = expected + sincos_2d(4, 4, 32)
    torch.testing.assert_close(captured["input"].detach(), expected)


def test_mae_needs_a_vit():
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    with pytest.raises(ValueError, match=r"encoder\.architecture: vit"):
        build_objective("mae", [encoder], OPTIONS)


def test_mae_two_processes_equal_one(image):
    objective = build_mae()
    views = make_views(objective, [image], [raw_batch(image, 10)], seed=3)
    distributed_equivalence(build_mae, views, sizes=[6, 4])
