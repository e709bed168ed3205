"""CLIP on Flickr8k-like image-caption pairs (tests/fixture_data.py): learns, matches the formula (with and without a
queue), round-trips, 2 processes equal 1, and zero-shot classifies a case whose answer is known."""

from __future__ import annotations

import csv
import math
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F

from domains import DataConfig, EncoderConfig, build_domain
from multissl.objectives import build_objective
from multissl.probes.retrieval import joint_zero_shot_classifier as zero_shot_classifier
from multissl.probes.retrieval import joint_zero_shot_predict as zero_shot_predict
from tests.fixture_data import data_root as synthetic_data_root
from tests.objective_harness import (
    Setup, assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

PAIRS = "pairs/flickr8k_1k"
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@lru_cache(maxsize=2)
def pair_setups(images: int = 24, seed: int = 0) -> tuple[Setup, Setup]:
    """The image and text sides of the first ``images`` photos, one caption each (every
    5th row of captions.csv, so no two rows show the same photo: no false negatives), read as the
    engine reads a pairs table: each domain takes its own columns of the same rows. Tiny ConvNeXt
    and a tiny BERT without dropout (trained tokenizer, 300 pieces)."""
    folder = synthetic_data_root() / PAIRS  # module level: spawned processes call this too
    torch.manual_seed(seed)
    image_domain = build_domain("image", {"image_size": 16, "normalization": "imagenet",
                                          "image_root": str(folder / "images")})
    text_domain = build_domain("text", {"tokenizer": "train", "vocab_size": 300, "max_length": 24})
    data = DataConfig(path=str(folder / "captions.csv"), limit=5 * images)
    rows = list(range(0, 5 * images, 5))
    image_rows = image_domain.load(DataConfig(**{**vars(data), "columns": {"image": "image"}})).select(rows)
    text_rows = text_domain.load(DataConfig(**{**vars(data), "columns": {"text": "caption"}})).select(rows)
    image_encoder = image_domain.build_encoder(EncoderConfig("convnext", "tiny"))
    text_encoder = text_domain.build_encoder(EncoderConfig("bert", "tiny", overrides=NO_DROPOUT))
    return Setup(image_domain, image_rows, image_encoder), Setup(text_domain, text_rows, text_encoder)


def _distinct_photos(images: int) -> bool:
    with open(synthetic_data_root() / PAIRS / "captions.csv", newline="") as handle:
        names = [row["image"] for row in csv.DictReader(handle)][: 5 * images : 5]
    return len(set(names)) == len(names)


def build_clip(queue_size: int = 0, chunk_size: int | None = None, seed: int = 0):
    """Same weights every call (module level: the 2-process test rebuilds it in each process)."""
    image, text = pair_setups()
    torch.manual_seed(seed)
    image_encoder = image.domain.build_encoder(EncoderConfig("convnext", "tiny"))
    text_encoder = text.domain.build_encoder(EncoderConfig("bert", "tiny", overrides=NO_DROPOUT))
    return build_objective("clip", [image_encoder, text_encoder],
                           {"projection_dim": 16, "queue_size": queue_size, "chunk_size": chunk_size})


def build_clip_with_queue():
    return build_clip(queue_size=6)


def pair_views(objective, rows: int, start: int = 0, seed: int = 0):
    setups = pair_setups()
    return make_views(objective, list(setups), [raw_batch(s, rows, start) for s in setups], seed=seed)


@pytest.fixture(scope="module")
def pairs(data_root):
    assert _distinct_photos(24), "captions.csv is no longer grouped by photo: pick rows another way"
    return pair_setups()


def test_clip_aligns_real_pairs_and_round_trips(pairs):
    image, text = pairs
    objective = build_objective("clip", [image.encoder, text.encoder], {"projection_dim": 16, "queue_size": 8})
    batches = [raw_batch(image, 16), raw_batch(text, 16)]
    losses = overfit(objective, [image, text], batches, steps=30, lr=3e-3)
    # chance is log(16 + 8 queued) ~ 3.2; learning the 16 pairs must leave it far behind
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    assert int(objective.queue_a.total_enqueued) == 30 * 16
    assert_state_round_trip(objective, lambda: build_objective(
        "clip", [image.domain.build_encoder(EncoderConfig("convnext", "tiny")),
                 text.domain.build_encoder(EncoderConfig("bert", "tiny", overrides=NO_DROPOUT))],
        {"projection_dim": 16, "queue_size": 8}))


def _naive_symmetric_cross_entropy(z_a, z_b, scale, negatives_a=None, negatives_b=None):
    """Loops over the formula: row i of one side against every row of the other (+ its queue)."""
    terms = []
    for anchors, others, queue in ((z_a, z_b, negatives_b), (z_b, z_a, negatives_a)):
        total = 0.0
        for i in range(anchors.shape[0]):
            candidates = list(others) + (list(queue) if queue is not None else [])
            logits = torch.stack([scale * F.cosine_similarity(anchors[i], c, dim=0) for c in candidates])
            total = total - torch.log_softmax(logits, dim=0)[i]
        terms.append(total / anchors.shape[0])
    return (terms[0] + terms[1]) / 2


@pytest.mark.parametrize("queue_size", [0, 8])
def test_clip_loss_is_the_papers_formula(pairs, queue_size):
    objective = build_clip(queue_size=queue_size)
    views = pair_views(objective, 6)
    with torch.no_grad():
        z_a = objective.embed(0, views[0]["inputs"])
        z_b = objective.embed(1, views[1]["inputs"])
        queues = (objective.queue_a.negatives(), objective.queue_b.negatives()) if queue_size else (None, None)
        expected = _naive_symmetric_cross_entropy(z_a, z_b, objective.logit_scale(), *queues)
        out = objective(*views)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    assert math.isclose(float(out.logs["logit_scale"]), 1 / 0.07, rel_tol=1e-5)
    if queue_size:  # this step's embeddings went in after the loss, oldest slots first
        torch.testing.assert_close(objective.queue_a.keys[:6], z_a)
        torch.testing.assert_close(objective.queue_b.keys[:6], z_b)


def test_clip_views_and_temperature_clamp(pairs):
    image, text = pairs
    plain = build_objective("clip", [image.encoder, text.encoder])
    assert [r.kind for r in plain.view_requests()] == ["plain", "plain"]
    mixed = build_objective("clip", [image.encoder, text.encoder], {"augment": [True, False]})
    assert [(r.kind, r.options) for r in mixed.view_requests()] == [("augmented", {"num_views": 1}), ("plain", {})]
    views = pair_views(mixed, 4)
    assert torch.isfinite(mixed(*views).loss)
    with pytest.raises(ValueError, match="augment"):
        build_objective("clip", [image.encoder, text.encoder], {"augment": [True]})
    with torch.no_grad():
        plain.logit_scale.log_scale.fill_(math.log(500.0))
    plain.on_step_end(1, 10)
    assert math.isclose(float(plain.logit_scale().detach()), 100.0, rel_tol=1e-6)


def test_clip_two_processes_equal_one(pairs):
    views = pair_views(build_clip(), 12, seed=5)
    distributed_equivalence(build_clip, views, sizes=[7, 5])


@pytest.mark.slow
def test_clip_with_a_queue_two_processes_equal_one(pairs):
    """The queue is global (enqueue gathers every rank's rows), so the loss over batch + queue is too."""
    views = pair_views(build_clip_with_queue(), 12, seed=6)
    distributed_equivalence(build_clip_with_queue, views, sizes=[5, 7])


@pytest.mark.slow
def test_clip_pairs_images_with_spoken_digits(data_root):
    """Domain-agnostic: CIFAR-10 images (ConvNeXt) paired with FSDD recordings (wav2vec2) of the
    same class index, one pair per class 0-7: CLIP must learn to match the 8 pairs."""
    image = tiny_setup("image", data_root, rows=64)
    audio = tiny_setup("audio", data_root, rows=3000)

    def one_per_class(setup):
        labels = setup.dataset["label"]
        return Setup(setup.domain, setup.dataset.select([labels.index(c) for c in range(8)]), setup.encoder)

    image, audio = one_per_class(image), one_per_class(audio)
    objective = build_objective("clip", [image.encoder, audio.encoder], {"projection_dim": 16})
    batches = [raw_batch(image, 8), raw_batch(audio, 8)]
    assert torch.equal(batches[0]["labels"], batches[1]["labels"])
    losses = overfit(objective, [image, audio], batches, steps=20, lr=3e-3)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.7, losses  # chance: log 8 = 2.08


def test_zero_shot_classifier_on_a_case_with_a_known_answer(pairs):
    """A text-text CLIP whose two projections are equal: a prompt on side 0 embeds exactly as the
    same prompt on side 1, so with one template every class prompt must be classified as its own
    class. With several templates the class embedding must be the normalised mean of the
    normalised prompt embeddings, computed here prompt by prompt."""
    _, text = pairs
    clip = build_objective("clip", [text.encoder, text.encoder], {"projection_dim": 16})
    with torch.no_grad():
        clip.projection_b.weight.copy_(clip.projection_a.weight)
    names = ["dog", "girl", "water", "ball", "grass"]
    tokenizer = text.encoder.processor

    def tokenize(prompts):
        return dict(tokenizer(prompts, padding=True, return_tensors="pt"))

    classes = zero_shot_classifier(clip, names, ["a photo of a {}."])
    order = [3, 0, 4, 1, 2]
    predicted, similarities = zero_shot_predict(clip, tokenize([f"a photo of a {names[i]}." for i in order]), classes)
    assert predicted.tolist() == order
    torch.testing.assert_close(similarities.max(dim=1).values, torch.ones(5), atol=1e-5, rtol=0)

    templates = ["a photo of a {}.", "a {} in the park .", "there is a {} here ."]
    averaged = zero_shot_classifier(clip, names, templates, tokenize=tokenize)
    clip.eval()
    for c, name in enumerate(names):
        with torch.no_grad():
            prompts = [F.normalize(clip.embed(1, tokenize([t.format(name)])), dim=-1)[0] for t in templates]
        torch.testing.assert_close(averaged[c], F.normalize(torch.stack(prompts).mean(0), dim=0), atol=1e-5, rtol=0)
