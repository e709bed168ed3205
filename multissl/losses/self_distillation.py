"""Self-distillation losses: a student matches an EMA teacher's outputs, with no negatives.

* :func:`dino`: DINO's cross-entropy between the teacher's centred, sharpened distributions of the
  global crops and the student's distributions of every other crop (Caron et al. 2021).
* :func:`ibot_patch`: iBOT's masked-patch self-distillation, the same cross-entropy per patch token
  at the positions the student saw masked (Zhou et al. 2022; DINOv2's iBOT term, Oquab et al. 2023).
* :func:`koleo`: the Kozachenko-Leonenko entropy regulariser of DINOv2 (Sablayrolles et al. 2019).
* :func:`latent_regression`: regression of a teacher's feature vectors: data2vec (Baevski et al.
  2022) and I-JEPA (Assran et al. 2023); :func:`data2vec_targets` builds data2vec's from the
  teacher's top layers.

Teachers' outputs are detached inside each function (the stop-gradient is part of the formula).
Per-row terms are reduced over the **global** batch with :func:`multissl.distributed.global_mean`
and KoLeo's nearest neighbours are searched over the global batch (gathered with gradient), so
under data parallelism every rank returns the single-process value and DDP's averaging yields the
single-process gradient (see :mod:`multissl.distributed`). Math runs in float32 (float64 stays
float64) with autocast off; bf16/fp16 inputs return a float32 loss.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from multissl.distributed import gather_with_grad, global_mean, rank_offset

from ._checks import check_float, check_mask, check_positive, check_same_shape, compute_dtype, float32_math

__all__ = ["dino", "ibot_patch", "koleo", "latent_regression", "teacher_distribution", "data2vec_targets"]


def teacher_distribution(teacher_logits: Tensor, center: Tensor, temperature: float | Tensor) -> Tensor:
    """DINO's teacher target (Caron et al. 2021, eq. 1 and section 3.1, ``DINOLoss`` of the reference):
    ``softmax((t - c) / tau_t)`` per row, centred by ``center`` [K] and sharpened by the teacher
    temperature ``tau_t`` (0.04 to 0.07 in the paper). ``teacher_logits`` [..., K]; detached."""
    check_positive("teacher_temperature", temperature)
    dtype = compute_dtype(teacher_logits)
    logits = teacher_logits.detach().to(dtype) - center.detach().to(dtype).reshape(-1)
    return F.softmax(logits / temperature, dim=-1)


def _cross_entropy(targets: Tensor, student_logits: Tensor, temperature: float | Tensor) -> Tensor:
    """``-sum_k p_k log softmax(s / tau_s)_k`` over the last dimension."""
    return -(targets * F.log_softmax(student_logits.to(targets.dtype) / temperature, dim=-1)).sum(dim=-1)


@float32_math
def dino(student_logits: Sequence[Tensor], teacher_logits: Sequence[Tensor], center: Tensor,
         student_temperature: float = 0.1, teacher_temperature: float | Tensor = 0.04) -> Tensor:
    """DINO's loss (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
    eq. 3 and Algorithm 1; ``DINOLoss`` of the reference ``main_dino.py``).

    ``student_logits``: one ``[N, K]`` tensor per crop the student saw, the teacher's crops first
    (the two global crops), then the local crops. ``teacher_logits``: one ``[N, K]`` tensor per
    crop the teacher saw (the global crops: crop ``i`` of the teacher is crop ``i`` of the student).
    ``center`` [K]: the running mean of the teacher's logits (its update is the caller's, after this
    loss, as the reference: :class:`multissl.modules.TeacherCentering`).

    For every teacher crop ``i`` and every student crop ``v != i``, the per-row cross-entropy
    ``H(P_t(x_i), P_s(x_v)) = -sum_k P_t,k log P_s,k`` with ``P_t = softmax((t - c) / tau_t)``
    (:func:`teacher_distribution`, detached) and ``P_s = softmax(s / tau_s)``; the loss is the mean
    over those pairs of each pair's mean over the (global) batch. With 2 globals and L locals that is
    ``2 (L + 2) - 2`` pairs, as the reference's ``n_loss_terms``. Temperatures: the paper's
    ``tau_s = 0.1`` and ``tau_t`` = 0.04 (warmed up towards 0.07 by the caller where wanted).
    """
    if not teacher_logits or len(student_logits) < len(teacher_logits):
        raise ValueError(f"dino needs at least one teacher crop and at least as many student crops, got "
                         f"{len(teacher_logits)} teacher and {len(student_logits)} student crops")
    if len(student_logits) == 1:
        raise ValueError("dino compares each student crop with the teacher's other crops: give at least 2 crops")
    for index, logits in enumerate(list(student_logits) + list(teacher_logits)):
        check_float(f"logits[{index}]", logits, 2)
        check_same_shape("logits[0]", student_logits[0], f"logits[{index}]", logits)
    check_positive("student_temperature", student_temperature)
    targets = [teacher_distribution(t, center, teacher_temperature) for t in teacher_logits]
    terms = [_cross_entropy(target, student, student_temperature)
             for i, target in enumerate(targets) for v, student in enumerate(student_logits) if v != i]
    # Every pair has the same N rows: the mean over [pairs, N] is the mean of the pairs' means.
    return global_mean(torch.stack(terms))


@float32_math
def ibot_patch(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, center: Tensor,
               student_temperature: float = 0.1, teacher_temperature: float | Tensor = 0.04) -> Tensor:
    """iBOT's masked image modelling by self-distillation (Zhou et al. 2022, "iBOT: Image BERT
    Pre-Training with Online Tokenizer", eq. 2 and ``iBOTLoss`` of ``main_ibot.py``; the same
    reduction in DINOv2's ``iBOTPatchLoss.forward_masked``, Oquab et al. 2023).

    ``mask`` Bool[B, T]: the patches each of the B images showed the student masked. ``student_logits``
    and ``teacher_logits`` [M, K]: the head's outputs at those M = mask.sum() positions, in
    ``mask.nonzero()`` order (row-major: ``sequence[mask]``); the student's from the masked image,
    the teacher's from the unmasked one. ``center`` [K]: the teacher's patch centre.

    Per masked patch, ``H(P_t, P_s)`` as in :func:`dino` (centred and sharpened teacher, detached);
    per image, the mean over its masked patches (0 for an image with none, as the reference's
    ``clamp(min=1)``); the loss is the mean over the B images of the (global) batch.
    """
    check_float("student_logits", student_logits, 2)
    check_float("teacher_logits", teacher_logits, 2)
    check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be Bool[B, T], got {getattr(mask, 'shape', type(mask).__name__)}")
    check_mask("mask", mask, tuple(mask.shape))
    check_positive("student_temperature", student_temperature)
    if student_logits.shape[0] != mask.sum():  # one host sync; wrong inputs would silently misalign
        raise ValueError(f"mask selects {int(mask.sum())} patches but the logits have {student_logits.shape[0]} rows")
    per_patch = _cross_entropy(teacher_distribution(teacher_logits, center, teacher_temperature), student_logits,
                               student_temperature)
    rows = mask.nonzero()[:, 0]
    per_image = per_patch.new_zeros(mask.shape[0]).index_add(0, rows, per_patch)
    return global_mean(per_image / mask.sum(dim=1).clamp_min(1).to(per_image.dtype))


@float32_math
def koleo(embeddings: Tensor, eps: float = 1e-8) -> Tensor:
    """The KoLeo regulariser (Sablayrolles et al. 2019, "Spreading vectors for similarity search",
    eq. 7; DINOv2, Oquab et al. 2023, section 4, ``KoLeoLoss`` of the reference).

    ``embeddings`` [N, D] (DINOv2: the student's [CLS] features of one global crop). Rows are
    L2-normalised; ``d_i`` is the distance from row i to its nearest other row of the (global) batch
    (searched by the largest dot product, as the reference, whose distance also adds ``eps`` to
    the difference: ``||x_i - x_nn(i) + eps||``); the loss is ``-mean_i log(d_i + eps)``. The
    gradient reaches both ends of every nearest-neighbour pair, whichever process holds them.

    The reference searches each GPU's own rows only; here the search covers the global batch, the
    batch the formula is written for, so N processes equal one.
    """
    check_float("embeddings", embeddings, 2)
    dtype = compute_dtype(embeddings)
    unit = F.normalize(embeddings.to(dtype), dim=-1, eps=eps)
    everyone = gather_with_grad(unit)
    if everyone.shape[0] < 2:
        raise ValueError("koleo needs at least 2 rows in the global batch")
    start = rank_offset(unit.shape[0], unit.device)
    own = start + torch.arange(unit.shape[0], device=unit.device)
    with torch.no_grad():
        similarity = unit @ everyone.T
        similarity[torch.arange(unit.shape[0], device=unit.device), own] = -2.0  # never one's own neighbour
        neighbour = similarity.argmax(dim=1)
    distances = (unit - everyone[neighbour] + eps).norm(dim=-1)
    return global_mean(-torch.log(distances + eps))


def latent_regression(prediction: Tensor, target: Tensor, beta: float = 0.0, scale: float | None = None) -> Tensor:
    """Regression of a teacher's feature vectors: data2vec and I-JEPA.

    ``prediction`` and ``target`` [N, D]: one row per predicted position (masked time step, token or
    patch); ``target`` is detached (an EMA teacher's). Per row, ``scale * sum_d l(p_d - t_d)`` with
    ``l(x) = x^2`` when ``beta == 0`` and the smooth L1 (Huber) loss of threshold ``beta``
    otherwise (``0.5 x^2 / beta`` below ``beta``, ``|x| - 0.5 beta`` above, as ``F.smooth_l1_loss``);
    ``scale`` None is ``1 / sqrt(D)``. Returns the mean over the rows of the (global) batch.

    * **data2vec** (Baevski et al. 2022, "data2vec: A General Framework for Self-supervised Learning
      in Speech, Vision and Language", eq. 2-3; fairseq's ``data2vec_audio.py``/``_text``/``_vision``):
      the reference sums ``l`` over the features, multiplies by ``loss_scale`` (None: 1/sqrt(D)) and
      divides by the number of masked positions: this function. Its defaults: audio ``beta=0``
      (squared error), scale 1/sqrt(D); text ``beta=4``, ``scale=1``; vision ``beta=2``, 1/sqrt(D).
      The paper writes the smooth L1 with beta alone and no scale.
    * **I-JEPA** (Assran et al. 2023, eq. 1-2): the paper's average L2 distance; the reference
      (``src/train.py``) uses ``F.smooth_l1_loss(z, h)``, the mean of the beta = 1 Huber loss over
      every element: ``beta=1, scale=1/D``.
    """
    check_float("prediction", prediction, 2)
    check_float("target", target, 2)
    check_same_shape("prediction", prediction, "target", target)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < math.inf:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if scale is not None:
        check_positive("scale", scale)
    dtype = compute_dtype(prediction, target)
    difference = prediction.to(dtype) - target.detach().to(dtype)
    if beta == 0:
        per_element = difference.square()
    else:
        per_element = F.smooth_l1_loss(difference, torch.zeros_like(difference), reduction="none", beta=beta)
    factor = scale if scale is not None else 1 / math.sqrt(prediction.shape[-1])
    return global_mean(per_element.sum(dim=-1) * factor)


def _normalized(layer: Tensor, kind: str, valid: Tensor | None, eps: float) -> Tensor:
    if kind == "layer":
        return F.layer_norm(layer, layer.shape[-1:], eps=eps)
    if kind == "instance":  # each feature over the sequence of its sample, padding left out
        weights = torch.ones_like(layer[..., :1]) if valid is None else valid.unsqueeze(-1).to(layer.dtype)
        count = weights.sum(dim=1, keepdim=True).clamp_min(1.0)
        mean = (layer * weights).sum(dim=1, keepdim=True) / count
        variance = ((layer - mean).square() * weights).sum(dim=1, keepdim=True) / count
        return (layer - mean) / torch.sqrt(variance + eps)
    if kind == "none":
        return layer
    raise ValueError(f"normalisation must be 'instance', 'layer' or 'none', got {kind!r}")


@torch.no_grad()
def data2vec_targets(layers: Sequence[Tensor], valid: Tensor | None = None, layer_norm: str = "instance",
                     final_norm: str = "none", eps: float = 1e-5) -> Tensor:
    """data2vec's regression targets (Baevski et al. 2022, section 3.3, eq. 1: ``y_t = 1/K sum_l a_t^l``
    over the top K blocks, each normalised first; fairseq's ``data2vec_*.py``).

    ``layers``: the teacher's K top layer outputs, each [B, T, D]; ``valid`` Bool[B, T] (None: all
    positions) marks real content. Each layer is normalised without parameters (``layer_norm``:
    "instance": every feature over the positions of its sample, as ``F.instance_norm`` on [B, D, T]
    but over valid positions only; "layer": over the features of each position; "none"), the layers
    are averaged, and the average normalised once more (``final_norm``, same choices). The reference
    defaults: audio instance / none, text layer / none, vision v1 none / layer (``layer_norm_targets``),
    data2vec 2.0 instance for every modality. Returns [B, T, D] float32, no gradient; padded
    positions hold whatever the normalisation gives them (select the masked ones).
    """
    if not layers:
        raise ValueError("data2vec_targets needs at least one layer")
    for index, layer in enumerate(layers):
        check_float(f"layers[{index}]", layer, 3)
        check_same_shape("layers[0]", layers[0], f"layers[{index}]", layer)
    if valid is not None:
        check_mask("valid", valid, tuple(layers[0].shape[:2]))
    dtype = compute_dtype(*layers)
    average = sum(_normalized(layer.detach().to(dtype), layer_norm, valid, eps) for layer in layers) / len(layers)
    return _normalized(average, final_norm, valid, eps)
