"""MLM: learns on text, decodes with the input embeddings (tied) or its own layer, is BERT's
cross-entropy over the masked tokens, state round-trips, and 2 processes equal 1."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from domains.text.tokenizer import save_tokenizer
from multissl.objectives import build_objective
from tests.objective_factories import text_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)


@pytest.fixture(scope="module")
def text(data_root):
    return tiny_setup("text", data_root, rows=16)


def test_mlm_overfits_a_small_batch_and_round_trips(text, data_root):
    objective = build_objective("mlm", [text.encoder], {"mask_ratio": 0.3})
    losses = overfit(objective, [text], [raw_batch(text, 16)], steps=25, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    assert not [name for name, p in objective.named_parameters() if p.requires_grad and p.grad is None], "DDP needs every parameter used"
    assert_state_round_trip(objective, lambda: build_objective(
        "mlm", [tiny_setup("text", data_root, rows=16).encoder], {"mask_ratio": 0.3}))


@pytest.mark.parametrize("tie_weights", [True, False])
def test_mlm_loss_is_cross_entropy_over_masked_tokens(text, tie_weights):
    objective = build_objective("mlm", [text.encoder], {"tie_weights": tie_weights}).eval()
    (views,) = make_views(objective, [text], [raw_batch(text, 8)], seed=4)
    out = objective(views)
    embeddings = text.encoder.model.get_input_embeddings().weight
    sequence = text.encoder(**views["inputs"]).sequence
    terms = []
    for b, t in views["mask"].nonzero().tolist():
        hidden = objective.transform(sequence[b, t])
        logits = hidden @ embeddings.T + objective.bias if tie_weights else objective.decoder(hidden)
        terms.append(-F.log_softmax(logits, dim=0)[views["targets"][b, t]])
    torch.testing.assert_close(out.loss, torch.stack(terms).mean())
    assert objective.tied is tie_weights
    # tied, the softmax trains every embedding row, also of tokens absent from the input;
    # untied, those rows get no gradient at all
    objective.zero_grad()
    out.loss.backward()
    absent = torch.ones(embeddings.shape[0], dtype=torch.bool)
    absent[views["inputs"]["input_ids"].unique()] = False
    absent_grad = embeddings.grad[absent].abs().amax()
    assert (absent_grad > 0) if tie_weights else (absent_grad == 0), absent_grad


def test_mlm_two_processes_equal_one(text, tmp_path):
    save_tokenizer(text.domain.tokenizer, tmp_path)
    factory = functools.partial(text_objective, str(tmp_path), "mlm", {"mask_ratio": 0.3})
    views = make_views(factory(), [text], [raw_batch(text, 10)], seed=2)
    distributed_equivalence(factory, views, sizes=[7, 3])
