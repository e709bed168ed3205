"""Masked frame prediction: both targets learn on speech-like audio, the contrastive loss is wav2vec 2.0's
eq. 3 over the utterance's masked frames, the masked frames really reach the encoder, state
round-trips, and 2 processes equal 1."""

from __future__ import annotations

import functools

import pytest
import torch

from multissl.objectives import build_objective
from multissl.losses import masked_frame_contrastive
from tests.objective_factories import audio_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

CONTRASTIVE = {"target": "contrastive", "projection_dim": 16}


@pytest.fixture(scope="module")
def audio(data_root):
    return tiny_setup("audio", data_root, rows=8)


@pytest.mark.parametrize("options", [{}, CONTRASTIVE], ids=["regression", "contrastive"])
def test_masked_frames_overfit_and_round_trip(audio, data_root, options):
    objective = build_objective("masked_frames", [audio.encoder], options)
    losses = overfit(objective, [audio], [raw_batch(audio, 6)], steps=15, lr=3e-3)
    assert sum(losses[-4:]) / 4 < 0.75 * sum(losses[:4]) / 4, losses
    assert not [name for name, p in objective.named_parameters() if p.requires_grad and p.grad is None], "DDP needs every parameter used"
    assert_state_round_trip(objective, lambda: build_objective(
        "masked_frames", [tiny_setup("audio", data_root, rows=8).encoder], options))


def test_contrastive_loss_is_eq_3_over_the_utterance():
    torch.manual_seed(0)
    context, quantized = torch.randn(3, 7, 5), torch.randn(3, 7, 5)
    mask = torch.rand(3, 7) < 0.5
    mask[:, 0] = True
    temperature = 0.1
    terms = []
    for b in range(3):
        for t in range(7):
            if not mask[b, t]:
                continue
            cosine = lambda s: torch.nn.functional.cosine_similarity(context[b, t], quantized[b, s], dim=0)
            denominator = sum(torch.exp(cosine(s) / temperature) for s in range(7) if mask[b, s])
            terms.append(-torch.log(torch.exp(cosine(t) / temperature) / denominator))
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(masked_frame_contrastive(context, quantized, mask, temperature), expected)


def test_masked_frames_reach_the_encoder_as_mask_embeddings(audio):
    """The loss depends on which frames are masked (the view's mask_time_indices is used), and a
    wrong target width is a clear error naming the option."""
    objective = build_objective("masked_frames", [audio.encoder], {}).eval()
    (views,) = make_views(objective, [audio], [raw_batch(audio, 4)], seed=0)
    features = objective.encoder(**views["inputs"]).sequence
    unmasked = objective.encoder(**{k: v for k, v in views["inputs"].items() if k != "mask_time_indices"}).sequence
    assert (features - unmasked)[views["mask"]].abs().amax() > 1e-3
    wrong = build_objective("masked_frames", [audio.encoder], {"target_dim": 40})
    with pytest.raises(ValueError, match="target_dim"):
        wrong(views)


def test_masked_frames_two_processes_equal_one(audio):
    factory = functools.partial(audio_objective, "masked_frames", CONTRASTIVE)
    views = make_views(factory(), [audio], [raw_batch(audio, 6)], seed=1)
    distributed_equivalence(factory, views, sizes=[4, 2])
