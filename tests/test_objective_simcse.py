"""SimCSE: unsupervised learns on captions, supervised is eq. 5 of the paper with hard
negatives (eq. 4 without), state round-trips, and 2 processes equal 1 (dropout off)."""

from __future__ import annotations

import functools
import json

import math

import pytest
import torch
import torch.nn.functional as F

from domains import DataConfig, EncoderConfig, build_domain
from domains.text.tokenizer import save_tokenizer
from multissl.objectives import build_objective
from tests.objective_factories import TEXT_NO_DROPOUT, text_objective
from tests.objective_harness import (
    Setup, assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

TEMPERATURE = 0.05


@pytest.fixture(scope="module")
def captions(data_root):
    return tiny_setup("text", data_root, rows=16, architecture=None)


@pytest.fixture(scope="module")
def triplets(data_root, tmp_path_factory):
    """STS-B pairs as (anchor, positive, hard negative): the negative is another pair's sentence."""
    lines = (data_root / "text/stsb/sts-train.csv").read_text(encoding="utf-8").splitlines()[:40]
    pairs = [line.split("\t")[5:7] for line in lines]
    path = tmp_path_factory.mktemp("triplets") / "triplets.jsonl"
    with path.open("w", encoding="utf-8") as file:
        for index, (anchor, positive) in enumerate(pairs):
            negative = pairs[(index + 7) % len(pairs)][1]
            file.write(json.dumps({"text": anchor, "text_pair": positive, "hard_negative": negative}) + "\n")
    torch.manual_seed(0)
    domain = build_domain("text", {"tokenizer": "train", "vocab_size": 300, "max_length": 32})
    dataset = domain.load(DataConfig(path=str(path)))
    encoder = domain.build_encoder(EncoderConfig("bert", "tiny", pooling="cls", overrides=TEXT_NO_DROPOUT))
    return Setup(domain, dataset, encoder)


def naive_simcse(anchors, positives, negatives, temperature):
    """Eq. 5 (eq. 4 when ``negatives`` is None) by loops over the batch."""
    terms = []
    for i in range(len(anchors)):
        similarity = lambda a, b: torch.exp(F.cosine_similarity(a, b, dim=0) / temperature)
        denominator = sum(similarity(anchors[i], positives[j]) for j in range(len(anchors)))
        if negatives is not None:
            denominator = denominator + sum(similarity(anchors[i], negatives[j]) for j in range(len(anchors)))
        terms.append(-torch.log(similarity(anchors[i], positives[i]) / denominator))
    return torch.stack(terms).mean()


def test_unsupervised_simcse_overfits_and_round_trips(captions, data_root):
    objective = build_objective("simcse", [captions.encoder], {"temperature": TEMPERATURE})
    assert objective.view_requests()[0].options == {"num_views": 2}  # the domain's default: dropout
    losses = overfit(objective, [captions], [raw_batch(captions, 16)], steps=15, lr=1e-3)
    # chance is log(16) ~ 2.77 (each sentence against the 16 dropout twins); it may be left within
    # the first five steps, so the end is measured against chance and against the first steps' mean
    assert sum(losses[-5:]) / 5 < min(math.log(16) - 1.5, sum(losses[:5]) / 10), losses
    assert not [name for name, p in objective.named_parameters() if p.requires_grad and p.grad is None], "DDP needs every parameter used"
    assert_state_round_trip(objective, lambda: build_objective(
        "simcse", [tiny_setup("text", data_root, rows=16).encoder], {"temperature": TEMPERATURE}))


def test_supervised_hard_negatives_follow_eq_5(triplets):
    objective = build_objective("simcse", [triplets.encoder], {"temperature": TEMPERATURE, "policy": "pair"}).eval()
    (views,) = make_views(objective, [triplets], [raw_batch(triplets, 8)], seed=0)
    assert len(views["views"]) == 3
    with torch.no_grad():
        anchors, positives, negatives = (objective.mlp(triplets.encoder(**v).pooled) for v in views["views"])
        with_negatives = objective(views).loss
        without = objective(dict(views, views=views["views"][:2])).loss
    torch.testing.assert_close(with_negatives, naive_simcse(anchors, positives, negatives, TEMPERATURE))
    torch.testing.assert_close(without, naive_simcse(anchors, positives, None, TEMPERATURE))
    assert with_negatives > without  # the hard negatives only add to every denominator


def test_supervised_simcse_two_processes_equal_one(triplets, tmp_path):
    save_tokenizer(triplets.domain.tokenizer, tmp_path)
    factory = functools.partial(text_objective, str(tmp_path), "simcse", {"policy": "pair"}, pooling="cls")
    views = make_views(factory(), [triplets], [raw_batch(triplets, 10)], seed=0)
    distributed_equivalence(factory, views, sizes=[6, 4])


@pytest.mark.slow
def test_unsupervised_simcse_two_processes_equal_one(captions, tmp_path):
    save_tokenizer(captions.domain.tokenizer, tmp_path)
    factory = functools.partial(text_objective, str(tmp_path), "simcse", {})
    views = make_views(factory(), [captions], [raw_batch(captions, 10)], seed=0)
    distributed_equivalence(factory, views, sizes=[3, 7])
