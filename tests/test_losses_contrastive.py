"""The contrastive losses against naive loops written from each paper's formula, plus properties.

The naive references below share no code with multissl.losses: python loops over anchors and
candidates, cosine / exp / log written out, float64 scalars. Autograd through them gives reference
gradients too.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from multissl.losses import (clip_loss, cpc, cpc_accuracy, info_nce, masked_cluster_prediction, nt_xent, siglip_loss,
                             soft_nearest_neighbors, spectral_contrastive, supcon)

TOL = dict(rtol=1e-5, atol=1e-5)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


# --- naive references -----------------------------------------------------------------------------


def dot(u, v):
    return sum(u[d] * v[d] for d in range(len(u)))


def cosine(u, v):
    return dot(u, v) / (torch.sqrt(dot(u, u)) * torch.sqrt(dot(v, v)))


def naive_info_nce(q, k, negatives, tau):
    candidates = list(k) + (list(negatives) if negatives is not None else [])
    total = 0.0
    for i in range(len(q)):
        numerator = torch.exp(cosine(q[i], k[i]) / tau)
        denominator = sum(torch.exp(cosine(q[i], c) / tau) for c in candidates)
        total = total - torch.log(numerator / denominator)
    return total / len(q)


def naive_nt_xent(z1, z2, tau):
    # Algorithm 1 of SimCLR: z_{2k-1}, z_{2k} are the two views of example k (0-based here).
    z = []
    for k in range(len(z1)):
        z += [z1[k], z2[k]]

    def pair_loss(i, j):
        denominator = sum(torch.exp(cosine(z[i], z[m]) / tau) for m in range(len(z)) if m != i)
        return -torch.log(torch.exp(cosine(z[i], z[j]) / tau) / denominator)

    total = sum(pair_loss(2 * k, 2 * k + 1) + pair_loss(2 * k + 1, 2 * k) for k in range(len(z1)))
    return total / (2 * len(z1))


def naive_clip(a, b, scale):
    n = len(a)
    logit = [[scale * cosine(a[i], b[j]) for j in range(n)] for i in range(n)]
    a_to_b = sum(-torch.log(torch.exp(logit[i][i]) / sum(torch.exp(logit[i][j]) for j in range(n))) for i in range(n))
    b_to_a = sum(-torch.log(torch.exp(logit[j][j]) / sum(torch.exp(logit[i][j]) for i in range(n))) for j in range(n))
    return (a_to_b / n + b_to_a / n) / 2


def naive_supcon(features, labels, tau):
    # Khosla et al. eq. 2 (L_out) with z on the unit sphere.
    z, y = [], []
    for i in range(features.shape[0]):
        for v in range(features.shape[1]):
            norm = torch.sqrt(dot(features[i, v], features[i, v]))
            z.append(features[i, v] / norm)
            y.append(int(labels[i]))
    terms = []
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and y[p] == y[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(dot(z[i], z[a]) / tau) for a in range(len(z)) if a != i)
        log_probabilities = [torch.log(torch.exp(dot(z[i], z[p]) / tau) / denominator) for p in positives]
        terms.append(-sum(log_probabilities) / len(positives))
    return sum(terms) / len(terms)


def naive_soft_nearest_neighbors(x, labels, temperature):
    def squared_distance(u, v):
        return sum((u[d] - v[d]) ** 2 for d in range(len(u)))

    terms = []
    for i in range(len(x)):
        same = [j for j in range(len(x)) if j != i and labels[j] == labels[i]]
        if not same:
            continue
        numerator = sum(torch.exp(-squared_distance(x[i], x[j]) / temperature) for j in same)
        denominator = sum(torch.exp(-squared_distance(x[i], x[k]) / temperature) for k in range(len(x)) if k != i)
        terms.append(-torch.log(numerator / denominator))
    return sum(terms) / len(terms)


def naive_cpc(predictions, targets, mask, tau):
    batch, steps, offsets, _ = predictions.shape
    valid = [[mask is None or bool(mask[b, t]) for t in range(steps)] for b in range(batch)]
    candidates = [(b, t) for b in range(batch) for t in range(steps) if valid[b][t]]
    terms = []
    for b in range(batch):
        for t in range(steps):
            for k in range(offsets):
                future = t + k + 1
                if future >= steps or not valid[b][t] or not valid[b][future]:
                    continue
                c = predictions[b, t, k]
                numerator = torch.exp(dot(targets[b, future], c) / tau)
                denominator = sum(torch.exp(dot(targets[bb, tt], c) / tau) for bb, tt in candidates)
                terms.append(-torch.log(numerator / denominator))
    return sum(terms) / len(terms)


def naive_cpc_accuracy(predictions, targets, mask):
    batch, steps, offsets, _ = predictions.shape
    valid = [[mask is None or bool(mask[b, t]) for t in range(steps)] for b in range(batch)]
    candidates = [(b, t) for b in range(batch) for t in range(steps) if valid[b][t]]
    hits, counts = [0] * offsets, [0] * offsets
    for b in range(batch):
        for t in range(steps):
            for k in range(offsets):
                future = t + k + 1
                if future >= steps or not valid[b][t] or not valid[b][future]:
                    continue
                scores = [float(dot(targets[bb, tt], predictions[b, t, k])) for bb, tt in candidates]
                best = candidates[max(range(len(scores)), key=scores.__getitem__)]
                hits[k] += best == (b, future)
                counts[k] += 1
    return [h / c if c else float("nan") for h, c in zip(hits, counts)]


def debiased_negative_mass(positive, negatives, tau, tau_plus, beta):
    """Robinson et al. 2021's estimator of N E[exp(s-)] (Chuang et al. 2020's at beta = 0), from the
    papers' formula: importance weights exp(beta s) normalised to mean 1, the class prior's share of
    the positive removed, clamped at N exp(-1/t). ``positive``/``negatives``: exp(cos / t) values."""
    n = len(negatives)
    weights = [torch.pow(value, beta) for value in negatives]  # exp(beta * cos / t), as the official code
    reweighted = sum(w * value for w, value in zip(weights, negatives)) / (sum(weights) / n)
    estimate = (reweighted - tau_plus * n * positive) / (1 - tau_plus)
    return torch.maximum(estimate, torch.tensor(n * math.exp(-1 / tau), dtype=estimate.dtype))


def naive_hard_info_nce(q, k, negatives, query_negatives, tau, tau_plus, beta):
    total = 0.0
    for i in range(len(q)):
        candidates = [k[j] for j in range(len(k)) if j != i] + (list(negatives) if negatives is not None else [])
        candidates += list(query_negatives[i]) if query_negatives is not None else []
        positive = torch.exp(cosine(q[i], k[i]) / tau)
        mass = debiased_negative_mass(positive, [torch.exp(cosine(q[i], c) / tau) for c in candidates], tau,
                                      tau_plus, beta)
        total = total - torch.log(positive / (positive + mass))
    return total / len(q)


def naive_hard_nt_xent(z1, z2, tau, tau_plus, beta):
    z = list(z1) + list(z2)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        positive = torch.exp(cosine(z[i], z[partner]) / tau)
        negatives = [torch.exp(cosine(z[i], z[m]) / tau) for m in range(2 * n) if m not in (i, partner)]
        total = total - torch.log(positive / (positive + debiased_negative_mass(positive, negatives, tau, tau_plus, beta)))
    return total / (2 * n)


def naive_siglip(a, b, scale, bias):
    # Algorithm 1 of Zhai et al. 2023: -1/N sum_ij log sigmoid(label_ij (t cos_ij + b))
    n = len(a)
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if i == j else -1.0
            logit = scale * cosine(a[i], b[j]) + bias
            total = total - torch.log(1 / (1 + torch.exp(-label * logit)))
    return total / n


def naive_spectral(z1, z2, mu):
    # HaoChen et al. 2021: -2 E[z.z+] + E[(z.z')^2] over pairs i != j, norms clipped at sqrt(mu)
    def clip(z):
        norm = torch.sqrt(dot(z, z))
        return z if norm < math.sqrt(mu) else z / norm * math.sqrt(mu)

    z1, z2 = [clip(z) for z in z1], [clip(z) for z in z2]
    n = len(z1)
    attract = sum(dot(z1[i], z2[i]) for i in range(n)) / n
    repel = sum(dot(z1[i], z2[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return (-2 * attract + repel) / mu


def naive_masked_cluster_prediction(predictions, codewords, targets, mask, tau):
    # HuBERT: -log softmax_c(cos(A o_t, e_c) / tau) at the frame's unit, mean over masked frames
    terms = []
    for b in range(predictions.shape[0]):
        for t in range(predictions.shape[1]):
            if not mask[b, t]:
                continue
            scores = [torch.exp(cosine(predictions[b, t], e) / tau) for e in codewords]
            terms.append(-torch.log(scores[int(targets[b, t])] / sum(scores)))
    return sum(terms) / len(terms)


def check_against_naive(loss_fn, naive_fn, inputs: dict, differentiable: list[str]):
    """Value and gradients of ``loss_fn`` equal the naive reference's on float64 leaves."""
    ours = {k: leaf(v) if k in differentiable else v for k, v in inputs.items()}
    theirs = {k: leaf(v) if k in differentiable else v for k, v in inputs.items()}
    value = loss_fn(**ours)
    expected = naive_fn(**theirs)
    torch.testing.assert_close(value, expected.to(value.dtype), **TOL)
    value.backward()
    expected.backward()
    for name in differentiable:
        torch.testing.assert_close(ours[name].grad, theirs[name].grad, **TOL, msg=f"gradient of {name}")


