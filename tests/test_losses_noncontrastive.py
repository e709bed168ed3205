"""BYOL, SimSiam, Barlow Twins, VICReg and SimCLRv2 distillation against loops over the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch

from multissl.losses import (
    barlow_twins,
    barlow_twins_terms,
    byol,
    distillation,
    simsiam,
    vicreg,
    vicreg_terms,
)


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(value: torch.Tensor, expected: float, tol: float = 1e-5) -> None:
    assert value.dim() == 0
    got = float(value.detach())
    assert math.isclose(got, expected, rel_tol=tol, abs_tol=tol), (got, expected)


# --- naive references: python loops over the formulas, nothing shared with the implementation ---


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def naive_byol(p: torch.Tensor, z: torch.Tensor) -> float:
    rows = [2 - 2 * _cosine(p[i].tolist(), z[i].tolist()) for i in range(len(p))]
    return sum(rows) / len(rows)


def naive_simsiam(p: torch.Tensor, z: torch.Tensor) -> float:
    rows = [-_cosine(p[i].tolist(), z[i].tolist()) for i in range(len(p))]
    return sum(rows) / len(rows)


def _columns_stats(z: list[list[float]], unbiased: bool) -> tuple[list[float], list[float]]:
    n, d = len(z), len(z[0])
    means = [sum(z[b][i] for b in range(n)) / n for i in range(d)]
    denominator = n - 1 if unbiased else n
    variances = [sum((z[b][i] - means[i]) ** 2 for b in range(n)) / denominator for i in range(d)]
    return means, variances


def naive_barlow(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float) -> float:
    a, b = z1.tolist(), z2.tolist()
    n, d = len(a), len(a[0])
    mean_a, var_a = _columns_stats(a, unbiased=False)
    mean_b, var_b = _columns_stats(b, unbiased=False)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(
                (a[k][i] - mean_a[i]) / math.sqrt(var_a[i] + eps) * (b[k][j] - mean_b[j]) / math.sqrt(var_b[j] + eps)
                for k in range(n)
            ) / n
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return loss


def naive_vicreg(z1: torch.Tensor, z2: torch.Tensor, sim: float, var: float, cov: float, eps: float,
                 variance_views: str = "mean") -> float:
    a, b = z1.tolist(), z2.tolist()
    n, d = len(a), len(a[0])
    invariance = sum((a[k][i] - b[k][i]) ** 2 for k in range(n) for i in range(d)) / (n * d)
    variance_term = covariance_term = 0.0
    for z in (a, b):
        means, variances = _columns_stats(z, unbiased=True)
        variance_term += sum(max(0.0, 1 - math.sqrt(v + eps)) for v in variances) / d
        for i in range(d):
            for j in range(d):
                if i != j:
                    c = sum((z[k][i] - means[i]) * (z[k][j] - means[j]) for k in range(n)) / (n - 1)
                    covariance_term += c**2 / d
    if variance_views == "mean":  # the reference main_vicreg.py: each view's term / 2
        variance_term /= 2
    return sim * invariance + var * variance_term + cov * covariance_term


def naive_distillation(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> float:
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        t_norm = sum(math.exp(t / tau) for t in t_row)
        s_norm = sum(math.exp(s / tau) for s in s_row)
        total -= sum(math.exp(t / tau) / t_norm * math.log(math.exp(s / tau) / s_norm) for s, t in zip(s_row, t_row))
    return total / len(student)


def _hadamard_columns(rows: int, dims: int) -> torch.Tensor:
    """Columns of a Sylvester Hadamard matrix without the constant one: mean 0, variance 1, orthogonal."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < rows:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h[:rows, 1 : dims + 1]


# --- values against the naive references ---


def test_byol_and_simsiam_match_loops():
    p, z = _random(7, 5, seed=1), _random(7, 5, seed=2)
    _close(byol(p, z), naive_byol(p, z))
    _close(simsiam(p, z), naive_simsiam(p, z))


@pytest.mark.parametrize("lambd", [5e-3, 0.3])
def test_barlow_twins_matches_loops(lambd):
    z1, z2 = _random(9, 6, seed=3) * 3 + 1, _random(9, 6, seed=4)
    _close(barlow_twins(z1, z2, lambd=lambd), naive_barlow(z1, z2, lambd, eps=1e-5))
    terms = barlow_twins_terms(z1, z2)
    _close(terms.invariance + lambd * terms.redundancy, naive_barlow(z1, z2, lambd, eps=1e-5))


def test_vicreg_matches_loops_and_terms_compose():
    z1, z2 = _random(10, 4, seed=5) * 0.5, _random(10, 4, seed=6) * 2
    _close(vicreg(z1, z2), naive_vicreg(z1, z2, 25.0, 25.0, 1.0, 1e-4))
    _close(vicreg(z1, z2, 1.0, 2.0, 3.0, eps=1e-3), naive_vicreg(z1, z2, 1.0, 2.0, 3.0, 1e-3))
    terms = vicreg_terms(z1, z2)
    _close(terms.invariance, naive_vicreg(z1, z2, 1.0, 0.0, 0.0, 1e-4))
    _close(terms.variance, naive_vicreg(z1, z2, 0.0, 1.0, 0.0, 1e-4))
    _close(terms.covariance, naive_vicreg(z1, z2, 0.0, 0.0, 1.0, 1e-4))
    # the paper's sum of the two views' variance terms, kept as an option
    _close(vicreg(z1, z2, variance_views="sum"), naive_vicreg(z1, z2, 25.0, 25.0, 1.0, 1e-4, variance_views="sum"))


