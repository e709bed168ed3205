"""Linear probe, label fractions and fine-tuning (multissl.probes.classification)."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch
from torch import nn

from multissl.features import Encoder, Features
from multissl.probes.classification import (
    carve_validation_split,
    class_balanced_subset,
    fine_tune,
    linear_probe,
)



SMALL_GRID = dict(weight_decays=(1e-4, 1e-2), max_iter=60)


def blobs(n: int, num_classes: int, dim: int, separation: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234)) * separation
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return centres[labels] + torch.randn(n, dim, generator=generator), labels


def test_linear_probe_on_separable_features_is_near_perfect():
    x_train, y_train = blobs(600, 5, 16, separation=4.0, seed=0)
    x_test, y_test = blobs(400, 5, 16, separation=4.0, seed=1)
    result = linear_probe(x_train, y_train, x_test, y_test, **SMALL_GRID)
    assert result.accuracy > 0.97
    assert result.num_classes == 5 and result.num_train == 600 and result.num_test == 400
    assert set(result.validation_scores) == {"lr=1, wd=0.0001", "lr=1, wd=0.01"}
    assert result.weight_decay in (1e-4, 1e-2)


def test_linear_probe_on_random_features_is_at_chance():
    num_classes, n_test = 10, 2000
    generator = torch.Generator().manual_seed(3)
    x_train, y_train = torch.randn(1000, 32, generator=generator), torch.randint(0, num_classes, (1000,), generator=generator)
    x_test, y_test = torch.randn(n_test, 32, generator=generator), torch.randint(0, num_classes, (n_test,), generator=generator)
    result = linear_probe(x_train, y_train, x_test, y_test, num_classes=num_classes, **SMALL_GRID)
    chance = 1 / num_classes
    tolerance = 4 * math.sqrt(chance * (1 - chance) / n_test)  # 4 binomial standard deviations
    assert abs(result.accuracy - chance) < tolerance


def test_adam_variant_learns_and_sweeps_learning_rate_too():
    x_train, y_train = blobs(400, 3, 8, separation=4.0, seed=0)
    x_test, y_test = blobs(200, 3, 8, separation=4.0, seed=1)
    result = linear_probe(x_train, y_train, x_test, y_test, optimizer="adam", learning_rates=(1e-3, 1e-1),
                          weight_decays=(0.0, 1e-3), epochs=30, batch_size=64)
    assert len(result.validation_scores) == 4
    assert result.accuracy > 0.95


def test_selection_never_looks_at_the_test_set():
    x_train, y_train = blobs(300, 4, 8, separation=1.0, seed=0)
    x_test, y_test = blobs(200, 4, 8, separation=1.0, seed=1)
    first = linear_probe(x_train, y_train, x_test, y_test, num_classes=4, **SMALL_GRID)
    shuffled = linear_probe(x_train, y_train, x_test.flip(0) * 3, y_test[torch.randperm(200)], num_classes=4, **SMALL_GRID)
    assert first.validation_scores == shuffled.validation_scores
    assert (first.learning_rate, first.weight_decay) == (shuffled.learning_rate, shuffled.weight_decay)
    again = linear_probe(x_train, y_train, x_test, y_test, num_classes=4, **SMALL_GRID)
    assert again.accuracy == first.accuracy  # deterministic


def test_linear_probe_on_mnist_like_pixels(data_root):
    """Raw pixels of jittered seven-segment digits (tests/fixture_data.py; the ~90% on real MNIST
    is checked in tests/test_real_data.py): logistic regression must separate the ten strokes."""
    with gzip.open(data_root / "image/mnist/t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(data_root / "image/mnist/t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    x = torch.from_numpy(images.astype(np.float32) / 255)
    y = torch.from_numpy(labels.astype(np.int64))
    split = int(0.7 * len(y))
    result = linear_probe(x[:split], y[:split], x[split:], y[split:], weight_decays=(1e-3, 1e-1), max_iter=100)
    assert result.accuracy > 0.8


def test_layer_weighting_learns_to_pick_the_informative_layer():
    num_layers, informative = 4, 2
    x_train, y_train = blobs(500, 3, 8, separation=3.0, seed=0)
    x_test, y_test = blobs(300, 3, 8, separation=3.0, seed=1)

    def stack(x: torch.Tensor, seed: int) -> torch.Tensor:
        noise = torch.randn(x.shape[0], num_layers, x.shape[1], generator=torch.Generator().manual_seed(seed))
        noise[:, informative] = x
        return noise

    result = linear_probe(stack(x_train, 5), y_train, stack(x_test, 6), y_test, weight_decays=(1e-3,), max_iter=100)
    weights = torch.tensor(result.layer_weights)
    assert weights.shape == (num_layers,) and torch.isclose(weights.sum(), torch.tensor(1.0))
    assert int(weights.argmax()) == informative and weights[informative] > 0.5
    assert result.accuracy > 0.9


def test_validation_split_is_stratified_and_groups_stay_whole():
    labels = torch.tensor([0] * 50 + [1] * 10 + [2] * 2)
    train, validation = carve_validation_split(labels, 0.2, seed=0)
    assert sorted(torch.cat([train, validation]).tolist()) == list(range(62))
    assert torch.bincount(labels[validation], minlength=3).tolist() == [10, 2, 1]
    groups = torch.arange(62) // 6
    train, validation = carve_validation_split(labels, 0.3, seed=0, groups=groups)
    assert not set(groups[train].tolist()) & set(groups[validation].tolist())


def test_class_balanced_subset():
    labels = torch.tensor([0] * 300 + [1] * 100 + [2] * 7)
    subset = class_balanced_subset(labels, 0.1, seed=0)
    assert torch.bincount(labels[subset]).tolist() == [30, 10, 1]
    assert len(set(subset.tolist())) == len(subset)
    assert torch.equal(subset, class_balanced_subset(labels, 0.1, seed=0))
    assert not torch.equal(subset, class_balanced_subset(labels, 0.1, seed=1))
    with pytest.raises(ValueError, match="fraction"):
        class_balanced_subset(labels, 0.0)


def test_bad_inputs_are_named():
    x, y = torch.randn(10, 4), torch.randint(0, 2, (10,))
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"train features hold NaN.*\[3\]"):
        linear_probe(bad, y, x, y)
    with pytest.raises(ValueError, match="train labels must be"):
        linear_probe(x, y[:5], x, y)
    with pytest.raises(ValueError, match="integer"):
        linear_probe(x, y.float(), x, y)
    with pytest.raises(ValueError, match="num_classes"):
        linear_probe(x, y, x, y, num_classes=1)


class TinyMlpEncoder(Encoder):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
        self.dim = 8

    def forward(self, x: torch.Tensor) -> Features:
        return Features(self.model(x))


def test_fine_tune_updates_the_encoder_and_learns_the_task():
    generator = torch.Generator().manual_seed(0)

    def batches(n: int) -> list[dict]:
        x = torch.randn(n, 8, generator=generator)
        labels = (x[:, 0] * x[:, 1] > 0).long()  # XOR-like: not linear in x
        return [{"x": xb, "labels": yb, "skipped": 0} for xb, yb in zip(x.split(32), labels.split(32))]

    encoder = TinyMlpEncoder()
    before = [p.detach().clone() for p in encoder.parameters()]
    result = fine_tune(encoder, lambda batch, gen: {"x": batch["x"]}, batches(512), num_classes=2,
                       test_batches=batches(256), epochs=40, learning_rate=3e-2, head_learning_rate=3e-2)
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert result.accuracy > 0.85