# --- equality with the papers' formulas -----------------------------------------------------------


@pytest.mark.parametrize("with_queue", [False, True])
def test_info_nce_matches_formula(with_queue):
    inputs = dict(query=randn(5, 4, seed=1), key=randn(5, 4, seed=2), temperature=0.3)
    inputs["negatives"] = randn(7, 4, seed=3) if with_queue else None
    check_against_naive(
        info_nce, lambda query, key, negatives, temperature: naive_info_nce(query, key, negatives, temperature),
        inputs, ["query", "key"],
    )


def test_nt_xent_matches_algorithm_1_with_a_learnable_temperature():
    check_against_naive(
        nt_xent, lambda z1, z2, temperature: naive_nt_xent(z1, z2, temperature),
        dict(z1=randn(5, 4, seed=1), z2=randn(5, 4, seed=2), temperature=torch.tensor(0.5, dtype=torch.float64)),
        ["z1", "z2", "temperature"],
    )


def test_reusing_the_graph_raises_instead_of_returning_wrong_gradients():
    # The kernel turns its logits into the gradient in place: a second pass must fail loudly.
    x = leaf(randn(4, 3))
    loss = info_nce(x, randn(4, 3, seed=1))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError):
        loss.backward()
    with pytest.raises(RuntimeError):
        (grad,) = torch.autograd.grad(nt_xent(x, randn(4, 3, seed=1)), x, create_graph=True)
        grad.sum().backward()


