"""Weighted k-nearest-neighbour classification of frozen features.

Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance discrimination",
§3.4), the evaluation DINO (``eval_knn.py``) and solo-learn (``WeightedKNNClassifier``) use: cosine
similarity to every train feature, the k most similar vote for their class with weight
``exp(s / T)``, T = 0.07; prediction = class with the largest summed weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_predict", "knn_classify"]


def _check(features: Tensor, labels: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] == 0:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} features must be a non-empty [N, D] tensor, got {shape}")
    labels = torch.as_tensor(labels, device=features.device)
    if labels.shape != (features.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"{name} labels must be integer [N] = [{features.shape[0]}], got {tuple(labels.shape)} {labels.dtype}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} features hold NaN/inf values")
    return F.normalize(features.float(), dim=1), labels.long()


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> dict[int, Tensor]:
    """Predicted classes [Q] for each k in ``ks``; k larger than N_train is clamped to N_train.

    train_features [N, D] and query_features [Q, D] are L2-normalised here. Queries are processed
    ``chunk_size`` at a time, so memory is O(chunk_size x N_train), not O(Q x N_train).
    """
    train, labels = _check(train_features, train_labels, "train")
    queries = F.normalize(query_features.float().to(train.device), dim=1)
    if queries.dim() != 2 or queries.shape[1] != train.shape[1]:
        raise ValueError(f"query features {tuple(query_features.shape)} must be [Q, {train.shape[1]}]")
    num_classes = num_classes if num_classes is not None else int(labels.max()) + 1
    clamped = {k: min(k, train.shape[0]) for k in ks}
    if min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {list(ks)}")
    k_max = max(clamped.values())
    predictions: dict[int, list[Tensor]] = {k: [] for k in ks}
    for chunk in queries.split(chunk_size):
        similarity, index = (chunk @ train.T).topk(k_max, dim=1)  # sorted, most similar first
        neighbour_labels = labels[index]
        weights = (similarity / temperature).exp()
        for k, k_used in clamped.items():
            votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
            votes.scatter_add_(1, neighbour_labels[:, :k_used], weights[:, :k_used])
            predictions[k].append(votes.argmax(dim=1))
    return {k: torch.cat(parts) for k, parts in predictions.items()}


@torch.no_grad()
def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Top-1 accuracy (fraction in [0, 1]) of the weighted kNN classifier for each k in ``ks``."""
    test_labels = torch.as_tensor(test_labels, device=train_features.device).long()
    if test_labels.shape != (test_features.shape[0],):
        raise ValueError(f"test labels must be [{test_features.shape[0]}], got {tuple(test_labels.shape)}")
    if num_classes is None:
        num_classes = int(max(torch.as_tensor(train_labels).max(), test_labels.max())) + 1
    predictions = knn_predict(train_features, train_labels, test_features, ks, temperature, num_classes, chunk_size)
    return {k: float((predicted == test_labels).float().mean()) for k, predicted in predictions.items()}
