"""Redundancy-reduction losses: Barlow Twins and VICReg.

Both reduce statistics over the batch (means, variances, cross-correlation, covariance). Under data
parallelism these sums run over the *global* batch through
:func:`multissl.distributed.all_reduce_sum_with_grad`: every rank computes the same global loss,
and its backward gives each rank ``world_size x`` the gradient of that loss with respect to its own
rows, which DDP's averaging turns into the single-process gradient (see
:mod:`multissl.distributed`). Both branches are stacked as ``[2, N, D]`` so each statistic costs one
collective for the two views.

Math runs in float32 (float64 stays float64); bf16/fp16 inputs return a float32 loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from multissl.distributed import all_reduce_sum_with_grad, global_mean, local_sizes

from ._checks import check_float, check_non_negative, check_positive, check_same_shape, compute_dtype

__all__ = ["barlow_twins", "barlow_twins_terms", "BarlowTwinsTerms", "vicreg", "vicreg_terms", "VICRegTerms"]


class BarlowTwinsTerms(NamedTuple):
    """The two unweighted parts of the Barlow Twins loss (scalars), for logging."""

    invariance: Tensor  # sum_i (1 - C_ii)^2
    redundancy: Tensor  # sum_{i != j} C_ij^2


class VICRegTerms(NamedTuple):
    """The three unweighted parts of the VICReg loss (scalars), for logging."""

    invariance: Tensor  # mean over rows and dimensions of (z1 - z2)^2
    variance: Tensor  # v(Z) + v(Z'): hinge on the standard deviation, mean over dimensions
    covariance: Tensor  # c(Z) + c(Z'): off-diagonal covariance squared, summed, / D


def _stacked_views(z1: Tensor, z2: Tensor) -> Tensor:
    """Check both branches and stack them as [2, N, D] in the compute dtype."""
    check_float("z1", z1, 2)
    check_float("z2", z2, 2)
    check_same_shape("z1", z1, "z2", z2)
    dtype = compute_dtype(z1, z2)
    return torch.stack([z1.to(dtype), z2.to(dtype)])


def _global_rows(views: Tensor, loss: str) -> int:
    rows = sum(local_sizes(views.shape[1], views.device))
    if rows < 2:
        raise ValueError(f"{loss} needs at least 2 rows in the global batch to take batch statistics, got {rows}")
    return rows


def _centred_over_global_batch(views: Tensor, rows: int) -> Tensor:
    """Subtract from every dimension of each view its mean over the global batch."""
    return views - (all_reduce_sum_with_grad(views.sum(dim=1)) / rows).unsqueeze(1)


def _off_diagonal_square_sum(matrices: Tensor) -> Tensor:
    """sum_{i != j} M_ij^2 of each [..., D, D] matrix -> [...]: all squares minus the diagonal's.

    Selecting the off-diagonal entries with a boolean mask costs a gather of D^2 entries forward
    and a scatter back, 2.4x the whole Barlow Twins loss at D = 2048 on a CPU; the difference
    of two sums reads the matrix once.
    """
    return matrices.square().sum(dim=(-2, -1)) - matrices.diagonal(dim1=-2, dim2=-1).square().sum(dim=-1)


def barlow_twins_terms(z1: Tensor, z2: Tensor, eps: float = 1e-5) -> BarlowTwinsTerms:
    """The invariance and redundancy-reduction terms of :func:`barlow_twins`, unweighted."""
    check_positive("eps", eps)
    views = _stacked_views(z1, z2)
    rows = _global_rows(views, "barlow_twins")
    centred = _centred_over_global_batch(views, rows)
    # Biased variance plus eps, as the reference's BatchNorm1d(affine=False) standardises.
    variance = all_reduce_sum_with_grad(centred.pow(2).sum(dim=1)) / rows
    standardised = centred / (variance + eps).sqrt().unsqueeze(1)
    cross_correlation = all_reduce_sum_with_grad(standardised[0].T @ standardised[1]) / rows
    return BarlowTwinsTerms(
        invariance=(1 - cross_correlation.diagonal()).pow(2).sum(),
        redundancy=_off_diagonal_square_sum(cross_correlation),
    )


def barlow_twins(z1: Tensor, z2: Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> Tensor:
    """Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", eq. 1-2).

    ``z1``, ``z2`` [N, D]: the projections of two views of the same N samples. Each dimension of
    each view is standardised over the **global** batch (mean 0, biased variance, ``eps`` added to
    the variance, exactly what the reference implementation's ``BatchNorm1d(affine=False)`` does
    under SyncBatchNorm); the cross-correlation is ``C = z1n^T z2n / N`` [D, D] with N the global
    batch size, and the loss is

        sum_i (1 - C_ii)^2  +  lambd * sum_{i != j} C_ij^2

    (a sum over dimensions, not a mean). ``lambd`` = 5e-3 is the paper's value. With ``eps`` = 0
    C is the Pearson correlation of eq. 2; the lecture deck seeds/001 writes eq. 2 without the
    centring (the paper assumes mean-centred outputs), which is what the standardisation does.
    Because both views are standardised, the loss is invariant to a per-dimension affine map
    ``a * z + b`` (a > 0) of either input, up to ``eps``. See :func:`barlow_twins_terms` for the
    two parts separately.
    """
    check_non_negative("lambd", lambd)
    terms = barlow_twins_terms(z1, z2, eps=eps)
    return terms.invariance + lambd * terms.redundancy


def vicreg_terms(z1: Tensor, z2: Tensor, eps: float = 1e-4, variance_views: str = "mean") -> VICRegTerms:
    """The invariance, variance and covariance terms of :func:`vicreg`, unweighted."""
    check_positive("eps", eps)
    if variance_views not in ("mean", "sum"):
        raise ValueError(f"variance_views must be 'mean' (the reference code) or 'sum' (the paper), got {variance_views!r}")
    views = _stacked_views(z1, z2)
    rows = _global_rows(views, "vicreg")
    dims = views.shape[-1]
    centred = _centred_over_global_batch(views, rows)
    covariance = all_reduce_sum_with_grad(centred.transpose(1, 2) @ centred) / (rows - 1)  # [2, D, D]
    # The unbiased variance is the covariance diagonal: no second collective needed.
    std = (covariance.diagonal(dim1=-2, dim2=-1) + eps).sqrt()
    return VICRegTerms(
        invariance=global_mean((views[0] - views[1]).pow(2)),
        variance=F.relu(1 - std).mean(dim=-1).sum() / (2 if variance_views == "mean" else 1),
        covariance=(_off_diagonal_square_sum(covariance) / dims).sum(),
    )


def vicreg(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
    variance_views: str = "mean",
) -> Tensor:
    """VICReg (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization
    for Self-Supervised Learning", section 3 and Algorithm 1).

    ``z1``, ``z2`` [N, D]: the expansions (projector outputs) of two views. The loss is

        sim_weight * s(Z, Z') + var_weight * (v(Z) + v(Z')) / 2 + cov_weight * (c(Z) + c(Z'))

    * invariance ``s``: mean squared error, averaged over rows **and** dimensions. The paper's
      formula for s writes (1/N) sum_i ||z_i - z'_i||^2 (no division by D), but its Algorithm 1
      and the reference code use ``F.mse_loss`` and the weight 25 was tuned with it: we follow
      Algorithm 1.
    * variance ``v``: per view, ``mean_d relu(1 - sqrt(Var(z_d) + eps))`` with the unbiased
      variance over the global batch (gamma = 1, eps = 1e-4 as in the paper). The two views'
      terms are averaged, as the reference ``main_vicreg.py`` does (``/ 2`` each) and lightly
      does: the weights 25 / 25 / 1 were tuned on that. ``variance_views="sum"`` adds them, as the
      paper's total loss and Algorithm 1 write it (twice the variance pressure).
    * covariance ``c``: per view, the sum of squared off-diagonal entries of the unbiased covariance
      matrix over the global batch, divided by D.

    Default weights are the paper's (lambda = mu = 25, nu = 1). Statistics cost one all-reduce of
    the [2, D] means and one of the [2, D, D] covariances per step. :func:`vicreg_terms` returns the
    three parts unweighted, for logging.
    """
    for name, value in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
        check_non_negative(name, value)
    terms = vicreg_terms(z1, z2, eps=eps, variance_views=variance_views)
    return sim_weight * terms.invariance + var_weight * terms.variance + cov_weight * terms.covariance