@pytest.mark.parametrize("tau_plus, beta", [(0.1, 0.0), (0.0, 1.0), (0.1, 0.5), (0.3, 2.0)])
@pytest.mark.parametrize("extra", ["none", "queue", "queue+per_query"])
def test_info_nce_hard_negatives_match_the_papers_estimator(tau_plus, beta, extra):
    inputs = dict(query=randn(5, 4, seed=1), key=randn(5, 4, seed=2), temperature=0.3, tau_plus=tau_plus, beta=beta)
    inputs["negatives"] = randn(7, 4, seed=3) if extra != "none" else None
    inputs["query_negatives"] = randn(5, 3, 4, seed=4) if extra == "queue+per_query" else None
    check_against_naive(
        info_nce,
        lambda query, key, negatives, query_negatives, temperature, tau_plus, beta: naive_hard_info_nce(
            query, key, negatives, query_negatives, temperature, tau_plus, beta),
        inputs, ["query", "key"] + (["query_negatives"] if extra == "queue+per_query" else []),
    )


@pytest.mark.parametrize("tau_plus, beta", [(0.1, 0.0), (0.0, 1.0), (0.1, 1.0)])
def test_nt_xent_hard_negatives_match_the_papers_estimator(tau_plus, beta):
    check_against_naive(
        nt_xent, lambda z1, z2, temperature, tau_plus, beta: naive_hard_nt_xent(z1, z2, temperature, tau_plus, beta),
        dict(z1=randn(5, 4, seed=1), z2=randn(5, 4, seed=2), temperature=0.5, tau_plus=tau_plus, beta=beta),
        ["z1", "z2"],
    )


