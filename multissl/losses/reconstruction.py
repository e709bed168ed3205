"""Reconstruction losses: masked / denoising regression (MAE, context encoders, denoising
autoencoders) and masked-token cross-entropy (BERT's MLM).

Both average over the selected positions of the **global** batch (through
:func:`multissl.distributed.global_mean`), so ranks holding different numbers of masked positions
still reduce to the single-process mean, and DDP's averaging yields the single-process gradient.
Math runs in float32 (float64 stays float64); bf16/fp16 inputs return a float32 loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from multissl.distributed import all_reduce_sum, global_mean

from ._checks import (
    check_float_min_dims,
    check_mask,
    check_non_negative,
    check_positive,
    check_same_shape,
    compute_dtype,
)

__all__ = ["masked_reconstruction", "masked_token_cross_entropy"]


def masked_reconstruction(
    prediction: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    normalize_target: bool = False,
    corrupted_weight: float | None = None,
    clean_weight: float | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Weighted mean squared error over positions: MAE, context encoders, denoising autoencoders.

    ``prediction`` and ``target`` have the same shape, ``[B, T, P]`` (T patches or frames of P
    values) or any ``[B, ..., P]``. ``mask`` (bool, True = masked / corrupted = to be predicted)
    decides what a *position* is:

    * ``mask`` of shape ``prediction.shape[:-1]`` (e.g. ``[B, T]``): a position is one patch, and
      its error is the squared error averaged over its P values;
    * ``mask`` of the same shape as ``prediction``: a position is one element;
    * ``mask=None``: every element is a position with weight 1 (plain MSE).

    Each position gets the weight ``corrupted_weight`` (default 1) where the mask is True and
    ``clean_weight`` (default 0) where it is False, and the loss is

        sum_positions weight * error  /  sum_positions weight

    over the global batch. With the defaults that is the mean error over the masked positions only.

    * **MAE** (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", section 3):
      patch pixels ``[B, T, P]``, ``mask`` ``[B, T]``: the per-patch MSE averaged over the masked
      patches, as the paper and its reference code. ``normalize_target=True`` is its
      ``norm_pix_loss``: each target patch (the last dimension) is normalised by its own mean and
      variance, ``(t - mean) / sqrt(var + eps)``, with the unbiased variance and eps = 1e-6 of the
      reference code.
    * **Context encoders** (Pathak et al. 2016, "Context Encoders: Feature Learning by Inpainting",
      eq. 1): element-wise ``mask`` M of the dropped region: the squared L2 error on the masked
      region, normalised by the number of masked elements (the paper's "normalized masked L2"; the
      deck seeds/002 shows the unnormalised ||M (x - F((1 - M) x))||^2). The adversarial term is the
      objective's.
    * **Denoising autoencoders** (Vincent et al. 2008, ICML; Vincent et al. 2010, JMLR, "Stacked
      Denoising Autoencoders"): the clean input is the target. ``mask=None`` gives the plain
      squared-error criterion; an element-wise ``mask`` of the corrupted dimensions with
      ``corrupted_weight`` = alpha and ``clean_weight`` = beta gives the "emphasised" L_{2,alpha}.
      The paper sums the weighted errors per example; here the sum is divided by the total weight,
      a constant factor for a fixed corruption fraction, so alpha = beta reduces to plain MSE.

    The target is used as given: detach it if it comes from a network that must not be trained
    through it. Raises ValueError when the weights select nothing in the global batch.
    """
    check_float_min_dims("prediction", prediction, 2)
    check_float_min_dims("target", target, 2)
    check_same_shape("prediction", prediction, "target", target)
    check_positive("eps", eps)
    dtype = compute_dtype(prediction, target)
    prediction, target = prediction.to(dtype), target.to(dtype)
    if normalize_target:
        mean = target.mean(dim=-1, keepdim=True)
        variance = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (variance + eps).sqrt()
    error = (prediction - target).pow(2)

    if mask is None:
        if corrupted_weight is not None or clean_weight is not None:
            raise ValueError("corrupted_weight and clean_weight need a mask saying which positions are corrupted")
        return global_mean(error)
    if isinstance(mask, Tensor) and mask.shape != prediction.shape:
        if mask.shape != prediction.shape[:-1]:
            raise ValueError(
                f"mask must have the shape of prediction {tuple(prediction.shape)} (one flag per element) or "
                f"{tuple(prediction.shape[:-1])} (one flag per patch), got {tuple(mask.shape)}"
            )
        error = error.mean(dim=-1)
    check_mask("mask", mask, tuple(error.shape))
    corrupted = 1.0 if corrupted_weight is None else corrupted_weight
    clean = 0.0 if clean_weight is None else clean_weight
    check_non_negative("corrupted_weight", corrupted)
    check_non_negative("clean_weight", clean)

    weight = torch.where(mask, corrupted, clean).to(dtype)
    # Ratio of two global means: the exact global weighted mean, with the gradient convention of
    # global_mean (the denominator carries no gradient).
    mean_weight = global_mean(weight)
    if mean_weight == 0:
        raise ValueError("mask selects no position with a non-zero weight in the (global) batch")
    return global_mean(weight * error) / mean_weight


def masked_token_cross_entropy(
    logits: Tensor, labels: Tensor, mask: Tensor | None = None, ignore_index: int = -100
) -> Tensor:
    """Masked language modelling loss (Devlin et al. 2019, "BERT", section 3.1 task #1).

    ``logits`` [B, T, V] (any leading shape [..., V]) and integer ``labels`` [B, T]: the
    cross-entropy of the softmax over the vocabulary at the original token, averaged over the
    selected tokens of the **global** batch. A token is selected when its label is not
    ``ignore_index`` (Hugging Face's convention: -100 everywhere except at masked tokens) and, if
    ``mask`` [B, T] (bool) is given, the mask is True there. Only the selected rows of ``logits``
    are cast to float32, so the full [B, T, V] tensor is never upcast. Raises ValueError when a
    selected label lies outside [0, V) or when no token is selected in the global batch.
    """
    check_float_min_dims("logits", logits, 2)
    leading = tuple(logits.shape[:-1])
    if (
        not isinstance(labels, Tensor)
        or labels.is_floating_point()
        or labels.dtype == torch.bool
        or tuple(labels.shape) != leading
    ):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor of shape {leading}, got {got}")
    selected = labels != ignore_index
    if mask is not None:
        check_mask("mask", mask, leading)
        selected = selected & mask

    targets = labels[selected]
    vocabulary = logits.shape[-1]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocabulary):
        raise ValueError(
            f"labels: selected labels must lie in [0, {vocabulary}) or equal ignore_index={ignore_index}, "
            f"got values from {int(targets.min())} to {int(targets.max())}"
        )
    if all_reduce_sum(torch.tensor(float(targets.numel()), device=logits.device)) == 0:
        raise ValueError("no token is selected in the (global) batch: every label is ignore_index or unmasked")
    selected_logits = logits[selected].to(compute_dtype(logits))
    return global_mean(F.cross_entropy(selected_logits, targets, reduction="none"))
