"""Weighted kNN and cross-modal retrieval / zero-shot against brute-force implementations."""

from __future__ import annotations

import math

import pytest
import torch

from multissl.probes.knn import knn_classify, knn_predict
from multissl.probes.retrieval import retrieval_recall, zero_shot_classifier, zero_shot_classify




def naive_knn(train, train_labels, queries, k, temperature, num_classes):
    """Loops over the formula: cosine similarity, k best, votes exp(s / T) per class."""
    predictions = []
    for q in queries:
        sims = []
        for i, t in enumerate(train):
            sims.append((float(q @ t) / (q.norm() * t.norm()).item(), i))
        sims.sort(key=lambda pair: -pair[0])
        votes = [0.0] * num_classes
        for s, i in sims[:k]:
            votes[int(train_labels[i])] += math.exp(s / temperature)
        predictions.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return torch.tensor(predictions)


def test_knn_matches_brute_force_for_several_k_and_chunk_sizes():
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(120, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (120,), generator=generator)
    queries = torch.randn(30, 6, generator=generator, dtype=torch.float64)
    for chunk in (7, 1024):
        predicted = knn_predict(train, labels, queries, ks=(1, 5, 20), temperature=0.07, num_classes=4, chunk_size=chunk)
        for k in (1, 5, 20):
            assert torch.equal(predicted[k].cpu(), naive_knn(train, labels, queries, k, 0.07, 4)), (k, chunk)


def test_knn_accuracy_and_k_larger_than_train_set():
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 16, generator=generator) * 5
    y_train, y_test = torch.randint(0, 3, (60,), generator=generator), torch.randint(0, 3, (40,), generator=generator)
    x_train = centres[y_train] + torch.randn(60, 16, generator=generator)
    x_test = centres[y_test] + torch.randn(40, 16, generator=generator)
    accuracy = knn_classify(x_train, y_train, x_test, y_test, ks=(20, 200))
    assert set(accuracy) == {20, 200}
    assert accuracy[20] > 0.95
    # k = 200 > 60 train rows: every train row votes, which is k = 60
    assert accuracy[200] == knn_classify(x_train, y_train, x_test, y_test, ks=(60,))[60]


def test_knn_rejects_bad_input():
    x, y = torch.randn(10, 4), torch.randint(0, 2, (10,))
    with pytest.raises(ValueError, match="train labels"):
        knn_classify(x, y[:3], x, y)
    with pytest.raises(ValueError, match="NaN"):
        knn_classify(x * float("nan"), y, x, y)


def brute_force_recall(images, texts, owner, k):
    images = images / images.norm(dim=1, keepdim=True)
    texts = texts / texts.norm(dim=1, keepdim=True)
    image_hits = 0
    for i in range(len(images)):
        scores = [(float(images[i] @ texts[j]), j) for j in range(len(texts))]
        best = [j for _, j in sorted(scores, reverse=True)[:k]]
        image_hits += any(int(owner[j]) == i for j in best)
    text_hits = 0
    for j in range(len(texts)):
        scores = [(float(texts[j] @ images[i]), i) for i in range(len(images))]
        best = [i for _, i in sorted(scores, reverse=True)[:k]]
        text_hits += int(owner[j]) in best
    return image_hits / len(images), text_hits / len(texts)


def test_retrieval_recall_matches_brute_force_with_five_captions_per_image():
    generator = torch.Generator().manual_seed(0)
    num_images, per_image = 40, 5
    images = torch.randn(num_images, 8, generator=generator, dtype=torch.float64)
    owner = torch.arange(num_images).repeat_interleave(per_image)[torch.randperm(num_images * per_image, generator=generator)]
    texts = images[owner] + 1.5 * torch.randn(len(owner), 8, generator=generator, dtype=torch.float64)  # noisy captions
    recalls = retrieval_recall(images, texts, owner, ks=(1, 5, 10), chunk_size=7)
    for k in (1, 5, 10):
        image_to_text, text_to_image = brute_force_recall(images, texts, owner, k)
        assert recalls[f"image_to_text_recall@{k}"] == pytest.approx(image_to_text)
        assert recalls[f"text_to_image_recall@{k}"] == pytest.approx(text_to_image)
    assert 0 < recalls["text_to_image_recall@1"] < recalls["text_to_image_recall@10"] <= 1


def test_retrieval_requires_every_image_to_have_a_caption():
    with pytest.raises(ValueError, match="no caption"):
        retrieval_recall(torch.randn(3, 4), torch.randn(2, 4), torch.tensor([0, 1]))


def test_zero_shot_averages_normalised_template_embeddings():
    generator = torch.Generator().manual_seed(0)
    table: dict[str, torch.Tensor] = {}

    def embed(prompts):  # a fixed random embedding per distinct prompt
        return torch.stack([table.setdefault(p, torch.randn(6, generator=generator)) for p in prompts])

    classes, templates = ["cat", "dog", "car"], ["a photo of a {}.", "a {} in the wild."]
    classifier = zero_shot_classifier(embed, classes, templates)
    for c, name in enumerate(classes):
        members = [table[t.format(name)] / table[t.format(name)].norm() for t in templates]
        mean = sum(members) / len(members)
        torch.testing.assert_close(classifier[c], mean / mean.norm())

    images = torch.cat([classifier + 0.01 * torch.randn(3, 6, generator=generator) for _ in range(4)])
    labels = torch.arange(3).repeat(4)
    scores = zero_shot_classify(images, classifier, labels, ks=(1, 2))
    assert scores["top1_accuracy"] == 1.0 and scores["top2_accuracy"] == 1.0
    wrong = zero_shot_classify(images, classifier, (labels + 1) % 3, ks=(1,))
    assert wrong["top1_accuracy"] == 0.0
    with pytest.raises(ValueError, match="exactly one"):
        zero_shot_classifier(embed, classes, ["no placeholder"])