@pytest.mark.parametrize("temperature", [1.0, 0.5, 4.0])
def test_distillation_matches_loops(temperature):
    student, teacher = _random(6, 5, seed=7), _random(6, 5, seed=8) * 2
    _close(distillation(student, teacher, temperature), naive_distillation(student, teacher, temperature))


# --- known minima ---


def test_perfect_alignment_reaches_the_minimum():
    z = _random(6, 8, seed=9)
    _close(byol(z * 3.0, z), 0.0)  # cosine ignores the scale
    _close(simsiam(z * 0.5, z), -1.0)
    decorrelated = _hadamard_columns(8, 5)
    _close(barlow_twins(decorrelated, decorrelated, eps=1e-12), 0.0)
    _close(barlow_twins(decorrelated * 4 + 2, decorrelated - 1, eps=1e-12), 0.0)  # standardised first
    _close(vicreg_terms(z, z).invariance, 0.0)
    # unbiased std of the +-1 columns over 8 rows is sqrt(8/7) > 1: variance hinge and covariance vanish
    terms = vicreg_terms(decorrelated, decorrelated)
    _close(terms.variance, 0.0)
    _close(terms.covariance, 0.0)
    logits = _random(4, 6, seed=10)
    entropy = naive_distillation(logits, logits, 1.0)
    _close(distillation(logits, logits), entropy)  # cross-entropy with itself: the teacher's entropy
    assert float(distillation(logits + 0.3 * _random(4, 6, seed=11), logits)) > entropy


# --- invariances ---


def test_batch_statistic_losses_are_invariant_to_permuting_the_batch():
    z1, z2 = _random(12, 5, seed=12), _random(12, 5, seed=13)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    for loss in (barlow_twins, vicreg, byol, simsiam):
        _close(loss(z1[order], z2[order]), float(loss(z1, z2)), tol=1e-9)


def test_barlow_twins_is_invariant_to_per_dimension_affine_maps():
    z1, z2 = _random(10, 4, seed=14), _random(10, 4, seed=15)
    scale = torch.tensor([0.5, 2.0, 7.0, 0.1], dtype=torch.float64)
    shift = torch.tensor([3.0, -1.0, 0.0, 10.0], dtype=torch.float64)
    expected = float(barlow_twins(z1, z2, eps=1e-12))
    _close(barlow_twins(z1 * scale + shift, z2, eps=1e-12), expected, tol=1e-9)
    _close(barlow_twins(z1, z2 / scale - shift, eps=1e-12), expected, tol=1e-9)
    # with the default eps the invariance holds to eps / variance
    _close(barlow_twins(z1 * scale + shift, z2), float(barlow_twins(z1, z2)), tol=1e-3)


# --- stop-gradient ---


def test_stop_gradient_reaches_only_the_online_branch():
    for loss in (byol, simsiam, distillation):
        online = _random(5, 4, seed=16).requires_grad_(True)
        target = _random(5, 4, seed=17).requires_grad_(True)
        loss(online, target).backward()
        assert target.grad is None, loss.__name__
        assert online.grad is not None and online.grad.abs().sum() > 0, loss.__name__


def test_redundancy_losses_train_both_branches():
    for loss in (barlow_twins, vicreg):
        z1, z2 = _random(6, 3, seed=18).requires_grad_(True), _random(6, 3, seed=19).requires_grad_(True)
        loss(z1, z2).backward()
        assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    # autograd through the standardisation and the hinge, checked numerically in float64
    z1, z2 = _random(6, 3, seed=20).requires_grad_(True), _random(6, 3, seed=21).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins(a, b, lambd=0.1), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: vicreg(a, b), (z1 * 0.3, z2))


# --- dtypes and bad input ---


def test_bf16_inputs_return_float32():
    z1, z2 = torch.randn(8, 4).bfloat16(), torch.randn(8, 4).bfloat16()
    for loss in (byol, simsiam, barlow_twins, vicreg, distillation):
        out = loss(z1, z2)
        assert out.dtype == torch.float32, loss.__name__
        assert torch.isfinite(out)
    # float32 math on bf16 values equals the float32 loss of the same values
    torch.testing.assert_close(barlow_twins(z1, z2), barlow_twins(z1.float(), z2.float()))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: byol(torch.randn(4), torch.randn(4)), "p must be 2-D"),
        (lambda: byol(torch.randn(4, 3), torch.randn(5, 3)), r"p \(4, 3\) and z \(5, 3\)"),
        (lambda: simsiam(torch.randn(4, 3), torch.randint(0, 3, (4, 3))), "z must be floating point"),
        (lambda: barlow_twins(torch.randn(4, 3), torch.randn(4, 2)), r"z1 \(4, 3\) and z2 \(4, 2\)"),
        (lambda: barlow_twins(torch.randn(1, 3), torch.randn(1, 3)), "at least 2 rows"),
        (lambda: barlow_twins(torch.randn(4, 3), torch.randn(4, 3), lambd=-1.0), "lambd"),
        (lambda: vicreg(torch.randn(4, 3, 2), torch.randn(4, 3, 2)), "z1 must be 2-D"),
        (lambda: vicreg(torch.randn(4, 3), torch.randn(4, 3), var_weight=float("nan")), "var_weight"),
        (lambda: vicreg(torch.randn(4, 3), torch.randn(4, 3), eps=0.0), "eps"),
        (lambda: distillation(torch.randn(4, 3), torch.randn(4, 5)), "student_logits .* teacher_logits"),
        (lambda: distillation(torch.randn(4, 3), torch.randn(4, 3), temperature=0.0), "temperature"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
