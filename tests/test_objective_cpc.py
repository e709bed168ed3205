"""CPC: learns on real speech, text and image patches, its z and c_t never see the future, its loss
is eq. 4 of the paper, state round-trips, and 2 processes equal 1."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from domains import EncoderConfig, build_domain
from domains.text.tokenizer import save_tokenizer
from multissl.objectives import build_objective
from multissl.objectives.cpc import encode_patch_columns, encode_segments
from multissl.views import ViewRequest
from tests.objective_factories import audio_objective, text_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

TEXT_OPTIONS = {"segment_length": 4, "prediction_steps": 3, "context_dim": 32}
# FSDD at 8 kHz, tiny wav2vec2 (receptive field 325 samples): 400-sample segments give one frame each
AUDIO_OPTIONS = {"segment_length": 400, "prediction_steps": 3, "context_dim": 32}


@pytest.fixture(scope="module")
def text(data_root):
    return tiny_setup("text", data_root, rows=16)


@pytest.fixture(scope="module")
def audio(data_root):
    return tiny_setup("audio", data_root, rows=8)


def naive_cpc_loss(z, valid, contexts, weights, steps):
    """Eq. 4 by loops: every counted (b, t, k) against every valid z of the batch."""
    candidates = z[valid]
    terms = []
    batch, length, dim = z.shape
    for b in range(batch):
        for t in range(length):
            for k in range(1, steps + 1):
                if t + k >= length or not (valid[b, t] and valid[b, t + k]):
                    continue
                prediction = weights[(k - 1) * dim : k * dim] @ contexts[b, t]
                scores = candidates @ prediction
                positive = z[b, t + k] @ prediction
                terms.append(torch.logsumexp(scores, 0) - positive)
    return torch.stack(terms).mean()


def test_cpc_on_text_overfits_round_trips_and_is_eq_4(text, data_root):
    objective = build_objective("cpc", [text.encoder], TEXT_OPTIONS)
    batch = raw_batch(text, 8)
    losses = overfit(objective, [text], [batch], steps=15, lr=3e-3)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 1.0, losses
    assert not [name for name, p in objective.named_parameters() if p.requires_grad and p.grad is None], "DDP needs every parameter used"

    objective.eval()  # dropout off: the loops below see the same z
    (views,) = make_views(objective, [text], [batch], seed=1)
    out = objective(views)
    with torch.no_grad():
        z, valid = encode_segments(text.encoder, views["inputs"], views["valid"], TEXT_OPTIONS["segment_length"])
        expected = naive_cpc_loss(z, valid, objective.contexts(z), objective.predictors.weight, 3)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)
    assert all(0 <= float(out.logs[f"accuracy_step{k}"]) <= 1 for k in (1, 2, 3))
    assert float(out.logs["accuracy_step1"]) > 0.5, "overfitting a batch should predict the next segment"
    assert_state_round_trip(objective, lambda: build_objective(
        "cpc", [tiny_setup("text", data_root, rows=16).encoder], TEXT_OPTIONS))


def test_cpc_on_audio_overfits_with_a_causal_transformer(audio):
    options = {**AUDIO_OPTIONS, "context": "transformer", "context_layers": 1, "context_heads": 2}
    objective = build_objective("cpc", [audio.encoder], options)
    losses = overfit(objective, [audio], [raw_batch(audio, 6)], steps=15, lr=3e-3)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3, losses
    assert not [name for name, p in objective.named_parameters() if p.requires_grad and p.grad is None], "DDP needs every parameter used"


@pytest.mark.parametrize("context", ["gru", "transformer"])
def test_context_network_is_causal(context):
    torch.manual_seed(0)
    encoder = torch.nn.Identity()
    encoder.dim = 8
    objective = build_objective("cpc", [encoder], {"context": context, "context_dim": 16, "context_heads": 2})
    z = torch.randn(2, 10, 8)
    changed = z.clone()
    changed[:, 6:] = torch.randn(2, 4, 8)
    before, after = objective.contexts(z), objective.contexts(changed)
    torch.testing.assert_close(after[:, :6], before[:, :6], rtol=0, atol=1e-6)
    assert (after[:, 6:] - before[:, 6:]).abs().amax() > 1e-3, "c_t must depend on z_t"


def test_segments_never_see_later_tokens(text):
    """Changing the tokens of segment s and later leaves z_1..z_{s-1} (and so c_t) unchanged, while
    the bidirectional encoder's own token sequence does change: why CPC encodes segments alone."""
    objective = build_objective("cpc", [text.encoder], TEXT_OPTIONS).eval()
    inputs = raw_batch(text, 4)
    inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    cut = 2 * TEXT_OPTIONS["segment_length"]  # segments 0 and 1 stay, the rest change
    changed = dict(inputs, input_ids=inputs["input_ids"].clone())
    changed["input_ids"][:, cut:] = torch.randint(5, 100, changed["input_ids"][:, cut:].shape)
    with torch.no_grad():
        z, valid = encode_segments(text.encoder, inputs, inputs["attention_mask"].bool(), TEXT_OPTIONS["segment_length"])
        z_changed, _ = encode_segments(text.encoder, changed, changed["attention_mask"].bool(), TEXT_OPTIONS["segment_length"])
        torch.testing.assert_close(z_changed[:, :2], z[:, :2], rtol=0, atol=1e-6)
        torch.testing.assert_close(objective.contexts(z_changed)[:, :2], objective.contexts(z)[:, :2], rtol=0, atol=1e-6)
        assert (z_changed[:, 2:] - z[:, 2:]).abs().amax() > 1e-3
        whole = text.encoder(**inputs).sequence[:, :cut]
        whole_changed = text.encoder(**changed).sequence[:, :cut]
        assert (whole - whole_changed).abs().amax() > 1e-3, "BERT's tokens see the future: this check would be moot"