def test_hard_negative_estimator_limits():
    q, k, queue = randn(6, 4, seed=1), randn(6, 4, seed=2), randn(9, 4, seed=3)
    # tau+ -> 0 and beta -> 0 is plain InfoNCE; the clamp binds when tau+ removes more than the negatives hold
    torch.testing.assert_close(info_nce(q, k, queue, 0.2, tau_plus=1e-12, beta=1e-12), info_nce(q, k, queue, 0.2))
    torch.testing.assert_close(nt_xent(q, k, 0.5, beta=1e-12), nt_xent(q, k, 0.5))
    z = one_hot_rows(4, 8)  # every positive at 1/t, every negative at 0
    tau, n = 0.5, 3
    floor = math.log(1 + n * math.exp(-1 / tau) / math.exp(1 / tau))
    assert_value(info_nce(z, z, None, tau, tau_plus=0.9), floor)  # (3 - 0.9*3*e^2) / 0.1 < 0: clamped
    # per-query negatives equal to the positive count as negatives: one more term at 1/t
    same = z[:, None, :].clone()
    assert_value(info_nce(z, z, None, tau, query_negatives=same), math.log(2 + n * math.exp(-1 / tau)))


def test_siglip_loss_matches_algorithm_1_in_any_tiling():
    inputs = dict(a=randn(7, 4, seed=1), b=randn(7, 4, seed=2), logit_scale=torch.tensor(3.0, dtype=torch.float64),
                  logit_bias=torch.tensor(-2.0, dtype=torch.float64))
    for block in (1, 3, 7, 100):
        check_against_naive(
            lambda **kw: siglip_loss(**kw, block_size=block), lambda a, b, logit_scale, logit_bias: naive_siglip(
                a, b, logit_scale, logit_bias), inputs, ["a", "b", "logit_scale", "logit_bias"])
    torch.testing.assert_close(siglip_loss(inputs["a"], inputs["b"], 10.0, -10.0),
                               naive_siglip(inputs["a"], inputs["b"], 10.0, -10.0), **TOL)


def test_siglip_loss_keeps_nothing_quadratic_in_the_batch_for_backward():
    """Tiles are recomputed in backward: what autograd saves grows with N, not N^2."""
    n, dim, block = 512, 8, 64
    a, b = leaf(randn(n, dim, seed=1).float()), leaf(randn(n, dim, seed=2).float())
    scale, bias = leaf(torch.tensor(10.0)), leaf(torch.tensor(-10.0))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        loss = siglip_loss(a, b, scale, bias, block_size=block)
    loss.backward()
    assert saved and max(saved) <= n * dim, sorted(saved)[-3:]
    torch.testing.assert_close(loss.double(), naive_siglip_matrix(a.double(), b.double(), 10.0, -10.0), **TOL)


def naive_siglip_matrix(a, b, scale, bias):
    """Algorithm 1 with the whole N x N matrix (a larger check than the loops afford)."""
    logits = scale * torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T + bias
    labels = 2 * torch.eye(len(a), dtype=a.dtype) - 1
    return -torch.nn.functional.logsigmoid(labels * logits).sum(dim=1).mean()


def test_spectral_contrastive_matches_the_official_estimate():
    z1, z2 = randn(6, 5, seed=1), randn(6, 5, seed=2)
    z1[0] *= 0.1  # one row inside the sqrt(mu) ball: kept as it is
    for mu in (1.0, 10.0):
        check_against_naive(spectral_contrastive, lambda z1, z2, mu: naive_spectral(z1, z2, mu),
                            dict(z1=z1, z2=z2, mu=mu), ["z1", "z2"])
    with pytest.raises(ValueError, match="at least 2 rows"):
        spectral_contrastive(z1[:1], z2[:1])


def test_masked_cluster_prediction_matches_hubert_formula():
    predictions, codewords = randn(3, 5, 4, seed=1), randn(6, 4, seed=2)
    targets = torch.randint(0, 6, (3, 5), generator=torch.Generator().manual_seed(3))
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(4)) > 0.5
    check_against_naive(
        masked_cluster_prediction,
        lambda predictions, codewords, targets, mask, temperature: naive_masked_cluster_prediction(
            predictions, codewords, targets, mask, temperature),
        dict(predictions=predictions, codewords=codewords, targets=targets, mask=mask, temperature=0.1),
        ["predictions", "codewords"],
    )
    targets[0, 0], mask[0, 0] = 6, True
    with pytest.raises(ValueError, match=r"cluster ids in \[0, 6\)"):
        masked_cluster_prediction(predictions, codewords, targets, mask)


