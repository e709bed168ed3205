"""DeepCluster: k-means and PCA whitening against naive/independent computations, empty clusters,
the re-clustering schedule and the classifier reset, learning on images, state round trip,
and two processes: the same bank and clusters on every rank, and the loss equal to one process's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl import distributed
from multissl.objectives import build_objective
from multissl.modules.kmeans import kmeans, pca_whitening, whiten
from tests.dist import run_in_processes
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

OPTIONS = {"num_clusters": 4, "feature_dim": 16, "hidden_dim": 32, "pca_dim": 8, "bank_size": 32,
           "recluster_every": 100, "kmeans_iterations": 10}


def build_deepcluster():
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("deepcluster", [encoder], OPTIONS)


def _features(rows: int, seed: int) -> torch.Tensor:
    """Four loose groups in 16-D: something worth clustering."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=generator) * 3
    return centres[torch.arange(rows) % 4] + torch.randn(rows, 16, generator=generator)


def build_clustered_deepcluster():
    """A full bank of fixed features, clustered once (no collective: the bank is written directly)."""
    objective = build_deepcluster()
    objective.bank.keys.copy_(_features(32, seed=1))
    objective.bank.total_enqueued.fill_(32)
    objective.recluster(step=1)
    return objective


def naive_kmeans(points: list[list[float]], centroids: list[list[float]], iterations: int):
    """Lloyd's algorithm with loops over points, clusters and coordinates (no empty clusters)."""
    def distance(a, b):
        return sum((x - y) ** 2 for x, y in zip(a, b))

    for _ in range(iterations):
        assignments = [min(range(len(centroids)), key=lambda k: distance(p, centroids[k])) for p in points]
        for k in range(len(centroids)):
            members = [p for p, a in zip(points, assignments) if a == k]
            assert members, "test data must not empty a cluster (the naive loop has no remedy)"
            centroids[k] = [sum(column) / len(members) for column in zip(*members)]
    assignments = [min(range(len(centroids)), key=lambda k: distance(p, centroids[k])) for p in points]
    return centroids, assignments


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_matches_a_naive_loop(seed):
    points = torch.randn(30, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    initial = points[:4].clone()
    expected_centroids, expected_assignments = naive_kmeans(points.tolist(), initial.tolist(), iterations=6)
    result = kmeans(points, 4, iterations=6, initial_centroids=initial)
    assert result.assignments.tolist() == expected_assignments
    torch.testing.assert_close(result.centroids, torch.tensor(expected_centroids, dtype=torch.float64))
    assert result.sizes.tolist() == [expected_assignments.count(k) for k in range(4)]


def test_kmeans_splits_an_empty_cluster_off_a_populated_one():
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(10, 2, generator=generator), torch.randn(10, 2, generator=generator) + 6])
    initial = torch.tensor([[0.0, 0.0], [6.0, 6.0], [100.0, 100.0]])  # the third attracts no point
    result = kmeans(points, 3, iterations=10, initial_centroids=initial, generator=generator)
    assert (result.sizes > 0).all(), result.sizes
    assert result.sizes.sum() == 20
    for k in range(3):  # converged: every centroid is the mean of its points
        torch.testing.assert_close(result.centroids[k], points[result.assignments == k].mean(0), rtol=1e-5, atol=1e-5)
    # and the far-away initial centroid is gone: every centroid lies among the data
    assert result.centroids.abs().max() < 20


def test_kmeans_is_deterministic_given_the_seed_and_rejects_bad_input():
    points = _features(40, seed=3)
    first = kmeans(points, 4, generator=torch.Generator().manual_seed(5))
    second = kmeans(points, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.centroids, second.centroids) and torch.equal(first.assignments, second.assignments)
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(points, 41)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.full((5, 2), float("nan")), 2)


