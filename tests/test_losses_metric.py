"""DrLIM contrastive pairs, triplet, N-pair, lifted structured and NCE against loops over the papers' formulas."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from multissl.losses import contrastive_pair, lifted_structured, n_pair, nce, triplet


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(value: torch.Tensor, expected: float, tol: float = 1e-5) -> None:
    assert value.dim() == 0
    got = float(value.detach())
    assert math.isclose(got, expected, rel_tol=tol, abs_tol=tol), (got, expected)


# --- naive references: python loops over the formulas, nothing shared with the implementation ---


def _distance(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def naive_contrastive_pair(x1, x2, similar, margin: float) -> float:
    total = 0.0
    for a, b, s in zip(x1.tolist(), x2.tolist(), similar.tolist()):
        d = _distance(a, b)
        total += 0.5 * d**2 if s else 0.5 * max(0.0, margin - d) ** 2
    return total / len(x1)


def naive_triplet(anchor, positive, negative, margin: float) -> float:
    total = 0.0
    for a, p, n in zip(anchor.tolist(), positive.tolist(), negative.tolist()):
        total += max(0.0, _distance(a, p) ** 2 - _distance(a, n) ** 2 + margin)
    return total / len(anchor)


def naive_n_pair(anchor, positive, l2_reg: float) -> float:
    f, f_plus = anchor.tolist(), positive.tolist()
    n = len(f)
    total = 0.0
    for i in range(n):
        total += math.log(1 + sum(math.exp(_dot(f[i], f_plus[j]) - _dot(f[i], f_plus[i])) for j in range(n) if j != i))
    norms = [_dot(v, v) for v in f + f_plus]
    return total / n + l2_reg * sum(norms) / len(norms)


def naive_lifted_structured(embeddings, labels, margin: float) -> float:
    x, y = embeddings.tolist(), labels.tolist()
    n = len(x)
    positives = [(i, j) for i, j in itertools.combinations(range(n), 2) if y[i] == y[j]]
    total = 0.0
    for i, j in positives:
        inner = sum(math.exp(margin - _distance(x[i], x[k])) for k in range(n) if y[k] != y[i])
        inner += sum(math.exp(margin - _distance(x[j], x[l])) for l in range(n) if y[l] != y[j])
        j_ij = (math.log(inner) if inner > 0 else -math.inf) + _distance(x[i], x[j])
        total += max(0.0, j_ij) ** 2
    return total / (2 * len(positives))


def naive_nce(model_data, noise_data, model_noise, noise_noise, nu: float) -> float:
    def h(log_model: float, log_noise: float) -> float:
        g = log_model - math.log(nu) - log_noise
        return 1 / (1 + math.exp(-g))

    total = sum(math.log(h(m, q)) for m, q in zip(model_data.tolist(), noise_data.tolist()))
    total += sum(math.log(1 - h(m, q)) for m, q in zip(model_noise.tolist(), noise_noise.tolist()))
    return -total / len(model_data)


# --- values against the naive references ---


@pytest.mark.parametrize("margin", [1.0, 3.0])
def test_contrastive_pair_matches_loops(margin):
    x1, x2 = _random(10, 4, seed=1), _random(10, 4, seed=2)
    similar = torch.tensor([True, False] * 5)
    _close(contrastive_pair(x1, x2, similar, margin), naive_contrastive_pair(x1, x2, similar, margin))


@pytest.mark.parametrize("margin", [0.2, 5.0])
def test_triplet_matches_loops(margin):
    a, p, n = _random(8, 3, seed=3), _random(8, 3, seed=4), _random(8, 3, seed=5)
    _close(triplet(a, p, n, margin), naive_triplet(a, p, n, margin))


@pytest.mark.parametrize("l2_reg", [0.0, 0.01])
def test_n_pair_matches_loops(l2_reg):
    a, p = _random(6, 4, seed=6) * 0.7, _random(6, 4, seed=7) * 0.7
    _close(n_pair(a, p, l2_reg=l2_reg), naive_n_pair(a, p, l2_reg))


@pytest.mark.parametrize("margin", [1.0, 0.2])
def test_lifted_structured_matches_loops(margin):
    x = _random(9, 3, seed=8)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 3, 1])  # one singleton class: a row with no positive
    _close(lifted_structured(x, labels, margin), naive_lifted_structured(x, labels, margin))


def test_nce_matches_loops_with_inferred_and_given_noise_ratio():
    data = [_random(5, seed=s) for s in (9, 10)]
    noise = [_random(15, seed=s) for s in (11, 12)]
    expected = naive_nce(*data, *noise, nu=3.0)
    _close(nce(*data, *noise), expected)
    _close(nce(*data, *noise, noise_ratio=3.0), expected)
    same_count = [_random(5, seed=s) for s in (13, 14)]
    _close(nce(*data, *same_count), naive_nce(*data, *same_count, nu=1.0))


# --- known minima and properties ---


def test_triplet_is_zero_when_satisfied_with_margin_and_positive_otherwise():
    anchor = _random(5, 3, seed=15)
    positive = anchor + 0.01
    negative = anchor + 1.0  # squared distance 3 > 3 * 0.01^2 + margin
    _close(triplet(anchor, positive, negative, margin=0.2), 0.0)
    assert float(triplet(anchor, positive, negative, margin=3.5)) > 0


def test_contrastive_pair_minimum_and_coincident_dissimilar_points():
    x = _random(4, 3, seed=16)
    similar = torch.tensor([True, True, False, False])
    far = x + torch.tensor([0.0, 0.0, 10.0], dtype=torch.float64) * (~similar)[:, None]
    _close(contrastive_pair(x, far, similar, margin=1.0), 0.0)  # similar coincide, dissimilar beyond m
    # coincident dissimilar pair: loss m^2 / 2, and a finite gradient (sqrt at 0 must not give NaN)
    x1 = x.clone().requires_grad_(True)
    loss = contrastive_pair(x1, x.clone(), torch.zeros(4, dtype=torch.bool), margin=2.0)
    _close(loss, 2.0)
    loss.backward()
    assert torch.isfinite(x1.grad).all()


def test_n_pair_is_invariant_to_batch_order_and_decreases_with_alignment():
    a, p = _random(6, 4, seed=17), _random(6, 4, seed=18)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    _close(n_pair(a[order], p[order]), float(n_pair(a, p)), tol=1e-9)
    assert float(n_pair(a, a * 3)) < float(n_pair(a, p))


def test_lifted_structured_edge_cases():
    x = _random(4, 3, seed=19).requires_grad_(True)
    # one class: positive pairs without negatives, the log of an empty sum: loss 0, finite gradient
    loss = lifted_structured(x, torch.zeros(4, dtype=torch.long))
    _close(loss, 0.0)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # well separated classes with tight clusters beyond the margin: zero loss
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0]], dtype=torch.float64)
    tight = centres.repeat_interleave(3, 0) + 1e-3 * _random(6, 2, seed=20)
    _close(lifted_structured(tight, torch.tensor([0, 0, 0, 1, 1, 1]), margin=1.0), 0.0)
    with pytest.raises(ValueError, match="labels: no two rows"):
        lifted_structured(_random(3, 2, seed=21), torch.tensor([0, 1, 2]))


def test_nce_prefers_the_true_density():
    # data from N(0, 1), noise from N(0, 2^2): the true model beats a wrong one
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2000, generator=gen, dtype=torch.float64)
    y = 2 * torch.randn(2000, generator=gen, dtype=torch.float64)

    def log_normal(u, sigma):
        return -0.5 * (u / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))

    right = nce(log_normal(x, 1.0), log_normal(x, 2.0), log_normal(y, 1.0), log_normal(y, 2.0))
    wrong = nce(log_normal(x, 1.5), log_normal(x, 2.0), log_normal(y, 1.5), log_normal(y, 2.0))
    assert float(right) < float(wrong)


# --- dtypes and bad input ---


def test_bf16_inputs_return_float32():
    a, p, n = (torch.randn(6, 4).bfloat16() for _ in range(3))
    outputs = [
        contrastive_pair(a, p, torch.rand(6) > 0.5),
        triplet(a, p, n),
        n_pair(a, p, l2_reg=0.1),
        lifted_structured(a, torch.tensor([0, 0, 1, 1, 2, 2])),
        nce(a[0], p[0], n[0], a[1]),
    ]
    for out in outputs:
        assert out.dtype == torch.float32 and torch.isfinite(out)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: contrastive_pair(torch.randn(4, 2), torch.randn(4, 2), torch.ones(4)), "similar must be a bool"),
        (lambda: contrastive_pair(torch.randn(4, 2), torch.randn(4, 2), torch.ones(3, dtype=torch.bool)), "similar"),
        (lambda: contrastive_pair(torch.randn(4, 2), torch.randn(4, 3), torch.ones(4, dtype=torch.bool)), "x1 .* x2"),
        (lambda: triplet(torch.randn(4, 2), torch.randn(4, 2), torch.randn(3, 2)), "anchor .* negative"),
        (lambda: triplet(torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2), margin=-0.1), "margin"),
        (lambda: n_pair(torch.randn(4, 2), torch.randint(0, 2, (4, 2))), "positive must be floating point"),
        (lambda: n_pair(torch.randn(4, 2), torch.randn(4, 2), l2_reg=-1.0), "l2_reg"),
        (lambda: lifted_structured(torch.randn(4, 2), torch.tensor([0.0, 0.0, 1.0, 1.0])), "labels must be an integer"),
        (lambda: lifted_structured(torch.randn(4), torch.tensor([0, 0, 1, 1])), "embeddings must be 2-D"),
        (lambda: nce(torch.randn(4), torch.randn(3), torch.randn(4), torch.randn(4)),
         "log_model_at_data .* log_noise_at_data"),
        (lambda: nce(torch.randn(4), torch.randn(4), torch.randn(4, 1), torch.randn(4, 1)),
         "log_model_at_noise must be 1-D"),
        (lambda: nce(torch.randn(4), torch.randn(4), torch.randn(4), torch.randn(4), noise_ratio=0.0), "noise_ratio"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