def test_clip_loss_matches_formula_and_learns_its_scale():
    inputs = dict(a=randn(5, 4, seed=1), b=randn(5, 4, seed=2), logit_scale=torch.tensor(3.0, dtype=torch.float64))
    check_against_naive(
        clip_loss, lambda a, b, logit_scale: naive_clip(a, b, logit_scale), inputs, ["a", "b", "logit_scale"]
    )
    plain = clip_loss(inputs["a"], inputs["b"], 3.0)
    torch.testing.assert_close(plain, naive_clip(inputs["a"], inputs["b"], 3.0), **TOL)


@pytest.mark.parametrize("scale", [1.0, 14.3, 39.0, 41.0, 100.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_loss_fused_kernel_equals_two_cross_entropies(scale, dtype):
    """The one-process kernel (one shift below 2s = 80, row and column shifts above) against
    F.cross_entropy in both directions, value and gradients (the scale's too), on a batch with
    nearly opposite rows, where a single shift would underflow at large scales."""
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(64, 16, generator=generator, dtype=dtype)
    b = torch.randn(64, 16, generator=generator, dtype=dtype)
    b[:8] = -a[:8]  # cosine -1 with their positives
    ours = [a.clone().requires_grad_(), b.clone().requires_grad_(), torch.tensor(scale, dtype=dtype, requires_grad=True)]
    theirs = [t.detach().clone().requires_grad_() for t in ours]
    value = clip_loss(*ours)
    x, y = F.normalize(theirs[0], dim=1), F.normalize(theirs[1], dim=1)
    logits = theirs[2] * x @ y.T
    target = torch.arange(64)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(value, expected, **tolerance)
    value.backward()
    expected.backward()
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine.grad, reference.grad, **tolerance)


@pytest.mark.parametrize("views", [1, 2, 3])
def test_supcon_matches_eq_2(views):
    labels = torch.tensor([0, 1, 0, 2, 1, 3])  # class 3 has one sample: no positive when views == 1
    check_against_naive(
        supcon, lambda features, labels, temperature: naive_supcon(features, labels, temperature),
        dict(features=randn(6, views, 4, seed=1), labels=labels, temperature=0.2), ["features"],
    )


def test_soft_nearest_neighbors_matches_formula_and_skips_rows_without_partner():
    labels = torch.tensor([0, 1, 0, 2, 1, 1])  # row 3 is alone in its class
    check_against_naive(
        soft_nearest_neighbors,
        lambda embeddings, labels, temperature: naive_soft_nearest_neighbors(embeddings, labels, temperature),
        dict(embeddings=randn(6, 3, seed=1), labels=labels, temperature=2.0), ["embeddings"],
    )
    # Every row alone in its class: nothing to average, the loss is 0 and the gradient 0 (not NaN).
    x = leaf(randn(4, 3))
    loss = soft_nearest_neighbors(x, torch.arange(4), 1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("with_mask", [False, True])
def test_cpc_matches_eq_4(with_mask):
    predictions, targets = randn(3, 5, 2, 4, seed=1), randn(3, 5, 4, seed=2)
    mask = None
    if with_mask:
        mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    check_against_naive(
        cpc, lambda predictions, targets, mask, temperature: naive_cpc(predictions, targets, mask, temperature),
        dict(predictions=predictions, targets=targets, mask=mask, temperature=0.7), ["predictions", "targets"],
    )


def test_cpc_accuracy_matches_formula():
    predictions, targets = randn(3, 6, 3, 4, seed=1), randn(3, 6, 4, seed=2)
    predictions[1, :, 0] = targets[1].roll(-1, 0) * 5  # one sequence predicts its next frame well
    mask = torch.tensor([[1] * 6, [1] * 5 + [0], [1] * 2 + [0] * 4], dtype=torch.bool)
    expected = torch.tensor(naive_cpc_accuracy(predictions, targets, mask), dtype=torch.float32)
    torch.testing.assert_close(cpc_accuracy(predictions, targets, mask), expected, equal_nan=True)


# --- properties -----------------------------------------------------------------------------------


def test_consistent_permutation_of_the_batch_changes_nothing():
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(5))
    x, y, queue = randn(6, 4, seed=1), randn(6, 4, seed=2), randn(9, 4, seed=3)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    views = randn(6, 2, 4, seed=4)
    cases = [
        (lambda p: info_nce(x[p], y[p], queue[torch.randperm(9)], 0.2)),
        (lambda p: nt_xent(x[p], y[p], 0.5)),
        (lambda p: clip_loss(x[p], y[p], 4.0)),
        (lambda p: supcon(views[p], labels[p], 0.3)),
        (lambda p: soft_nearest_neighbors(x[p], labels[p], 1.5)),
        (lambda p: siglip_loss(x[p], y[p], 4.0, -1.0, block_size=4)),
        (lambda p: spectral_contrastive(x[p], y[p])),
        (lambda p: nt_xent(x[p], y[p], 0.5, tau_plus=0.1, beta=1.0)),
    ]
    identity = torch.arange(6)
    for case in cases:
        torch.testing.assert_close(case(perm), case(identity), **TOL)
    predictions, targets = randn(4, 5, 2, 3, seed=6), randn(4, 5, 3, seed=7)
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(8)) > 0.2
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(
        cpc(predictions[perm], targets[perm], mask[perm]), cpc(predictions, targets, mask), **TOL
    )


