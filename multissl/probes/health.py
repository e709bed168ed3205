"""Representation health: cheap, pure diagnostics of an embedding batch.

The engine logs these as telemetry during training (collapse shows up here long before a probe
would catch it); the probe command reports them for a frozen encoder. Every function takes
embeddings ``z`` [N, D] (any float dtype; computed in float32) and returns a Python float or a
small tensor, detached.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "effective_rank",
    "alignment",
    "uniformity",
    "embedding_std",
    "nearest_neighbours",
    "representation_health",
    "save_embedding_map",
]


def _as_matrix(z: Tensor, name: str = "z") -> Tensor:
    if not isinstance(z, Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"{name} must be a [N, D] tensor, got {shape}")
    if z.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    z = z.detach().float()
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} holds NaN or inf values")
    return z


@torch.no_grad()
def effective_rank(z: Tensor, eps: float = 1e-12) -> float:
    """Effective rank (Roy & Vetterli 2007): ``exp(H(p))`` with ``p_k = s_k / sum_j s_j``.

    ``s`` are the singular values of ``z`` [N, D] as given (not centred: centring would take a
    dimension away from a full-rank batch, and RankMe, Garrido et al. 2023, also uses the raw
    embeddings). Ranges over [1, min(N, D)]: 1 for a rank-1 (collapsed) batch, D for an isotropic
    one. ``eps`` keeps ``0 log 0`` at 0.
    """
    z = _as_matrix(z)
    singular_values = torch.linalg.svdvals(z)
    total = singular_values.sum()
    if total <= 0:
        raise ValueError("effective_rank: z is all zeros, its rank is undefined")
    p = singular_values / total
    entropy = -(p * torch.log(p.clamp_min(eps))).sum()
    return float(torch.exp(entropy))


@torch.no_grad()
def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0, normalize: bool = True) -> float:
    """Alignment loss (Wang & Isola 2020, eq. 4): ``E ||f(x) - f(y)||_2^alpha`` over positive pairs.

    z1, z2: [N, D], row i of both is a positive pair. The paper's features live on the unit
    hypersphere; ``normalize`` L2-normalises the rows first (turn it off for inputs that already
    are). Lower is better aligned; 0 means both views map to the same point. Mean over the N pairs.
    """
    z1, z2 = _as_matrix(z1, "z1"), _as_matrix(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"alignment: z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)} must have the same shape")
    if normalize:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    return float((z1 - z2).norm(dim=1).pow(alpha).mean())


@torch.no_grad()
def uniformity(z: Tensor, t: float = 2.0, normalize: bool = True) -> float:
    """Uniformity loss (Wang & Isola 2020, eq. 5): ``log E_{i<j} exp(-t ||z_i - z_j||_2^2)``.

    z: [N, D] with N >= 2, mean over the N(N-1)/2 distinct pairs. Lower is more uniform; its
    minimum on the sphere S^{D-1} is reached by the uniform distribution. ``normalize`` as in
    :func:`alignment`. Computed as a log-sum-exp for stability.
    """
    z = _as_matrix(z)
    if z.shape[0] < 2:
        raise ValueError("uniformity needs at least 2 embeddings")
    if normalize:
        z = F.normalize(z, dim=1)
    squared_distances = torch.pdist(z, p=2).pow(2)
    log_count = torch.log(torch.tensor(float(squared_distances.numel())))
    return float(torch.logsumexp(-t * squared_distances, dim=0) - log_count)


@torch.no_grad()
def embedding_std(z: Tensor, normalize: bool = True) -> Tensor:
    """Per-dimension standard deviation of the L2-normalised embeddings [D] (SimSiam, Chen & He 2021, §4.1).

    A collapsed encoder gives ~0 everywhere; an embedding spread like a zero-mean isotropic
    Gaussian gives ~1/sqrt(D) per dimension. Population std (``unbiased=False``) over the N rows.
    """
    z = _as_matrix(z)
    if normalize:
        z = F.normalize(z, dim=1)
    return z.std(dim=0, unbiased=False)


@torch.no_grad()
def nearest_neighbours(z: Tensor, query_indices: Tensor | list[int], k: int = 5) -> Tensor:
    """Indices [Q, k] of the k nearest rows of ``z`` [N, D] (cosine) for each query row, self excluded.

    For eyeballing what an encoder considers similar (show the images / sentences these point at).
    """
    z = F.normalize(_as_matrix(z), dim=1)
    queries = torch.as_tensor(query_indices, dtype=torch.long)
    if queries.dim() != 1 or (queries.numel() and (queries.min() < 0 or queries.max() >= z.shape[0])):
        raise ValueError(f"query_indices must be a 1-D list of rows in [0, {z.shape[0]}), got {query_indices}")
    if not 1 <= k <= z.shape[0] - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {z.shape[0] - 1}], got {k}")
    similarity = z[queries] @ z.T
    similarity[torch.arange(len(queries)), queries] = float("-inf")  # a row is not its own neighbour
    return similarity.topk(k, dim=1).indices


@torch.no_grad()
def representation_health(z1: Tensor, z2: Tensor | None = None) -> dict[str, float]:
    """The telemetry bundle the engine logs: std, effective rank, uniformity of ``z1``, and
    alignment with ``z2`` (the second view's embeddings) when given."""
    std = embedding_std(z1)
    health = {
        "embedding_std": float(std.mean()),
        "embedding_std_ideal": float(z1.shape[1] ** -0.5),
        "effective_rank": effective_rank(z1),
    }
    if z1.shape[0] >= 2:
        health["uniformity"] = uniformity(z1)
    if z2 is not None:
        health["alignment"] = alignment(z1, z2)
    return health


def save_embedding_map(
    z: Tensor,
    labels: Tensor | None,
    path: str | Path,
    method: str = "pca",
    class_names: list[str] | None = None,
    max_points: int = 5000,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Save a 2-D map of ``z`` [N, D] coloured by ``labels`` [N] as a PNG and return its path.

    ``method``: "pca" (torch, top-2 principal components of the centred embeddings) or "tsne"
    (scikit-learn's ``TSNE``, PCA initialisation). At most ``max_points`` rows are drawn (a seeded
    random subset) so t-SNE stays quick. Uses matplotlib's Agg backend: no display needed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = _as_matrix(z).cpu()
    if labels is not None and len(labels) != len(z):
        raise ValueError(f"labels has {len(labels)} entries for {len(z)} embeddings")
    if z.shape[0] > max_points:
        keep = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points]
        z = z[keep]
        labels = labels[keep] if labels is not None else None
    if method == "pca":
        centred = z - z.mean(dim=0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        points = (centred @ v[:2].T).numpy()
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, max(1.0, (z.shape[0] - 1) / 3))
        points = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(z.numpy())
    else:
        raise ValueError(f"unknown map method {method!r}; use 'pca' or 'tsne'")

    figure, axes = plt.subplots(figsize=(6, 6), dpi=120)
    if labels is None:
        axes.scatter(points[:, 0], points[:, 1], s=4)
    else:
        labels_np = torch.as_tensor(labels).cpu().numpy()
        for value in sorted(set(labels_np.tolist())):
            chosen = labels_np == value
            name = class_names[value] if class_names is not None else str(value)
            axes.scatter(points[chosen, 0], points[chosen, 1], s=4, label=name)
        if len(set(labels_np.tolist())) <= 20:
            axes.legend(markerscale=3, fontsize=7, loc="best")
    axes.set_title(title or f"embeddings ({method.upper()}, {z.shape[0]} points)")
    axes.set_xticks([])
    axes.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path
