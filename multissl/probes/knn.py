"""Weighted k-nearest-neighbour classification of frozen features.

Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance discrimination",
§3.4), the evaluation DINO (``eval_knn.py``) and solo-learn (``WeightedKNNClassifier``) use: cosine
similarity to every train feature, the k most similar vote for their class with weight
``exp(s / T)``, T = 0.07; prediction = class with the largest summed weight.

``leave_one_out=True`` classifies every row of one labelled set by its neighbours among the other
rows (the query set is the train set, each row's own similarity excluded): every row is scored,
none by a vote it took part in. The online evaluation (:mod:`multissl.probes.online`) uses it.
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
    leave_one_out: bool = False,
) -> dict[int, Tensor]:
    """Predicted classes [Q] for each k in ``ks``; k larger than N_train is clamped to N_train
    (N_train - 1 with ``leave_one_out``).

    train_features [N, D] and query_features [Q, D] are L2-normalised here. Queries are processed
    ``chunk_size`` at a time, so memory is O(chunk_size x N_train), not O(Q x N_train).
    ``leave_one_out``: query row i is train row i (same N), and is not its own neighbour.
    """
    train, labels = _check(train_features, train_labels, "train")
    queries = F.normalize(query_features.float().to(train.device), dim=1)
    if queries.dim() != 2 or queries.shape[1] != train.shape[1]:
        raise ValueError(f"query features {tuple(query_features.shape)} must be [Q, {train.shape[1]}]")
    if leave_one_out and (queries.shape[0] != train.shape[0] or train.shape[0] < 2):
        raise ValueError(f"leave_one_out classifies the train rows themselves: query features must be the {train.shape[0]} "
                         f"train rows (at least 2), got {queries.shape[0]}")
    num_classes = num_classes if num_classes is not None else int(labels.max()) + 1
    candidates = train.shape[0] - int(leave_one_out)
    clamped = {k: min(k, candidates) for k in ks}
    if min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {list(ks)}")
    k_max = max(clamped.values())
    predictions: dict[int, list[Tensor]] = {k: [] for k in ks}
    start = 0
    for chunk in queries.split(chunk_size):
        scores = chunk @ train.T
        if leave_one_out:
            rows = torch.arange(chunk.shape[0], device=chunk.device)
            scores[rows, start + rows] = float("-inf")
        start += chunk.shape[0]
        similarity, index = scores.topk(k_max, dim=1)  # sorted, most similar first
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
    leave_one_out: bool = False,
) -> dict[int, float]:
    """Top-1 accuracy (fraction in [0, 1]) of the weighted kNN classifier for each k in ``ks``
    (``leave_one_out``: the test set is the train set, each row voted on by the others)."""
    test_labels = torch.as_tensor(test_labels, device=train_features.device).long()
    if test_labels.shape != (test_features.shape[0],):
        raise ValueError(f"test labels must be [{test_features.shape[0]}], got {tuple(test_labels.shape)}")
    if num_classes is None:
        num_classes = int(max(torch.as_tensor(train_labels).max(), test_labels.max())) + 1
    predictions = knn_predict(train_features, train_labels, test_features, ks, temperature, num_classes, chunk_size,
                              leave_one_out)
    return {k: float((predicted == test_labels).float().mean()) for k, predicted in predictions.items()}
