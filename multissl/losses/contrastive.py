"""The contrastive family: one InfoNCE kernel and the losses built on it.

Every loss here compares each of this process's rows (anchors) against the columns of the *global*
batch: the columns are gathered with gradient, this rank's own rows sit at
``rank_offset + arange(n)`` among them, and per-anchor terms are reduced with
:func:`multissl.distributed.global_mean`. Each rank therefore returns the loss of the whole global
batch, and DDP's gradient averaging yields exactly the single-process gradient
(see :mod:`multissl.distributed`). With one process all of that is plain computation.

Math runs in float32 (float64 when an input is float64) with autocast switched off inside, so
bf16/fp16 activations are accepted and the returned loss is float32.

One kernel, :func:`cross_entropy_at_positives`, computes ``-log softmax`` at each anchor's
positive for InfoNCE/MoCo, NT-Xent, CLIP, CPC, N-pair, wav2vec 2.0's masked-frame task and
HuBERT's cluster prediction, and holds the hard-negative options (debiased tau+, reweighting beta)
for all of them; SupCon (several positives per anchor) and the soft nearest neighbour loss (a sum
over same-class rows inside the log) need a log-sum-exp over a subset of columns and write it out
directly. SigLIP's pairwise sigmoid and the spectral contrastive loss are not softmaxes: they sum
per-pair terms over the same global columns.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from multissl.distributed import (
    all_reduce_sum,
    gather_no_grad,
    gather_with_grad,
    is_distributed,
    global_mean,
    rank_offset,
)

from ._checks import (
    check_float,
    float32_math,
    compute_dtype,
    check_labels,
    check_mask,
    check_positive,
    check_rows,
    check_same_dim,
)

__all__ = ["cross_entropy_at_positives", "info_nce", "nt_xent", "clip_loss", "siglip_loss", "spectral_contrastive",
           "supcon", "soft_nearest_neighbors", "cpc", "cpc_accuracy", "masked_frame_contrastive",
           "masked_cluster_prediction", "imix_info_nce"]


# --- shared pieces ------------------------------------------------------------------------------


def _unit(x: Tensor, dtype: torch.dtype) -> Tensor:
    return F.normalize(x.to(dtype), dim=-1)


def _gather_columns(local: Tensor) -> tuple[Tensor, int]:
    """The global batch's rows (with gradient) and the index where this rank's rows start in it."""
    return gather_with_grad(local), rank_offset(local.shape[0], local.device)


class _SoftmaxCrossEntropyInPlace(torch.autograd.Function):
    """Per-row ``-log softmax(logits)[row, positive]``, reusing the logits' memory.

    ``F.cross_entropy`` keeps three more [n, M] buffers besides the logits (the log-softmax, a
    one-hot gradient, the log-softmax gradient); at a MoCo queue of 65k keys those allocations
    and passes cost more than the similarity matmul itself on a CPU. Here the logits become
    ``exp(logits - row max)`` in place, the loss is the stable ``row max + log(row sum) -
    positive logit`` (log-sum-exp, never a log of an exponential), and backward turns the same
    buffer into ``softmax - one_hot`` scaled by the incoming gradient. The logits are therefore
    overwritten (marked dirty); a second backward through the same graph, or a double backward,
    raises. Entries at ``excluded`` (an anchor against itself) are set to -inf here, outside
    autograd: their softmax is exactly 0, so they get no gradient, and no copy of the [n, M]
    gradient is needed for them (an in-place fill under autograd would clone it).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, logits: Tensor, positives: Tensor, excluded: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        if excluded is not None:
            logits[torch.arange(logits.shape[0], device=logits.device), excluded] = float("-inf")
        positive_logits = logits.gather(1, positives[:, None]).squeeze(1)
        row_max = logits.amax(dim=1, keepdim=True)
        exponentials = logits.sub_(row_max).exp_()
        row_sum = exponentials.sum(dim=1, keepdim=True)
        terms = (row_max + row_sum.log()).squeeze(1) - positive_logits
        ctx.mark_dirty(logits)
        ctx.save_for_backward(exponentials, row_sum, positives)
        return terms, exponentials

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_terms: Tensor | None, grad_buffer: Tensor | None):  # type: ignore[override]
        if grad_buffer is not None:
            raise RuntimeError("the overwritten logits of the InfoNCE kernel are not differentiable")
        if grad_terms is None:
            return None, None, None
        exponentials, row_sum, positives = ctx.saved_tensors
        grad = exponentials.mul_(grad_terms[:, None] / row_sum)
        grad[torch.arange(grad.shape[0], device=grad.device), positives] -= grad_terms
        return grad, None, None


