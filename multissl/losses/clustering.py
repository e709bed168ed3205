"""Online clustering: SwAV's equipartitioned codes and its swapped-prediction loss.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin 2020, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments" (SwAV), section 3.1 and Algorithm 1 / ``main_swav.py``.

Codes are computed over the **global** batch: the Sinkhorn-Knopp iterations normalise each
prototype's mass over the samples of every process (one all-reduce per iteration), as the
reference's ``distributed_sinkhorn`` does, so N processes produce the codes one process computes
on the concatenated batch. The cross-entropy is a per-row mean over the global batch
(:func:`multissl.distributed.global_mean`), exact under DDP.
"""

from __future__ import annotations

import torch
from torch import Tensor

from multissl.distributed import all_reduce_sum, gather_no_grad

from ._checks import check_float, check_positive, check_same_shape, compute_dtype
from .similarity import soft_cross_entropy

__all__ = ["sinkhorn_knopp", "swapped_prediction"]


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, iterations: int = 3, epsilon: float = 0.05) -> Tensor:
    """SwAV's codes: the entropic equipartition of samples onto prototypes (SwAV eq. 3-4).

    ``scores`` [n, K]: this process's samples (rows) against the K prototypes, ``z_i . c_k`` with
    unit ``z`` and ``c``; the rows of all processes together are the global set of B samples
    (batch, plus queue rows where the caller adds them). Returns codes [n, K], no gradient: each
    row sums to 1, and over the global set each prototype receives B/K of the mass once converged.

    Starting from ``exp(scores / epsilon)``, normalised to total mass 1, each iteration rescales
    every prototype (column) to mass 1/K over the global set, then every sample (row) to mass 1/B;
    the result is multiplied by B. That is the reference's order (columns first, rows last), so
    the rows are exactly normalised and the prototype marginals approximately uniform after the
    paper's 3 iterations. ``epsilon`` 0.05 is the paper's. Each column is first shifted by its
    global maximum, which the first column rescaling cancels exactly, so ``exp`` cannot overflow.
    Math in float32 (float64 stays float64). Every process must call it (collectives).
    """
    check_float("scores", scores, 2)
    check_positive("epsilon", epsilon)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    scores = scores.detach().to(compute_dtype(scores))
    rows, prototypes = scores.shape
    if prototypes < 1:
        raise ValueError(f"scores must have at least one prototype column, got shape {tuple(scores.shape)}")
    local_max = scores.amax(dim=0) if rows else scores.new_full((prototypes,), float("-inf"))
    shift = gather_no_grad(local_max.unsqueeze(0)).amax(dim=0)
    samples = all_reduce_sum(scores.new_tensor(float(rows)))
    codes = torch.exp((scores - shift) / epsilon)
    codes = codes / all_reduce_sum(codes.sum())
    for _ in range(iterations):
        codes = codes / (all_reduce_sum(codes.sum(dim=0, keepdim=True)) * prototypes)
        codes = codes / (codes.sum(dim=1, keepdim=True) * samples)
    return codes * samples


def swapped_prediction(scores: Tensor, codes: Tensor, temperature: float = 0.1) -> Tensor:
    """SwAV's loss term l(z_t, q_s) (SwAV eq. 2): predict one view's code from another view.

    ``scores`` [N, K]: the predicting view's ``z_t . c_k`` (unit vectors), with gradient; ``codes``
    [N, K]: the other view's codes from :func:`sinkhorn_knopp` (detached here). The per-row loss is
    ``-sum_k q_k log softmax(scores / temperature)_k``; returns its mean over the global batch.
    ``temperature`` 0.1 is the paper's. The sums over view pairs (eq. 1, and multi-crop's average
    over the predicting views) are the objective's.
    """
    check_float("scores", scores, 2)
    check_float("codes", codes, 2)
    check_same_shape("scores", scores, "codes", codes)
    return soft_cross_entropy(scores, codes, temperature)
