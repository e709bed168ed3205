"""Losses that pull a prediction towards a fixed target: BYOL, SimSiam, the soft-target
cross-entropy (SwAV's swapped prediction, SimCLRv2 distillation, colorization's soft encoding).

The target (BYOL's momentum projection, SimSiam's other branch, the distillation teacher) is
detached inside each function: the stop-gradient is part of the formula, not a caller's option.
Per-row terms are reduced with :func:`multissl.distributed.global_mean`, so under data parallelism
every rank returns the mean over the global batch and DDP's averaging yields the single-process
gradient. Math runs in float32 (float64 stays float64); bf16/fp16 inputs return a float32 loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from multissl.distributed import global_mean

from ._checks import check_float, check_positive, check_same_shape, compute_dtype

__all__ = ["byol", "simsiam", "soft_cross_entropy", "distillation"]


def _checked_prediction_and_target(p: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    check_float("p", p, 2)
    check_float("z", z, 2)
    check_same_shape("p", p, "z", z)
    dtype = compute_dtype(p, z)
    return p.to(dtype), z.detach().to(dtype)


def byol(p: Tensor, z: Tensor) -> Tensor:
    """BYOL regression loss (Grill et al. 2020, "Bootstrap Your Own Latent", eq. 2).

    ``p`` [N, D] is the online network's prediction q(z_theta), ``z`` [N, D] the target network's
    projection z'_xi of the other view. Both are L2-normalised per row, and the per-row loss is the
    squared distance of the unit vectors, ``||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)``; the result is
    the mean over the (global) batch. ``z`` is detached (the paper's sg(z'_xi)): no gradient reaches
    the target branch, which is updated only by the EMA.

    The paper symmetrises by adding the loss with the views swapped, L + L~ (the lecture deck
    seeds/003 writes 1/2 (L + L~)); that sum is the objective's job, this is one direction.
    """
    p, z = _checked_prediction_and_target(p, z)
    return global_mean(2 - 2 * F.cosine_similarity(p, z, dim=-1))


def simsiam(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's D(p, z) (Chen & He 2021, "Exploring Simple Siamese Representation Learning", eq. 1-3).

    ``p`` [N, D] is the predictor output of one view, ``z`` [N, D] the projection of the other.
    Returns the negative cosine similarity ``-cos(p, stopgrad(z))`` (rows L2-normalised), averaged
    over the (global) batch; its minimum is -1. ``z`` is detached: the stop-gradient is what keeps
    SimSiam from collapsing. The paper's symmetric loss 1/2 D(p1, z2) + 1/2 D(p2, z1) is the
    objective's job.
    """
    p, z = _checked_prediction_and_target(p, z)
    return global_mean(-F.cosine_similarity(p, z, dim=-1))


def soft_cross_entropy(logits: Tensor, targets: Tensor, temperature: float = 1.0,
                       weights: Tensor | None = None) -> Tensor:
    """Cross-entropy against a target distribution: per row ``-sum_k t_k log softmax(logits / T)_k``.

    ``logits`` [N, K] with gradient; ``targets`` [N, K] a distribution per row, detached here (a
    teacher's, Sinkhorn codes, a soft encoding); ``weights`` [N] optional per-row weights
    (colorization's class rebalancing). Returns the (weighted) mean over the global batch: SwAV's
    ``l(z, q)`` (eq. 2), SimCLRv2's distillation (eq. 2), Zhang et al.'s eq. 2 are this function.
    """
    check_float("logits", logits, 2)
    check_float("targets", targets, 2)
    check_same_shape("logits", logits, "targets", targets)
    check_positive("temperature", temperature)
    dtype = compute_dtype(logits, targets)
    log_probabilities = F.log_softmax(logits.to(dtype) / temperature, dim=-1)
    per_row = -(targets.detach().to(dtype) * log_probabilities).sum(dim=-1)
    if weights is not None:
        if weights.shape != per_row.shape:
            raise ValueError(f"weights must be [{per_row.shape[0]}], got {tuple(weights.shape)}")
        per_row = weights.detach().to(dtype) * per_row
    return global_mean(per_row)


def distillation(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """SimCLRv2 distillation loss (Chen et al. 2020b, "Big Self-Supervised Models are Strong
    Semi-Supervised Learners", section 2, eq. 2).

    ``student_logits``, ``teacher_logits`` [N, C]. Both are divided by ``temperature`` tau and
    turned into distributions P(y | x; tau) by a softmax; the per-row loss is the cross-entropy
    ``-sum_y P_T(y|x; tau) log P_S(y|x; tau)``, averaged over the (global) batch (the paper sums
    over the unlabeled set; the mean only rescales). The teacher is detached: only the student
    learns. No tau^2 factor is applied (Hinton et al. 2015 use one; SimCLRv2 does not). The
    paper's optional extra term on labelled examples is an ordinary cross-entropy, not included.
    """
    check_float("student_logits", student_logits, 2)
    check_float("teacher_logits", teacher_logits, 2)
    check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    check_positive("temperature", temperature)
    dtype = compute_dtype(student_logits, teacher_logits)
    teacher_probabilities = F.softmax(teacher_logits.detach().to(dtype) / temperature, dim=-1)
    return soft_cross_entropy(student_logits, teacher_probabilities, temperature)