def cross_entropy_at_positives(logits: Tensor, positives: Tensor, excluded: Tensor | None = None, *,
                               tau_plus: float = 0.0, beta: float = 0.0,
                               min_logit: float | Tensor | None = None) -> Tensor:
    """The InfoNCE kernel: mean over the global batch of ``-log softmax(logits)[row, positive]``
    (``F.cross_entropy(logits, positives)`` with the global mean, in less memory; -inf entries are
    candidates a row never sees).

    ``logits`` [n, M] hold this rank's anchors against the global candidates; ``positives`` [n]
    the column of each anchor's positive; ``excluded`` [n], optional, a column each anchor is not
    compared with at all (itself). ``logits`` is overwritten: pass a tensor nothing else reads.

    **Hard negatives.** ``tau_plus > 0`` or ``beta > 0`` replace the negatives' sum in the
    denominator by the estimator of Robinson, Chuang, Sra, Jegelka 2021 ("Contrastive Learning with
    Hard Negative Samples", arXiv:2010.04592), which with ``beta = 0`` is the debiased contrastive
    loss of Chuang, Robinson, Lin, Torralba, Jegelka 2020 ("Debiased Contrastive Learning",
    arXiv:2007.00224). Per anchor, with ``s+`` its
    positive's logit and ``s_k`` the logits of its N negatives (every finite column but the
    positive and ``excluded``)::

        w_k = exp(beta s_k) / mean_k exp(beta s_k)          importance of negative k (hardness)
        Ng  = max( (sum_k w_k exp(s_k) - tau_plus N exp(s+)) / (1 - tau_plus),  N exp(min_logit) )
        term = -log( exp(s+) / (exp(s+) + Ng) )

    ``tau_plus`` is the class prior tau+ (the chance that a "negative" shares the anchor's class):
    its share of the positive is subtracted from the negatives' mass. ``min_logit`` is the lowest
    value a logit can take (``-1 / temperature`` for cosine logits): the floor keeps the estimate
    positive, as both papers' code clamps it (None: no floor, allowed only with ``tau_plus = 0``).
    As the official code (github.com/joshr17/HCL), ``beta`` multiplies the logit, i.e. the
    cosine divided by the temperature; the paper writes ``exp(beta f(x)^T f(x-))``. With both
    at 0 this is plain InfoNCE (the fast in-place path). The estimator is per anchor over the
    global candidates, so it is exact under N processes like the plain loss.
    """
    if logits.numel() == 0:  # a rank (or a batch) with no anchors still joins the global mean
        return global_mean(logits.sum(dim=1))
    if tau_plus or beta:
        return global_mean(_hard_negative_terms(logits, positives, excluded, tau_plus, beta, min_logit))
    terms, _ = _SoftmaxCrossEntropyInPlace.apply(logits, positives, excluded)
    return global_mean(terms)