def one_hot_rows(n: int, dim: int) -> torch.Tensor:
    return torch.eye(dim, dtype=torch.float64)[:n]


def assert_value(loss: torch.Tensor, expected: float) -> None:
    torch.testing.assert_close(loss.double(), torch.tensor(expected, dtype=torch.float64))


def test_perfect_alignment_reaches_the_analytical_value():
    # Orthonormal items, each exactly aligned with its positive: positives score 1/tau, negatives 0.
    n, tau = 5, 0.2
    e = math.exp(-1 / tau)
    z = one_hot_rows(n, 8)
    assert_value(info_nce(z, z, None, tau), math.log(1 + (n - 1) * e))
    queue = torch.eye(8, dtype=torch.float64)[n:]  # 3 more orthogonal negatives
    assert_value(info_nce(z, z, queue, tau), math.log(1 + (n + 2) * e))
    assert_value(nt_xent(z, z, tau), math.log(1 + 2 * (n - 1) * e))
    assert_value(clip_loss(z, z, 1 / tau), math.log(1 + (n - 1) * e))
    # SupCon: 3 classes x 2 samples x 2 views, each class one direction: every anchor has 3 positives
    # at 1/tau and 8 negatives at 0, so L_out = log(3 + 8 e^{-1/tau}) (its minimum is log |P| = log 3).
    features = torch.eye(3, dtype=torch.float64).repeat_interleave(2, 0)[:, None, :].expand(6, 2, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert_value(supcon(features, labels, tau), math.log(3 + 8 * e))
    # Soft nearest neighbours: same-class points coincide, classes sit sqrt(2) * s apart.
    s, temperature = 2.0, 1.0
    assert_value(
        soft_nearest_neighbors(features[:, 0] * s, labels, temperature),
        math.log(1 + 4 * math.exp(-2 * s * s / temperature)),
    )
    # CPC: 6 distinct orthonormal frames, every prediction a scaled copy of its target.
    targets = torch.eye(6, dtype=torch.float64).view(2, 3, 6)
    predictions = torch.zeros(2, 3, 1, 6, dtype=torch.float64)
    predictions[:, :2, 0] = 4.0 * targets[:, 1:]
    assert_value(cpc(predictions, targets), math.log(1 + 5 * math.exp(-4.0)))
    # And at low temperature the minimum is near 0.
    assert info_nce(z, z, None, 0.01).item() < 1e-30 and nt_xent(z, z, 0.01).item() < 1e-30


def _mi_bound_gaps(dependent: bool, seeds: int = 200, n: int = 16, dim: int = 32) -> torch.Tensor:
    """log(N) - info_nce over independent draws: one value per seed (rows within a draw share keys)."""
    gaps = []
    for seed in range(seeds):
        query = randn(n, dim, seed=2 * seed)
        key = query + 0.3 * randn(n, dim, seed=2 * seed + 1) if dependent else randn(n, dim, seed=2 * seed + 1)
        gaps.append(math.log(n) - info_nce(query, key, None, 0.1).item())
    return torch.tensor(gaps, dtype=torch.float64)


def test_mutual_information_bound_is_not_positive_for_independent_embeddings():
    # With keys independent of queries the positive is exchangeable with the N - 1 negatives, so
    # E[softmax at the positive] = 1/N and, by Jensen, E[log N - L] <= 0 exactly. The draws are
    # independent, so their mean is ~normal with standard error std / sqrt(S): the bound holds when
    # the mean is below 3 standard errors (a false alarm has probability ~0.1%).
    gaps = _mi_bound_gaps(dependent=False)
    standard_error = gaps.std() / math.sqrt(len(gaps))
    assert gaps.mean() <= 3 * standard_error, (gaps.mean(), standard_error)
    # The same statistic does see dependence: it is clearly positive when keys are noisy queries.
    gaps = _mi_bound_gaps(dependent=True, seeds=20)
    assert gaps.mean() > 3 * gaps.std() / math.sqrt(len(gaps)) and gaps.mean() > 0.5 * math.log(16)


def test_cpc_padding_with_garbage_changes_nothing():
    predictions, targets = randn(2, 6, 3, 4, seed=1), randn(2, 6, 4, seed=2)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    clean_p, clean_t = leaf(predictions), leaf(targets)
    clean = cpc(clean_p, clean_t, mask)
    clean.backward()
    garbage_p, garbage_t = predictions.clone(), targets.clone()
    garbage_p[1, 4:] = float("nan")
    garbage_t[1, 4:] = 1e30
    garbage_p, garbage_t = leaf(garbage_p), leaf(garbage_t)
    dirty = cpc(garbage_p, garbage_t, mask)
    dirty.backward()
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    torch.testing.assert_close(garbage_p.grad, clean_p.grad, rtol=0, atol=0)
    torch.testing.assert_close(garbage_t.grad, clean_t.grad, rtol=0, atol=0)
    assert torch.all(garbage_p.grad[1, 4:] == 0) and torch.all(garbage_t.grad[1, 4:] == 0)
    # A full mask is the same as no mask, and predictions from valid frames into padding are dropped:
    # the short sequence cut to its 4 valid frames, beside the long one, gives the same loss.
    torch.testing.assert_close(cpc(predictions, targets, torch.ones(2, 6, dtype=torch.bool)), cpc(predictions, targets))
    torch.testing.assert_close(clean.double(), naive_cpc(predictions, targets, mask, 1.0))


def test_bf16_inputs_compute_in_float32():
    x, y = torch.randn(8, 16).bfloat16(), torch.randn(8, 16).bfloat16()
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 3, 3])
    pairs = [
        (lambda a, b: info_nce(a, b, b[:4], 0.1)),
        (lambda a, b: nt_xent(a, b)),
        (lambda a, b: clip_loss(a, b, 10.0)),
        (lambda a, b: supcon(torch.stack([a, b], 1), labels)),
        (lambda a, b: soft_nearest_neighbors(a, labels, 4.0)),
        (lambda a, b: cpc(a.view(2, 4, 1, 16), b.view(2, 4, 16))),
        (lambda a, b: siglip_loss(a, b, 10.0, -10.0)),
        (lambda a, b: spectral_contrastive(a, b)),
        (lambda a, b: info_nce(a, b, b[:4], 0.1, tau_plus=0.1, beta=1.0)),
    ]
    for loss in pairs:
        low = loss(x, y)
        assert low.dtype == torch.float32
        torch.testing.assert_close(low, loss(x.float(), y.float()))
    x = leaf(x)
    nt_xent(x, y).backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()