def test_pca_whitening_against_numpy_svd():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    points = torch.randn(300, 6, generator=generator, dtype=torch.float64) @ mixing
    mean, projection = pca_whitening(points, dim=3)
    centred = points - points.mean(0)
    _, singular, right = np.linalg.svd(centred.numpy(), full_matrices=False)
    for j in range(3):  # each component is a top principal direction scaled by 1/std along it
        direction = projection[:, j].double() / projection[:, j].double().norm()
        assert abs(float(direction @ torch.from_numpy(right[j]))) == pytest.approx(1.0, abs=1e-5)
        std = singular[j] / np.sqrt(len(points) - 1)
        assert float(projection[:, j].double().norm()) == pytest.approx(1 / np.sqrt(std**2 + 1e-5), rel=1e-5)
    whitened = (points.float() - mean) @ projection
    torch.testing.assert_close(torch.cov(whitened.T.double()), torch.eye(3, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(whiten(points, mean, projection).norm(dim=1), torch.ones(300), atol=1e-5, rtol=0)


def test_reclustering_schedule_weights_and_classifier_reset():
    objective = build_deepcluster()
    objective.recluster_every = 3
    objective.on_step_end(1, 10)
    assert int(objective.clustered_at_step) == -1  # the bank is still empty: nothing to cluster
    objective.bank.keys.copy_(_features(32, seed=1))
    objective.bank.total_enqueued.fill_(32)
    objective.on_step_end(2, 10)
    assert int(objective.clustered_at_step) == 2  # first clustering as soon as the bank is full
    with torch.no_grad():
        for parameter in objective.online.parameters():
            parameter.add_(0.5)
    with torch.no_grad():
        objective.classifier.weight.add_(1.0)
        objective.classifier.bias.add_(1.0)
    objective.on_step_end(4, 10)
    assert int(objective.clustered_at_step) == 2 and objective.classifier.bias.abs().sum() > 0
    objective.on_step_end(5, 10)
    assert int(objective.clustered_at_step) == 5
    labeler = objective.labeler.module.state_dict()
    for name, value in objective.online.state_dict().items():  # the labeler is the network clustered
        assert torch.equal(labeler[name], value), name
    assert objective.classifier.bias.abs().sum() == 0 and objective.classifier.weight.abs().max() < 0.1
    # inverse-frequency weights: uniform sampling over clusters in expectation (mean 1 over the bank)
    labels = objective.pseudo_labels(objective.bank.keys)
    assert float(objective.cluster_weights[labels].mean()) == pytest.approx(1.0, abs=1e-5)


def _mean(values):
    return sum(values) / len(values)


#: Nearly label-preserving views (crop 80-100 %, flip): the label of one view is then predictable
#: from the other within a few dozen steps, which shows the targets are learnable and stay fixed
#: between clusterings. With SimCLR-strength crops of 16 px images the labeler's cluster of a
#: random-init network flips with the augmentation and the loss falls far more slowly.
WEAK_VIEWS = {"augment": {"crop_scale": [0.8, 1.0], "jitter_probability": 0.0, "grayscale_probability": 0.0,
                          "blur_probability": 0.0}}


def test_deepcluster_overfits_images_and_round_trips(data_root):
    setup = tiny_setup("image", data_root, rows=16, options=WEAK_VIEWS)
    objective = build_objective("deepcluster", [setup.encoder], OPTIONS)
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=25, lr=1e-2)
    assert losses[:2] == [0.0, 0.0], losses  # the 32-row bank fills in 2 steps of 16 before any target exists
    assert int(objective.clustered_at_step) == 2
    learning = losses[2:]
    # weighted cross-entropy over 4 clusters starts near log 4 ~ 1.4
    assert _mean(learning[-5:]) < 0.6 * _mean(learning[:5]), losses
    assert_state_round_trip(objective, build_deepcluster)


def test_deepcluster_two_processes_equal_one(data_root):
    setup = tiny_setup("image", data_root, rows=12)
    objective = build_clustered_deepcluster()
    views = make_views(objective, [setup], [raw_batch(setup, 12)], seed=3)
    distributed_equivalence(build_clustered_deepcluster, views, sizes=[7, 5])


BANK_SIZES = [10, 6]


def _bank_worker(features: torch.Tensor) -> dict:
    objective = build_deepcluster()
    start = sum(BANK_SIZES[: distributed.rank()])
    for step in range(2):  # two steps of a 16-row global batch fill the 32-row bank
        rows = features[step * 16:(step + 1) * 16]
        objective.bank.enqueue(rows[start:start + BANK_SIZES[distributed.rank()]])
        objective.on_step_end(step + 1, 10)
    return {name: value for name, value in objective.state_dict().items()
            if name.startswith(("bank", "centroids", "pca", "cluster_weights", "classifier", "clustered"))}


def test_every_process_gathers_the_same_bank_and_finds_the_same_clusters():
    """What k-means cannot share by construction, it shares by data: each rank enqueues only its
    rows, the bank gathers all of them in global order, and the same seed then gives every rank
    the centroids, weights and classifier one process computes."""
    features = _features(32, seed=9)
    results = run_in_processes(_bank_worker, features)
    reference = build_deepcluster()
    for step in range(2):
        reference.bank.enqueue(features[step * 16:(step + 1) * 16])
        reference.on_step_end(step + 1, 10)
    assert int(reference.clustered_at_step) == 2
    for rank, result in enumerate(results):
        for name, value in result.items():
            torch.testing.assert_close(value, reference.state_dict()[name], rtol=0, atol=1e-6,
                                       msg=f"rank {rank}: {name}")