def check_hard_negatives(tau_plus: float, beta: float, min_logit: float | Tensor | None) -> None:
    """The estimator's arguments (see :func:`cross_entropy_at_positives`), named when wrong."""
    if isinstance(tau_plus, bool) or not isinstance(tau_plus, (int, float)) or not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus (the class prior tau+) must lie in [0, 1), got {tau_plus!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < float("inf"):
        raise ValueError(f"beta (the hardness concentration) must be a finite number >= 0, got {beta!r}")
    if tau_plus and min_logit is None:
        raise ValueError("tau_plus > 0 needs logits with a lower bound (cosine similarities): the debiased "
                         "estimate of the negatives is clamped at N exp(min logit)")


def _hard_negative_terms(logits: Tensor, positives: Tensor, excluded: Tensor | None, tau_plus: float,
                         beta: float, min_logit: float | Tensor | None) -> Tensor:
    """Per-anchor terms of the hard-negative / debiased estimator (formula in the kernel's doc),
    in log space: every exponential is taken relative to the row's largest logit."""
    check_hard_negatives(tau_plus, beta, min_logit)
    rows = torch.arange(logits.shape[0], device=logits.device)
    positive_logits = logits[rows, positives]
    negative = torch.isfinite(logits)
    negative[rows, positives] = False
    if excluded is not None:
        negative[rows, excluded] = False
    count = negative.sum(dim=1).to(logits.dtype)
    negatives = logits.masked_fill(~negative, float("-inf"))
    if beta:  # log sum_k w_k e^{s_k} = log sum e^{(1 + beta) s} - log mean e^{beta s}
        log_mass = (torch.logsumexp((1.0 + beta) * negatives, dim=1) - torch.logsumexp(beta * negatives, dim=1)
                    + count.log())
    else:
        log_mass = torch.logsumexp(negatives, dim=1)
    # the terms do not depend on the shift (it cancels), so it carries no gradient
    shift = torch.maximum(positive_logits, negatives.amax(dim=1)).detach()
    positive = (positive_logits - shift).exp()
    mass = torch.where(count > 0, (log_mass - shift).exp(), torch.zeros_like(shift))
    if tau_plus:
        mass = (mass - tau_plus * count * positive) / (1.0 - tau_plus)
    if min_logit is not None:
        floor = torch.as_tensor(min_logit, dtype=logits.dtype, device=logits.device).detach()
        mass = torch.maximum(mass, count * (floor - shift).exp())
    return shift + torch.log(positive + mass) - positive_logits


#: rows of the [N, N] buffer the CLIP kernel's backward rewrites at a time (a block of 4,096 columns
#: is 2 MB of float32: in the cache of one core)
_BLOCK_ROWS = 128


class _SymmetricCrossEntropy(torch.autograd.Function):
    """CLIP's loss on one process, fused: ``(CE(a -> b) + CE(b -> a)) / 2`` over the logits
    ``L = s * a @ b.T`` of the L2-normalised rows of ``a``, ``b`` [N, D], with the diagonal as
    positives (the normalisation is inside too: its backward is one projection per side,
    ``(g - u <u, g>) / ||x||``, a few [N, D] passes instead of autograd's chain).

    Forward: one matmul, then ``E = exp(L)`` in place of ``L``; the row sums of ``E`` give the
    a -> b log-sum-exps and its column sums the b -> a ones, so one exponential pass serves both
    directions (``F.cross_entropy`` twice needs a transposed copy, two maxima and two). No shift is
    needed on a CPU while ``s <= 40``: |L| <= s for unit rows, so every ``exp(L)`` lies in
    [4e-18, 2.4e17], normal float32 numbers, and their sums cannot overflow. Above that (CLIP clamps
    s at 100), and on GPUs (where reading s would wait for the device), rows and columns are shifted
    by their own maxima: two exponential passes, still one extra buffer.
    Backward: ``G = (softmax_rows(L) + softmax_columns(L) - 2 I) / 2N`` built from ``E`` and the
    sums, then the matmul's two products; the gradient of ``s`` is ``sum(G * a @ b.T)``, read off
    ``G @ b`` without another [N, N] pass. Values and gradients equal the two cross-entropies'.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, scale: Tensor) -> Tensor:  # type: ignore[override]
        n = a.shape[0]
        # L2 normalisation inside (F.normalize's eps): its backward is one projection per side
        a_norm = a.norm(dim=1, keepdim=True).clamp_min_(1e-12)
        b_norm = b.norm(dim=1, keepdim=True).clamp_min_(1e-12)
        a, b = a / a_norm, b / b_norm
        logits = torch.mm(a * scale, b.T)
        positive = logits.diagonal().clone()
        if a.device.type == "cpu" and float(scale) <= 40.0:  # (reading s on a GPU would sync)
            exponentials = logits.exp_()  # |L| <= 40: exp(L) in [4e-18, 2.4e17], no shift needed
            rows, columns = exponentials.sum(dim=1), exponentials.sum(dim=0)
            loss = (rows.log().sum() + columns.log().sum()) / (2 * n) - positive.mean()
            row_part = column_part = exponentials
        else:
            row_max, column_max = logits.amax(dim=1, keepdim=True), logits.amax(dim=0, keepdim=True)
            column_part = (logits - column_max).exp_()
            row_part = logits.sub_(row_max).exp_()
            rows, columns = row_part.sum(dim=1), column_part.sum(dim=0)
            loss = ((row_max.squeeze(1) + rows.log()).mean() + (column_max.squeeze(0) + columns.log()).mean()
                    - 2 * positive.mean()) / 2
        ctx.save_for_backward(a, b, a_norm, b_norm, scale, row_part, column_part, rows, columns)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor):  # type: ignore[override]
        a, b, a_norm, b_norm, scale, row_part, column_part, rows, columns = ctx.saved_tensors
        n = a.shape[0]
        factor = grad_loss / (2 * n)
        row_scale, column_scale = (factor / rows)[:, None], (factor / columns)[None, :]
        if row_part is column_part:
            # G = E * (row_scale + column_scale), written over E a block of rows at a time: no
            # second [N, N] buffer (a fresh one costs its page faults), the block stays in cache
            grad = row_part
            for start in range(0, n, _BLOCK_ROWS):
                block = grad[start:start + _BLOCK_ROWS]
                by_row = block * row_scale[start:start + _BLOCK_ROWS]
                block.mul_(column_scale).add_(by_row)
        else:
            grad = row_part.mul_(row_scale).addcmul_(column_part, column_scale)
        grad.diagonal().sub_(2 * factor)
        towards_a = grad @ b  # dLoss/d(unit a) = s * G @ b
        grad_scale = (towards_a * a).sum().reshape(scale.shape) if ctx.needs_input_grad[2] else None
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            towards_a.mul_(scale)
            grad_a = (towards_a - a * (towards_a * a).sum(dim=1, keepdim=True)).div_(a_norm)
        if ctx.needs_input_grad[1]:
            towards_b = torch.mm(grad.T, a).mul_(scale)
            grad_b = (towards_b - b * (towards_b * b).sum(dim=1, keepdim=True)).div_(b_norm)
        return grad_a, grad_b, grad_scale


class _ScoresAgainstKeysAndNegatives(torch.autograd.Function):
    """``anchors @ cat([keys, negatives]).T``, written into one buffer without concatenating.

    Autograd through ``torch.cat`` would also compute the gradient of every queue row (a matmul
    as large as the forward one) although a MoCo queue never needs it; here it is computed only
    when ``negatives`` requires grad.
    """

    @staticmethod
    def forward(ctx, anchors: Tensor, keys: Tensor, negatives: Tensor) -> Tensor:  # type: ignore[override]
        split = keys.shape[0]
        scores = anchors.new_empty(anchors.shape[0], split + negatives.shape[0])
        torch.mm(anchors, keys.T, out=scores[:, :split])
        torch.mm(anchors, negatives.T, out=scores[:, split:])
        ctx.save_for_backward(anchors, keys, negatives)
        return scores

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        anchors, keys, negatives = ctx.saved_tensors
        grad_keys_part, grad_negatives_part = grad[:, : keys.shape[0]], grad[:, keys.shape[0] :]
        grad_anchors = grad_keys = grad_negatives = None
        if ctx.needs_input_grad[0]:
            grad_anchors = torch.addmm(grad_keys_part @ keys, grad_negatives_part, negatives)
        if ctx.needs_input_grad[1]:
            grad_keys = grad_keys_part.T @ anchors
        if ctx.needs_input_grad[2]:
            grad_negatives = grad_negatives_part.T @ anchors
        return grad_anchors, grad_keys, grad_negatives


def _exclude_self(logits: Tensor, self_columns: Tensor) -> None:
    """Set each anchor's similarity to itself to -inf in place: it is neither positive nor negative."""
    logits[torch.arange(logits.shape[0], device=logits.device), self_columns] = float("-inf")


# --- InfoNCE and its users ----------------------------------------------------------------------


@float32_math
def info_nce(query: Tensor, key: Tensor, negatives: Tensor | None = None, temperature: float | Tensor = 0.1,
             normalize: bool = True, *, query_negatives: Tensor | None = None, tau_plus: float = 0.0,
             beta: float = 0.0) -> Tensor:
    """InfoNCE (van den Oord et al. 2018, arXiv:1807.03748), in MoCo's form (He et al. 2020, eq. 1).

    ``query`` [N, D]: row i is an anchor whose positive is row i of ``key`` [N, D]; every other key
    of the (global) batch is one of its negatives, and so is every row of the optional
    ``negatives`` [K, D] (a MoCo queue, already global: it is not gathered). Similarity is the
    cosine (all inputs are L2-normalised here) divided by ``temperature``; ``normalize=False``
    scores raw dot products instead (N-pair). Returns the mean over the N (global) queries of
    ``-log softmax`` at the positive (a 0-d tensor).

    ``query_negatives`` [N, S, D], optional: S more negatives for each query alone (MoCHi's
    synthetic hard negatives, :func:`multissl.modules.mix_hard_negatives`), scored like the others.
    ``tau_plus`` (debiased, Chuang et al. 2020) and ``beta`` (hard-negative reweighting, Robinson
    et al. 2021) change the negatives' term: see :func:`cross_entropy_at_positives`; the clamp is at
    ``-1 / temperature``, the lowest cosine logit.
    """
    check_float("query", query, 2)
    check_float("key", key, 2)
    check_rows("query", query, "key", key)
    check_same_dim("query", query, "key", key)
    if negatives is not None:
        check_float("negatives", negatives, 2)
        check_same_dim("query", query, "negatives", negatives)
    if query_negatives is not None:
        check_float("query_negatives", query_negatives, 3)
        check_rows("query", query, "query_negatives", query_negatives)
        check_same_dim("query", query, "query_negatives", query_negatives)
    check_positive("temperature", temperature)
    min_logit = -1.0 / temperature if normalize else None
    check_hard_negatives(tau_plus, beta, min_logit)
    dtype = compute_dtype(query, key, *(t for t in (negatives, query_negatives) if t is not None))
    # Dividing the [N, D] queries is cheaper than dividing the [N, N + K] logits.
    prepare = _unit if normalize else (lambda x, d: x.to(d))
    anchors = prepare(query, dtype) / temperature
    keys, start = _gather_columns(prepare(key, dtype))
    if negatives is None:
        logits = anchors @ keys.T
    else:
        logits = _ScoresAgainstKeysAndNegatives.apply(anchors, keys, prepare(negatives, dtype))
    if query_negatives is not None:
        own = torch.einsum("nd,nsd->ns", anchors, prepare(query_negatives, dtype))
        logits = torch.cat([logits, own], dim=1)
    positives = start + torch.arange(query.shape[0], device=query.device)
    return cross_entropy_at_positives(logits, positives, tau_plus=tau_plus, beta=beta, min_logit=min_logit)


@float32_math
def nt_xent(z1: Tensor, z2: Tensor, temperature: float | Tensor = 0.5, *, tau_plus: float = 0.0,
            beta: float = 0.0) -> Tensor:
    """NT-Xent, SimCLR's loss, exactly as Algorithm 1 of Chen et al. 2020 (arXiv:2002.05709).

    ``z1``, ``z2`` [N, D]: two views' projections; row i of each comes from the same image. The 2N
    projections are L2-normalised; each of the 2N anchors is scored (cosine / ``temperature``)
    against the 2N - 1 others (itself excluded), its positive being the other view of its image.
    Returns the mean over the 2N (global) anchors of ``-log softmax`` at the positive.

    ``tau_plus`` / ``beta``: the debiased (Chuang et al. 2020) and hard-negative (Robinson et al.
    2021) estimators of the 2N - 2 negatives' term, the setting both papers' code is written for
    (see :func:`cross_entropy_at_positives`; clamped at ``-1 / temperature``).
    """
    check_float("z1", z1, 2)
    check_float("z2", z2, 2)
    check_rows("z1", z1, "z2", z2)
    check_same_dim("z1", z1, "z2", z2)
    check_positive("temperature", temperature)
    check_hard_negatives(tau_plus, beta, -1.0)
    n = z1.shape[0]
    anchors = _unit(torch.cat([z1, z2]), compute_dtype(z1, z2))
    columns, start = _gather_columns(anchors)
    own = start + torch.arange(2 * n, device=anchors.device)
    logits = (anchors / temperature) @ columns.T
    # Within this rank's block [z1; z2], the other view of row j sits n rows away.
    return cross_entropy_at_positives(logits, own.roll(n), excluded=own, tau_plus=tau_plus, beta=beta,
                                      min_logit=-1.0 / temperature)


@float32_math
def clip_loss(a: Tensor, b: Tensor, logit_scale: float | Tensor) -> Tensor:
    """CLIP's symmetric contrastive loss (Radford et al. 2021, arXiv:2103.00020, Figure 3).

    ``a`` [N, D] and ``b`` [N, D]: paired embeddings of two modalities (row i of each is a pair),
    L2-normalised here. Logits are ``logit_scale * cos(a_i, b_j)``, where ``logit_scale`` is the
    multiplier as CLIP uses it (already exponentiated; a float or a 0-d tensor, learnable or not).
    Returns ``(CE(a -> b) + CE(b -> a)) / 2``, each cross-entropy a mean over the N (global) rows.
    """
    check_float("a", a, 2)
    check_float("b", b, 2)
    check_rows("a", a, "b", b)
    check_same_dim("a", a, "b", b)
    check_positive("logit_scale", logit_scale)
    dtype = compute_dtype(a, b)
    if not is_distributed():
        # One process holds the whole square: both directions from one matmul and one buffer.
        scale = logit_scale if isinstance(logit_scale, Tensor) else torch.tensor(float(logit_scale))
        return _SymmetricCrossEntropy.apply(a.to(dtype), b.to(dtype), scale.to(device=a.device, dtype=dtype))
    a, b = _unit(a, dtype), _unit(b, dtype)
    b_columns, start = _gather_columns(b)
    a_columns, _ = _gather_columns(a)
    positives = start + torch.arange(a.shape[0], device=a.device)
    return (
        cross_entropy_at_positives((a * logit_scale) @ b_columns.T, positives)
        + cross_entropy_at_positives((b * logit_scale) @ a_columns.T, positives)
    ) / 2


@float32_math
def supcon(features: Tensor, labels: Tensor, temperature: float | Tensor = 0.1) -> Tensor:
    """Supervised contrastive loss L_out (Khosla et al. 2020, arXiv:2004.11362, eq. 2).

    ``features`` [N, V, D]: V views of N samples, L2-normalised here (the paper's z on the unit
    sphere); ``labels`` [N] integer classes. Every one of the N * V (global) views is an anchor;
    its positives P(i) are all other views with its label (its own other views included), and its
    denominator runs over all views but itself. Per anchor ``-1/|P(i)| sum_p log softmax_p``; the
    result is the mean over anchors. Anchors with no positive (possible only with V = 1) are left
    out of the mean, as eq. 2 is undefined for them; if none has one the loss is 0. Unlike the
    authors' code, no ``temperature / base_temperature`` factor is applied: eq. 2 has none.
    """
    check_float("features", features, 3)
    check_labels("labels", labels, features.shape[0])
    check_positive("temperature", temperature)
    n, views, dim = features.shape
    anchors = _unit(features, compute_dtype(features)).reshape(n * views, dim)  # sample-major
    columns, start = _gather_columns(anchors)
    anchor_labels = labels.repeat_interleave(views)
    positive = anchor_labels[:, None] == gather_no_grad(anchor_labels)[None, :]
    own = start + torch.arange(n * views, device=anchors.device)
    positive[torch.arange(n * views, device=anchors.device), own] = False
    keep = positive.any(dim=1)
    anchors, positive, own = anchors[keep], positive[keep], own[keep]

    logits = (anchors / temperature) @ columns.T
    # Summed before self is set to -inf, where 0 * -inf would be NaN.
    positive_mean = torch.where(positive, logits, 0.0).sum(dim=1) / positive.sum(dim=1)
    _exclude_self(logits, own)
    return global_mean(logits.logsumexp(dim=1) - positive_mean)


@float32_math
def soft_nearest_neighbors(embeddings: Tensor, labels: Tensor, temperature: float | Tensor) -> Tensor:
    """Soft nearest neighbour loss (Frosst, Papernot & Hinton 2019, arXiv:1902.01889, eq. 1).

    ``embeddings`` [N, D] (not normalised), ``labels`` [N] integer classes. With squared Euclidean
    distances d_ij, the term of row i is
    ``-log( sum_{j != i, y_j = y_i} exp(-d_ij / T) / sum_{k != i} exp(-d_ik / T) )``, computed as a
    difference of log-sum-exps; the loss is the mean over rows (global batch).
    A row with no same-class partner has an empty numerator (its term is +inf in the paper's
    formula): such rows are left out of the mean, and if no row has a partner the loss is 0. (The
    authors' code instead adds 1e-5 inside the log, which makes each such row cost ~11.5 and
    carry no gradient from its numerator.)
    """
    check_float("embeddings", embeddings, 2)
    check_labels("labels", labels, embeddings.shape[0])
    check_positive("temperature", temperature)
    n = embeddings.shape[0]
    points = embeddings.to(compute_dtype(embeddings))
    columns, start = _gather_columns(points)
    same_class = labels[:, None] == gather_no_grad(labels)[None, :]
    own = start + torch.arange(n, device=points.device)
    same_class[torch.arange(n, device=points.device), own] = False
    keep = same_class.any(dim=1)
    points, same_class, own = points[keep], same_class[keep], own[keep]

    squared = (points.square().sum(1)[:, None] + columns.square().sum(1)[None, :] - 2 * points @ columns.T)
    logits = squared.clamp_min(0.0) / -temperature
    _exclude_self(logits, own)
    same_class_logits = logits.masked_fill(~same_class, float("-inf"))
    return global_mean(logits.logsumexp(dim=1) - same_class_logits.logsumexp(dim=1))


# --- pairwise sigmoid (SigLIP) and the spectral contrastive loss ---------------------------------


class _RowSoftplusSums(torch.autograd.Function):
    """``sum_j softplus(scale * rows_i . columns_j + bias)`` per row, block by block.

    Neither pass holds more than one ``[block, block]`` tile of logits: forward keeps only the
    inputs, backward recomputes each tile and turns it into ``sigmoid(z) * grad``, so memory grows
    with the batch (rows + columns), not with its square, at one extra matmul per tile.
    """

    @staticmethod
    def forward(ctx, rows: Tensor, columns: Tensor, scale: Tensor, bias: Tensor, block: int) -> Tensor:  # type: ignore[override]
        sums = rows.new_zeros(rows.shape[0])
        for i in range(0, rows.shape[0], block):
            for j in range(0, columns.shape[0], block):
                logits = rows[i : i + block] @ columns[j : j + block].T * scale + bias
                sums[i : i + block] += F.softplus(logits).sum(dim=1)
        ctx.save_for_backward(rows, columns, scale, bias)
        ctx.block = block
        return sums

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        rows, columns, scale, bias = ctx.saved_tensors
        block = ctx.block
        grad_rows, grad_columns = torch.zeros_like(rows), torch.zeros_like(columns)
        grad_scale, grad_bias = torch.zeros_like(scale), torch.zeros_like(bias)
        for i in range(0, rows.shape[0], block):
            for j in range(0, columns.shape[0], block):
                left, right = rows[i : i + block], columns[j : j + block]
                dots = left @ right.T
                weights = torch.sigmoid(dots * scale + bias).mul_(grad[i : i + block, None])  # d sums / d logits
                grad_scale += (weights * dots).sum()
                grad_bias += weights.sum()
                weights.mul_(scale)
                grad_rows[i : i + block] += weights @ right
                grad_columns[j : j + block] += weights.T @ left
        needs = ctx.needs_input_grad
        return (grad_rows if needs[0] else None, grad_columns if needs[1] else None,
                grad_scale if needs[2] else None, grad_bias if needs[3] else None, None)


@float32_math
def siglip_loss(a: Tensor, b: Tensor, logit_scale: float | Tensor, logit_bias: float | Tensor,
                block_size: int = 4096) -> Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai, Mustafa, Kolesnikov, Beyer 2023, arXiv:2303.15343,
    Algorithm 1).

    ``a`` [N, D], ``b`` [N, D]: paired embeddings of two modalities (row i of each is a pair),
    L2-normalised here. Every pair (i, j) of the (global) batch is a binary classification with
    logit ``z_ij = logit_scale * cos(a_i, b_j) + logit_bias`` and label ``+1`` when ``i = j``,
    ``-1`` otherwise::

        loss = -1/N sum_i sum_j log sigmoid(label_ij * z_ij)

    (a sum over the N columns, a mean over the N rows: the official code's normalisation, by the
    batch size). ``logit_scale`` is the multiplier ``t = exp(t')`` and ``logit_bias`` the bias
    ``b`` (floats or 0-d tensors, learnable or not; the paper starts at t = 10, b = -10).

    Memory: each rank scores its rows against the global columns (gathered with gradient) in
    ``block_size`` x ``block_size`` tiles, recomputed in the backward pass
    (:class:`_RowSoftplusSums`), so no [N, N] matrix is ever held. Under N processes the value and
    gradients are those of one process on the global batch (see :mod:`multissl.distributed`).
    """
    check_float("a", a, 2)
    check_float("b", b, 2)
    check_rows("a", a, "b", b)
    check_same_dim("a", a, "b", b)
    check_positive("logit_scale", logit_scale)
    if isinstance(logit_bias, Tensor):
        if logit_bias.dim() != 0 or not logit_bias.is_floating_point():
            raise ValueError(f"logit_bias must be a number or a 0-d floating tensor, got {logit_bias.dtype} "
                             f"{tuple(logit_bias.shape)}")
    elif isinstance(logit_bias, bool) or not isinstance(logit_bias, (int, float)):
        raise ValueError(f"logit_bias must be a number or a 0-d floating tensor, got {type(logit_bias).__name__}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    dtype = compute_dtype(a, b)
    a, b = _unit(a, dtype), _unit(b, dtype)
    scale = torch.as_tensor(logit_scale, device=a.device).to(dtype)
    bias = torch.as_tensor(logit_bias, device=a.device).to(dtype)
    columns, start = _gather_columns(b)
    # softplus(z) = -log sigmoid(-z) for every pair; the positive pair's term is
    # -log sigmoid(z) = softplus(z) - z, so subtract its logit once
    positive_logits = scale * (a * columns[start : start + a.shape[0]]).sum(dim=1) + bias
    return global_mean(_RowSoftplusSums.apply(a, columns, scale, bias, block_size) - positive_logits)


@float32_math
def spectral_contrastive(z1: Tensor, z2: Tensor, mu: float = 1.0) -> Tensor:
    """The spectral contrastive loss (HaoChen, Wei, Gaidon, Ma 2021, "Provable Guarantees for
    Self-Supervised Deep Learning with Spectral Contrastive Loss", arXiv:2106.04156):
    ``-2 E[f(x)^T f(x+)] + E[(f(x)^T f(x'))^2]``, as the official code estimates it on a batch.

    ``z1``, ``z2`` [N, D]: two views' projections, row i of each from the same sample. As the
    official code (github.com/jhaochenz96/spectral_contrastive_learning, ``D``), rows longer than
    ``sqrt(mu)`` are scaled back to norm ``sqrt(mu)`` (shorter ones are kept), and::

        loss = ( -2/N sum_i z1_i . z2_i  +  1/(N (N - 1)) sum_{i != j} (z1_i . z2_j)^2 ) / mu

    over the N rows of the global batch (the pairs i != j are the independent samples x, x' of the
    second expectation). Not normalised to the unit sphere and no temperature: the loss is a
    matrix factorisation of the augmentation graph's normalised adjacency.
    """
    check_float("z1", z1, 2)
    check_float("z2", z2, 2)
    check_rows("z1", z1, "z2", z2)
    check_same_dim("z1", z1, "z2", z2)
    check_positive("mu", mu)
    dtype = compute_dtype(z1, z2)
    radius = math.sqrt(mu)

    def clipped(z: Tensor) -> Tensor:
        z = z.to(dtype)
        norms = z.norm(dim=1, keepdim=True)
        return torch.where(norms < radius, z, F.normalize(z, dim=1) * radius)

    z1, z2 = clipped(z1), clipped(z2)
    columns, start = _gather_columns(z2)
    total = columns.shape[0]
    if total < 2:
        raise ValueError(f"spectral_contrastive needs at least 2 rows in the (global) batch, got {total}")
    squares = (z1 @ columns.T).square()
    own = torch.arange(z1.shape[0], device=z1.device)
    off_diagonal = squares.sum(dim=1) - squares[own, start + own]
    return global_mean(-2.0 * (z1 * z2).sum(dim=1) + off_diagonal / (total - 1)) / mu


# --- CPC ------------------------------------------------------------------------------------------


def _cpc_logits(
    predictions: Tensor, targets: Tensor, mask: Tensor | None, temperature: float | Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Scores of every counted prediction against every valid frame of the global batch.

    Returns ``logits`` [P, M], the column of each prediction's positive [P], and its step index
    k in ``0..K-1`` [P].
    """
    check_float("predictions", predictions, 4)
    check_float("targets", targets, 3)
    batch, steps, offsets, _ = predictions.shape
    if targets.shape[:2] != (batch, steps):
        raise ValueError(
            f"targets {tuple(targets.shape)} must be [B, T, D] for predictions {tuple(predictions.shape)} [B, T, K, D]"
        )
    check_same_dim("predictions", predictions, "targets", targets)
    if mask is not None:
        check_mask("mask", mask, (batch, steps))
    check_positive("temperature", temperature)
    device = predictions.device
    valid = torch.ones(batch, steps, dtype=torch.bool, device=device) if mask is None else mask

    # predictions[b, t, k] predicts targets[b, t + k + 1]; it counts when both frames are valid.
    target_time = torch.arange(steps, device=device)[:, None] + torch.arange(1, offsets + 1, device=device)
    in_range = target_time < steps
    target_time = target_time.clamp_max(steps - 1)
    counted = valid[:, :, None] & valid[:, target_time] & in_range

    # Candidates are the valid frames only, so padded values never enter the softmax.
    dtype = compute_dtype(predictions, targets)
    candidates, start = _gather_columns(targets[valid].to(dtype))
    frame_column = start + valid.flatten().cumsum(0).view(batch, steps) - 1
    positives = frame_column[:, target_time][counted]
    step = torch.arange(offsets, device=device).expand(batch, steps, offsets)[counted]
    logits = (predictions[counted].to(dtype) / temperature) @ candidates.T
    return logits, positives, step


@float32_math
def cpc(predictions: Tensor, targets: Tensor, mask: Tensor | None = None, temperature: float | Tensor = 1.0) -> Tensor:
    """Contrastive Predictive Coding loss (van den Oord et al. 2018, arXiv:1807.03748, eq. 4).

    ``predictions`` [B, T, K, D]: ``predictions[b, t, k] = W_{k+1} c_t``, the prediction made at
    time t of the frame k + 1 steps ahead; ``targets`` [B, T, D]: the encoded frames z. The score
    is the paper's log-bilinear ``z^T W_k c_t`` (a dot product, not normalised) divided by
    ``temperature``. A prediction's positive is z[b, t + k + 1]; its negatives are every other valid
    frame of every sequence of the global batch (all offsets share that candidate set).
    ``mask`` [B, T] bool, True where a frame is real: a prediction counts only when frames t and
    t + k + 1 are both valid, and padded frames are never candidates, so padded values (even NaN)
    change nothing. Returns the mean of ``-log softmax`` at the positive over the counted
    predictions of the global batch (0 if there are none).
    """
    logits, positives, _ = _cpc_logits(predictions, targets, mask, temperature)
    return cross_entropy_at_positives(logits, positives)


@torch.no_grad()
@float32_math
def cpc_accuracy(predictions: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Top-1 accuracy of each CPC offset over the global batch, for logging: float32 [K].

    Entry k is the fraction of counted predictions ``k + 1`` steps ahead (see :func:`cpc`) whose
    highest-scoring candidate is their positive; NaN where an offset has no counted prediction.
    """
    logits, positives, step = _cpc_logits(predictions, targets, mask, 1.0)
    offsets = predictions.shape[2]
    correct = torch.bincount(step, weights=(logits.argmax(dim=1) == positives).double(), minlength=offsets)
    counts = torch.bincount(step, minlength=offsets).double()
    totals = all_reduce_sum(torch.stack([correct, counts]))
    return (totals[0] / totals[1]).float()


@float32_math
def masked_frame_contrastive(context: Tensor, targets: Tensor, mask: Tensor, temperature: float = 0.1) -> Tensor:
    """wav2vec 2.0's contrastive task (Baevski et al. 2020, arXiv:2006.11477, eq. 3), every other
    masked frame of the same utterance a distractor.

    ``context``, ``targets`` [B, T, D]: c_t and the target q_t of each frame; ``mask`` Bool[B, T]:
    the masked frames. For each masked (b, t):
    ``-log( exp(cos(c_t, q_t)/k) / sum_{masked s of b} exp(cos(c_t, q_s)/k) )``, ``k`` the
    temperature (the paper's kappa, 0.1). Returns the mean over the masked frames of the global
    batch. Utterances are independent (no cross-utterance negatives), so nothing is gathered; the
    paper samples 100 distractors, this takes all of them (no sampling randomness, exact under
    DDP), at [T, T] scores per utterance.
    """
    if context.shape != targets.shape or mask.shape != context.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"context {tuple(context.shape)} and targets {tuple(targets.shape)} must match, and mask "
                         f"{tuple(mask.shape)} {mask.dtype} be Bool[B, T]")
    check_positive("temperature", temperature)
    dtype = compute_dtype(context, targets)
    context, targets = _unit(context, dtype), _unit(targets, dtype)
    logits = (context / temperature) @ targets.transpose(1, 2)  # [B, T (anchor), T (candidate)]
    logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
    positives = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return cross_entropy_at_positives(logits[mask], positives[mask])


@float32_math
def masked_cluster_prediction(predictions: Tensor, codewords: Tensor, targets: Tensor, mask: Tensor,
                              temperature: float | Tensor = 0.1) -> Tensor:
    """HuBERT's masked prediction of cluster ids (Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov, Mohamed
    2021, arXiv:2106.07447, section II), with the paper's cosine logits.

    ``predictions`` [B, T, P]: the projected encoder outputs ``A o_t``; ``codewords`` [C, P]: the
    embedding ``e_c`` of each of the C clusters; ``targets`` Long[B, T]: each frame's cluster id
    ``z_t``; ``mask`` Bool[B, T]: the frames that count (the masked ones for the paper's L_m). Per
    counted frame::

        p(c | t) = exp(cos(A o_t, e_c) / tau) / sum_c' exp(cos(A o_t, e_c') / tau)
        term     = -log p(z_t | t)

    Returns the mean over the counted frames of the global batch (0 when there are none). The
    codewords are shared parameters, not batch rows: nothing is gathered.
    """
    check_float("predictions", predictions, 3)
    check_float("codewords", codewords, 2)
    check_same_dim("predictions", predictions, "codewords", codewords)
    check_mask("mask", mask, tuple(predictions.shape[:2]))
    if not isinstance(targets, Tensor) or targets.is_floating_point() or targets.shape != mask.shape:
        got = f"{targets.dtype} {tuple(targets.shape)}" if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"targets must be an integer tensor of shape {tuple(mask.shape)}, got {got}")
    check_positive("temperature", temperature)
    chosen = targets[mask]
    if chosen.numel() and (chosen.min() < 0 or chosen.max() >= codewords.shape[0]):
        raise ValueError(f"targets must be cluster ids in [0, {codewords.shape[0]}) on the counted frames, "
                         f"got values from {int(chosen.min())} to {int(chosen.max())}")
    dtype = compute_dtype(predictions, codewords)
    logits = (_unit(predictions[mask], dtype) / temperature) @ _unit(codewords, dtype).T
    return cross_entropy_at_positives(logits, chosen)


def imix_info_nce(query: Tensor, key: Tensor, partner: Tensor, lam: Tensor,
                  temperature: float | Tensor = 0.2) -> Tensor:
    """i-Mix on the N-pair / InfoNCE loss (Lee, Zhu, Sohn, Li, Shin & Lee 2021, "i-Mix: A
    Domain-Agnostic Strategy for Contrastive Representation Learning", arXiv:2010.08887, sec. 3;
    the official ``builder.py``, method "npair").

    Each sample of the batch is its own class (a virtual label, one-hot over the batch). ``query``
    [N, D] embeds mixed inputs ``lam_i x_i + (1 - lam_i) x_partner(i)``; ``key`` [N, D] embeds the
    other, unmixed view of every sample; the query's virtual label mixes the same way,
    ``lam_i e_i + (1 - lam_i) e_partner(i)``. With ``p_i = softmax_j(cos(q_i, k_j) / tau)`` over
    every key of the (global) batch, the loss is the cross-entropy with the mixed label,

        l_i = -lam_i log p_i[i] - (1 - lam_i) log p_i[partner(i)]

    averaged over the global batch (the code's ``lam * CE(logits, i) + (1 - lam) * CE(logits,
    partner)``). ``partner`` Long[N] indexes this rank's rows (the views mix within a process's
    batch), ``lam`` Float[N] in [0, 1]. The official code scores each GPU's queries against its own
    keys only; here the keys of every process are candidates, as in every InfoNCE of the toolkit.
    """
    check_float("query", query, 2)
    check_float("key", key, 2)
    check_rows("query", query, "key", key)
    check_same_dim("query", query, "key", key)
    check_labels("partner", partner, query.shape[0])
    if lam.shape != (query.shape[0],) or not lam.is_floating_point():
        raise ValueError(f"lam must be a floating tensor of shape ({query.shape[0]},), got {lam.dtype} {tuple(lam.shape)}")
    check_positive("temperature", temperature)
    dtype = compute_dtype(query, key)
    keys, start = _gather_columns(_unit(key, dtype))
    log_probabilities = torch.log_softmax((_unit(query, dtype) / temperature) @ keys.T, dim=1)
    rows = torch.arange(query.shape[0], device=query.device)
    own = log_probabilities[rows, start + rows]
    mixed_in = log_probabilities[rows, start + partner]
    lam = lam.to(dtype)
    return global_mean(-(lam * own + (1 - lam) * mixed_in))
