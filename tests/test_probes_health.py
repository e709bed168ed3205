"""Representation health against known spectra and naive loops over the formulas."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from PIL import Image

from multissl.probes.health import (
    alignment,
    effective_rank,
    embedding_std,
    nearest_neighbours,
    representation_health,
    save_embedding_map,
    uniformity,
)


def test_effective_rank_of_known_spectra():
    assert effective_rank(torch.eye(16)) == pytest.approx(16, rel=1e-5)
    rank_one = torch.randn(50, 1) @ torch.randn(1, 16)
    assert effective_rank(rank_one) == pytest.approx(1, abs=1e-3)
    # singular values (3, 1): p = (0.75, 0.25), erank = exp(H(p))
    matrix = torch.diag(torch.tensor([3.0, 1.0]))
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert effective_rank(matrix) == pytest.approx(math.exp(entropy), rel=1e-5)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8))  # invariant to rotations
    assert effective_rank(torch.eye(8) @ rotation) == pytest.approx(8, rel=1e-4)


def test_alignment_and_uniformity_match_naive_loops():
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    z2 = z1 + 0.3 * torch.randn(12, 5, generator=generator, dtype=torch.float64)
    u1 = [row / row.norm() for row in z1]
    u2 = [row / row.norm() for row in z2]
    for alpha in (1.0, 2.0):
        naive = sum(float((a - b).norm()) ** alpha for a, b in zip(u1, u2)) / len(u1)
        assert alignment(z1, z2, alpha=alpha) == pytest.approx(naive, rel=1e-5)
    for t in (1.0, 2.0):
        pairs = [math.exp(-t * float((u1[i] - u1[j]).norm()) ** 2) for i, j in itertools.combinations(range(12), 2)]
        assert uniformity(z1, t=t) == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-5)
    assert alignment(z1, z1) == pytest.approx(0.0, abs=1e-7)


def test_embedding_std_detects_collapse():
    collapsed = torch.ones(100, 32) + 1e-6 * torch.randn(100, 32)
    healthy = torch.randn(4000, 32)
    assert float(embedding_std(collapsed).mean()) < 1e-4
    assert float(embedding_std(healthy).mean()) == pytest.approx(32 ** -0.5, rel=0.05)
    summary = representation_health(healthy[:200], healthy[:200] + 0.1)
    assert set(summary) == {"embedding_std", "embedding_std_ideal", "effective_rank", "uniformity", "alignment"}


def test_nearest_neighbours_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(30, 4, generator=generator, dtype=torch.float64)
    found = nearest_neighbours(z, [0, 7, 29], k=3)
    for row, query in zip(found, (0, 7, 29)):
        scores = [(float(z[query] @ z[j] / (z[query].norm() * z[j].norm())), j) for j in range(30) if j != query]
        assert row.tolist() == [j for _, j in sorted(scores, reverse=True)[:3]]
    with pytest.raises(ValueError, match="query_indices"):
        nearest_neighbours(z, [30], k=3)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_map_png(tmp_path, method):
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (90,), generator=generator)
    z = torch.randn(3, 8, generator=generator)[labels] * 3 + torch.randn(90, 8, generator=generator)
    path = save_embedding_map(z, labels, tmp_path / f"map_{method}.png", method=method, class_names=["a", "b", "c"])
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_health_rejects_nan_and_wrong_shapes():
    with pytest.raises(ValueError, match="NaN"):
        effective_rank(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        uniformity(torch.randn(5))
    with pytest.raises(ValueError, match="same shape"):
        alignment(torch.randn(4, 3), torch.randn(5, 3))
