"""k-means and PCA whitening on the device, as DeepCluster clusters its features (Caron et al. 2018).

Pure functions on tensors, deterministic given a seeded ``torch.Generator``: every process that
calls them on the same points with the same seed gets the same clusters, without communication.
The reference runs faiss; this is plain Lloyd iterations in torch, vectorised over points and
clusters (a Python loop only over iterations, and over the rare empty clusters).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["KMeansResult", "kmeans", "nearest_centroid", "pca_whitening", "whiten"]

#: rows per distance block: bounds the [rows, k] distance matrix held at once
_BLOCK_ROWS = 16_384


class KMeansResult(NamedTuple):
    centroids: Tensor  # [k, D]
    assignments: Tensor  # [N] long, index of each point's nearest centroid
    sizes: Tensor  # [k] long, points per cluster


def nearest_centroid(points: Tensor, centroids: Tensor) -> Tensor:
    """Index [N] of the centroid [k, D] closest in Euclidean distance to each point [N, D].

    ``argmin ||x - c||^2 = argmax (2 x.c - ||c||^2)``: one matmul per block of rows. Ties go to the
    lowest index."""
    half_norms = centroids.pow(2).sum(dim=1) / 2
    return torch.cat([(block @ centroids.T - half_norms).argmax(dim=1) for block in points.split(_BLOCK_ROWS)])


def _split_empty_clusters(points: Tensor, centroids: Tensor, assignments: Tensor, sizes: Tensor,
                          generator: torch.Generator, perturbation: float) -> None:
    """DeepCluster's remedy (sec. 3.3), in place: each empty cluster takes the centroid of a
    non-empty cluster chosen at random (in proportion to its size beyond one point, so a
    singleton is never split), both move apart by a small random perturbation, and the points of
    the split cluster are reassigned to whichever of the two is closer."""
    for empty in (sizes == 0).nonzero().flatten().tolist():
        splittable = (sizes - 1).clamp_min(0).to(torch.float64)
        if splittable.sum() == 0:
            return  # every cluster holds at most one point: nothing to split
        donor = int(torch.multinomial(splittable.cpu(), 1, generator=generator))
        scale = centroids[donor].norm().clamp_min(1e-12) * perturbation
        offset = (torch.randn(points.shape[1], generator=generator, dtype=torch.float64) * scale.cpu()).to(centroids)
        centre = centroids[donor].clone()
        centroids[empty], centroids[donor] = centre + offset, centre - offset
        members = (assignments == donor).nonzero().flatten()
        # the closer of centre +- offset: the side of the hyperplane through the centre
        to_empty = (points[members] - centre) @ offset > 0
        assignments[members[to_empty]] = empty
        for cluster in (empty, donor):
            mine = assignments == cluster
            sizes[cluster] = mine.sum()
            if sizes[cluster] > 0:
                centroids[cluster] = points[mine].mean(dim=0)


@torch.no_grad()
def kmeans(points: Tensor, num_clusters: int, iterations: int = 20, generator: torch.Generator | None = None,
           initial_centroids: Tensor | None = None, perturbation: float = 1e-4) -> KMeansResult:
    """Lloyd's k-means on ``points`` [N, D] (Euclidean), ``iterations`` rounds of assign-then-average.

    Initial centroids: ``initial_centroids`` [k, D] if given, else k distinct points drawn with
    ``generator`` (on the CPU, so the draw is the same on every device). After each update, empty
    clusters are split off large ones (:func:`_split_empty_clusters`, the DeepCluster paper's
    rule). The returned assignments and sizes are those of the returned centroids. Math in
    float32 (float64 stays float64); the result is on the points' device.
    """
    if points.dim() != 2 or not points.is_floating_point():
        raise ValueError(f"points must be a floating [N, D] tensor, got {points.dtype} {tuple(points.shape)}")
    if not 1 <= num_clusters <= points.shape[0]:
        raise ValueError(f"num_clusters must be in [1, N={points.shape[0]}], got {num_clusters}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not torch.isfinite(points).all():
        raise ValueError("kmeans points contain NaN or inf")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    points = points.to(torch.promote_types(points.dtype, torch.float32))
    if initial_centroids is None:
        chosen = torch.randperm(points.shape[0], generator=generator)[:num_clusters]
        initial_centroids = points[chosen.to(points.device)]
    elif initial_centroids.shape != (num_clusters, points.shape[1]):
        raise ValueError(f"initial_centroids must be [{num_clusters}, {points.shape[1]}], "
                         f"got {tuple(initial_centroids.shape)}")
    centroids = initial_centroids.to(points).clone()
    for _ in range(iterations):
        assignments = nearest_centroid(points, centroids)
        sizes = torch.bincount(assignments, minlength=num_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
        centroids = torch.where(sizes.unsqueeze(1) > 0, sums / sizes.clamp_min(1).unsqueeze(1).to(sums), centroids)
        _split_empty_clusters(points, centroids, assignments, sizes, generator, perturbation)
    assignments = nearest_centroid(points, centroids)
    return KMeansResult(centroids, assignments, torch.bincount(assignments, minlength=num_clusters))


@torch.no_grad()
def pca_whitening(points: Tensor, dim: int, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """PCA to ``dim`` components with whitening, fitted on ``points`` [N, D] (DeepCluster: 256).

    Returns ``mean`` [D] and ``projection`` [D, dim] so that ``(x - mean) @ projection`` has unit
    variance along each principal direction (eigenvectors divided by sqrt(eigenvalue + eps), as
    faiss's ``PCAMatrix(eigen_power=-0.5)``; eps keeps null directions finite). The covariance and
    its eigendecomposition run in float64; results in float32. Sign of each component as
    ``torch.linalg.eigh`` returns it (deterministic for the same input and device).
    """
    if points.dim() != 2 or points.shape[0] < 2:
        raise ValueError(f"pca_whitening needs [N >= 2, D] points, got {tuple(points.shape)}")
    if not 1 <= dim <= points.shape[1]:
        raise ValueError(f"dim must be in [1, D={points.shape[1]}], got {dim}")
    data = points.to(torch.float64)
    mean = data.mean(dim=0)
    centred = data - mean
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (data.shape[0] - 1))
    top = eigenvalues.argsort(descending=True)[:dim]
    projection = eigenvectors[:, top] / (eigenvalues[top].clamp_min(0) + eps).sqrt()
    return mean.to(torch.float32), projection.to(torch.float32)


def whiten(points: Tensor, mean: Tensor, projection: Tensor) -> Tensor:
    """DeepCluster's clustering space: PCA-whitened, then L2-normalised rows [N, dim]."""
    return F.normalize((points.to(projection.dtype) - mean) @ projection, dim=1)