def test_segments_follow_padding(audio):
    """Audio: trailing segments of a short clip are invalid and never encoded; a too-short input
    is a clear error."""
    objective = build_objective("cpc", [audio.encoder], AUDIO_OPTIONS).eval()
    (views,) = make_views(objective, [audio], [raw_batch(audio, 4)], seed=0)
    inputs = dict(views["inputs"])
    inputs["attention_mask"] = inputs["attention_mask"].clone()
    inputs["attention_mask"][0, 1000:] = 0
    with torch.no_grad():
        _, valid = encode_segments(audio.encoder, inputs, inputs["attention_mask"].bool(), 400)
    assert valid[0].tolist() == [True, True] + [False] * (valid.shape[1] - 2)  # 1000 samples: 2 frames of 400
    short = {key: value[:, :300] for key, value in views["inputs"].items()}
    with pytest.raises(ValueError, match="segment"):
        objective({"inputs": short, "valid": short["attention_mask"].bool()})


def test_cpc_two_processes_equal_one_on_text(text, tmp_path):
    save_tokenizer(text.domain.tokenizer, tmp_path)
    factory = functools.partial(text_objective, str(tmp_path), "cpc", TEXT_OPTIONS)
    views = make_views(factory(), [text], [raw_batch(text, 10)], seed=2)
    distributed_equivalence(factory, views, sizes=[6, 4])


@pytest.mark.slow
def test_cpc_two_processes_equal_one_on_audio(audio):
    factory = functools.partial(audio_objective, "cpc", {**AUDIO_OPTIONS, "context": "transformer", "context_heads": 2})
    views = make_views(factory(), [audio], [raw_batch(audio, 6)], seed=2)
    distributed_equivalence(factory, views, sizes=[4, 2])


# --- 2-D CPC on image patches (section 3.3) ----------------------------------------------------

IMAGE_DOMAIN = {"image_size": 32, "pretext": {"tile_size": 16}}  # 8 px patches at stride 4: a 7 x 7 grid
IMAGE_OPTIONS = {"prediction_steps": 2, "context_dim": 32}


def build_image_cpc():
    torch.manual_seed(0)
    encoder = build_domain("image", IMAGE_DOMAIN).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("cpc", [encoder], IMAGE_OPTIONS)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=8, options=IMAGE_DOMAIN)


def test_image_sequence_view_is_a_grid_of_overlapping_patches(image):
    """Row-major 8 px patches at stride 4 of the (possibly flipped) normalised image, resized to 16 px."""
    from domains.image.views import plain_views

    batch = raw_batch(image, 4)
    views = image.domain.make_views(batch, ViewRequest("sequence"), torch.Generator().manual_seed(0))
    assert views["grid"] == (7, 7) and len(views["parts"]) == 49
    whole = plain_views(batch["images"], image.domain.config)["inputs"]["pixel_values"]  # [B, 3, 32, 32]
    for b in range(4):
        for row, column in ((0, 0), (3, 5), (6, 6)):
            part = views["parts"][row * 7 + column]["pixel_values"][b]
            candidates = [whole[b], whole[b].flip(-1)]  # the view flips a random half of the images
            crops = [F.interpolate(c[None, :, 4 * row:4 * row + 8, 4 * column:4 * column + 8], size=16,
                                   mode="bilinear", align_corners=False)[0] for c in candidates]
            assert min(float((part - crop).abs().max()) for crop in crops) < 1e-4, (b, row, column)
    with pytest.raises(ValueError, match="takes no options"):
        image.domain.make_views(batch, ViewRequest("sequence", {"crop_seconds": 1.0}), torch.Generator())


def test_cpc_on_image_patches_overfits_and_is_eq_4_down_the_columns(image):
    objective = build_image_cpc()
    batch = raw_batch(image, 6)
    losses = overfit(objective, [image], [batch], steps=15, lr=3e-3)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5, losses
    assert not [name for name, p in objective.named_parameters() if p.requires_grad and p.grad is None], "DDP needs every parameter used"

    objective.eval()
    (views,) = make_views(objective, [image], [batch], seed=1)
    out = objective(views)
    with torch.no_grad():
        z, valid = encode_patch_columns(objective.encoder, views["parts"], views["grid"])
        # column j of image b is sequence b * 7 + j; its row i is the patch (i, j)
        direct = objective.encoder(**views["parts"][3 * 7 + 5]).pooled[2]
        torch.testing.assert_close(z[2 * 7 + 5, 3], direct, rtol=1e-5, atol=1e-5)
        expected = naive_cpc_loss(z, valid, objective.contexts(z), objective.predictors.weight, 2)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)
    assert_state_round_trip(objective, build_image_cpc)


def test_cpc_two_processes_equal_one_on_image_patches(image):
    views = make_views(build_image_cpc(), [image], [raw_batch(image, 6)], seed=2)
    distributed_equivalence(build_image_cpc, views, sizes=[4, 2])
