"""Health metrics contrastive objectives log beside their loss (no gradient, never optimised)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from multissl.distributed import all_reduce_sum, gather_no_grad, rank_offset

__all__ = ["positive_accuracy"]


@torch.no_grad()
def positive_accuracy(query: Tensor, key: Tensor, negatives: Tensor | None = None) -> Tensor:
    """Top-1 accuracy of InfoNCE's classification task over the global batch (MoCo's ``acc1``).

    ``query`` [n, D] and ``key`` [n, D] are this process's aligned rows (row i of ``key`` is the
    positive of row i of ``query``); the candidates are the keys of every process plus the optional
    ``negatives`` [K, D] (a queue, already global), exactly the columns :func:`multissl.losses.info_nce`
    scores. A query counts as correct when its positive has the highest cosine similarity (ties go
    to the lower column). Returns a 0-d float32 tensor, equal on every process; no host sync.
    Near 1 early in training means the task is too easy (a shortcut, e.g. batch-norm leakage).
    Scores are float32 even under autocast, as the loss's are.
    """
    with torch.autocast(query.device.type, enabled=False):
        query, key = F.normalize(query.float(), dim=1), F.normalize(key.float(), dim=1)
        scores = query @ gather_no_grad(key).T
        positives = rank_offset(query.shape[0], query.device) + torch.arange(query.shape[0], device=query.device)
        correct = scores.argmax(dim=1) == positives
        if negatives is not None and negatives.shape[0] > 0:
            best_negative = (query @ F.normalize(negatives.float(), dim=1).T).amax(dim=1)
            correct &= scores.gather(1, positives[:, None]).squeeze(1) >= best_negative
    totals = all_reduce_sum(torch.stack([correct.sum().float(), torch.tensor(float(query.shape[0]), device=query.device)]))
    return totals[0] / totals[1].clamp_min(1.0)