def test_autocast_does_not_lower_the_precision_inside():
    x, y = torch.randn(8, 16), torch.randn(8, 16)
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 3, 3])
    losses = [
        (lambda: info_nce(x, y, y[:4], 0.1)),
        (lambda: nt_xent(x, y)),
        (lambda: clip_loss(x, y, 10.0)),
        (lambda: supcon(torch.stack([x, y], 1), labels)),
        (lambda: soft_nearest_neighbors(x, labels, 4.0)),
        (lambda: cpc(x.view(2, 4, 1, 16), y.view(2, 4, 16))),
    ]
    for loss in losses:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = loss()
        assert inside.dtype == torch.float32
        torch.testing.assert_close(inside, loss(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: info_nce(torch.randn(4, 8, 2), torch.randn(4, 8)), ["query", "2-D", "(4, 8, 2)"]),
        (lambda: info_nce(torch.randn(4, 8), torch.randn(5, 8)), ["query", "key", "batch size", "(5, 8)"]),
        (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 7)), ["query", "key", "feature dimension"]),
        (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), torch.randn(9, 6)), ["negatives", "(9, 6)"]),
        (lambda: info_nce(torch.randn(4, 8), torch.randint(0, 3, (4, 8))), ["key", "floating point", "int64"]),
        (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), temperature=0.0), ["temperature", "positive"]),
        (lambda: nt_xent(torch.randn(4, 8), torch.randn(3, 8)), ["z1", "z2", "batch size"]),
        (lambda: nt_xent(torch.randn(4), torch.randn(4)), ["z1", "2-D", "(4,)"]),
        (lambda: clip_loss(torch.randn(4, 8), torch.randn(4, 6), 10.0), ["a", "b", "(4, 6)"]),
        (lambda: clip_loss(torch.randn(4, 8), torch.randn(4, 8), torch.ones(2)), ["logit_scale", "0-d"]),
        (lambda: supcon(torch.randn(4, 8), torch.arange(4)), ["features", "3-D", "(4, 8)"]),
        (lambda: supcon(torch.randn(4, 2, 8), torch.arange(5)), ["labels", "(4,)", "(5,)"]),
        (lambda: supcon(torch.randn(4, 2, 8), torch.ones(4)), ["labels", "integer", "float32"]),
        (lambda: soft_nearest_neighbors(torch.randn(4, 8), torch.arange(3), 1.0), ["labels", "(4,)"]),
        (lambda: soft_nearest_neighbors(torch.randn(4, 8), torch.arange(4), -1.0), ["temperature", "-1.0"]),
        (lambda: cpc(torch.randn(2, 5, 3, 8), torch.randn(2, 4, 8)), ["targets", "(2, 4, 8)", "predictions"]),
        (lambda: cpc(torch.randn(2, 5, 8), torch.randn(2, 5, 8)), ["predictions", "4-D", "(2, 5, 8)"]),
        (lambda: cpc(torch.randn(2, 5, 3, 8), torch.randn(2, 5, 6)), ["predictions", "targets", "feature"]),
        (lambda: cpc(torch.randn(2, 5, 3, 8), torch.randn(2, 5, 8), torch.ones(2, 5)), ["mask", "bool", "(2, 5)"]),
        (lambda: cpc(torch.randn(2, 5, 3, 8), torch.randn(2, 5, 8), torch.ones(2, 4).bool()), ["mask", "(2, 4)"]),
        (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), tau_plus=1.0), ["tau_plus", "[0, 1)"]),
        (lambda: nt_xent(torch.randn(4, 8), torch.randn(4, 8), beta=-1.0), ["beta", ">= 0"]),
        (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), normalize=False, tau_plus=0.1), ["tau_plus", "bound"]),
        (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), query_negatives=torch.randn(3, 2, 8)),
         ["query_negatives", "batch size"]),
        (lambda: siglip_loss(torch.randn(4, 8), torch.randn(4, 8), 10.0, torch.ones(2)), ["logit_bias", "0-d"]),
        (lambda: siglip_loss(torch.randn(4, 8), torch.randn(4, 8), 10.0, -10.0, block_size=0), ["block_size"]),
        (lambda: spectral_contrastive(torch.randn(4, 8), torch.randn(4, 6)), ["z1", "z2", "feature"]),
        (lambda: masked_cluster_prediction(torch.randn(2, 5, 8), torch.randn(3, 8), torch.zeros(2, 5),
                                           torch.ones(2, 5).bool()), ["targets", "integer"]),
    ],
)
def test_bad_input_errors_name_the_argument(call, words):
    with pytest.raises(ValueError) as error:
        call()
    for word in words:
        assert word in str(error.value), (word, str(error.value))
