"""Self-distillation losses against naive loops written from the papers' formulas, and under two
real gloo processes against one process on the global batch (values and gradients, ranks holding
unequal rows; DINO's centre update included)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from multissl import distributed
from multissl.losses import data2vec_targets, dino, ibot_patch, koleo, latent_regression
from multissl.modules import TeacherCentering
from tests.dist import run_in_processes

SIZES = [5, 3]
ROWS = sum(SIZES)


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- naive implementations, one number at a time ---------------------------------------------------

def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def _cross_entropy(teacher: list[float], center: list[float], student: list[float], tau_t: float,
                   tau_s: float) -> float:
    """H(P_t, P_s) with P_t = softmax((t - c) / tau_t), P_s = softmax(s / tau_s) (DINO eq. 1, 3)."""
    p = _softmax([(t - c) / tau_t for t, c in zip(teacher, center)])
    q = _softmax([s / tau_s for s in student])
    return -sum(pk * math.log(qk) for pk, qk in zip(p, q))


def _naive_dino(student, teacher, center, tau_s, tau_t):
    terms = []
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            rows = [_cross_entropy(t[n].tolist(), center.tolist(), s[n].tolist(), tau_t, tau_s) for n in range(len(t))]
            terms.append(sum(rows) / len(rows))
    return sum(terms) / len(terms)


def test_dino_matches_the_paper_formula():
    student = [_random(6, 5, seed=s) * 3 for s in range(4)]  # 2 globals + 2 locals
    teacher = [_random(6, 5, seed=10 + s) * 3 for s in range(2)]
    center = _random(5, seed=20)
    loss = dino(student, teacher, center, student_temperature=0.1, teacher_temperature=0.04)
    assert loss.item() == pytest.approx(_naive_dino(student, teacher, center, 0.1, 0.04), rel=1e-10)
    assert len([(i, v) for i in range(2) for v in range(4) if v != i]) == 2 * 4 - 2  # the reference's n_loss_terms


def test_dino_teacher_gets_no_gradient_and_needs_two_crops():
    student = [_random(3, 4, seed=1).requires_grad_(), _random(3, 4, seed=2).requires_grad_()]
    teacher = [_random(3, 4, seed=3).requires_grad_()]
    dino(student, teacher, torch.zeros(4)).backward()
    assert teacher[0].grad is None and student[0].grad is None and student[1].grad is not None  # crop 0 vs itself skipped
    with pytest.raises(ValueError, match="at least 2 crops"):
        dino(student[:1], teacher, torch.zeros(4))


def test_ibot_patch_matches_the_per_image_mean_of_masked_positions():
    mask = torch.tensor([[True, False, True, True], [False, False, False, False], [False, True, False, False]])
    count = int(mask.sum())
    student, teacher, center = _random(count, 6, seed=1) * 2, _random(count, 6, seed=2) * 2, _random(6, seed=3)
    loss = ibot_patch(student, teacher, mask, center, student_temperature=0.1, teacher_temperature=0.07)
    per_image, k = [], 0
    for b in range(mask.shape[0]):
        terms = []
        for t in range(mask.shape[1]):
            if mask[b, t]:
                terms.append(_cross_entropy(teacher[k].tolist(), center.tolist(), student[k].tolist(), 0.07, 0.1))
                k += 1
        per_image.append(sum(terms) / max(len(terms), 1))  # an image without masked patches counts as 0
    assert loss.item() == pytest.approx(sum(per_image) / len(per_image), rel=1e-10)
    with pytest.raises(ValueError, match="selects"):
        ibot_patch(student[:-1], teacher[:-1], mask, center)


def test_koleo_matches_nearest_neighbour_distances():
    x = _random(7, 3, seed=4)
    x[5] = x[2] * 3  # same direction as row 2: each other's nearest neighbour at distance ~0
    eps = 1e-8
    unit = [row / row.norm() for row in x]
    total = 0.0
    for i, a in enumerate(unit):
        j = max((j for j in range(len(unit)) if j != i), key=lambda j: float(a @ unit[j]))
        total += -math.log(float((a - unit[j] + eps).norm()) + eps)
    assert koleo(x, eps=eps).item() == pytest.approx(total / len(unit), rel=1e-9)


@pytest.mark.parametrize("beta, scale", [(0.0, None), (4.0, 1.0), (1.0, 1 / 5)])
def test_latent_regression_matches_data2vec_and_ijepa(beta, scale):
    prediction, target = _random(4, 5, seed=5) * 3, _random(4, 5, seed=6) * 3
    factor = scale if scale is not None else 1 / math.sqrt(5)

    def huber(x: float) -> float:
        if beta == 0:
            return x * x
        return 0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta

    rows = [factor * sum(huber(float(p - t)) for p, t in zip(pr, ta)) for pr, ta in zip(prediction, target)]
    assert latent_regression(prediction, target, beta, scale).item() == pytest.approx(sum(rows) / len(rows), rel=1e-10)
    if beta == 1.0:  # I-JEPA's reference: F.smooth_l1_loss(z, h), the mean over every element
        assert latent_regression(prediction, target, 1.0, 1 / 5).item() == pytest.approx(
            F.smooth_l1_loss(prediction, target).item(), rel=1e-10)


def test_data2vec_targets_normalise_each_layer_then_average():
    layers = [_random(2, 6, 4, seed=s) * (s + 1) + s for s in range(3)]
    # instance norm per layer = F.instance_norm over time on [B, D, T]
    expected = sum(F.instance_norm(layer.transpose(1, 2)).transpose(1, 2) for layer in layers) / 3
    torch.testing.assert_close(data2vec_targets(layers), expected)
    expected = F.layer_norm(sum(F.layer_norm(layer, (4,)) for layer in layers) / 3, (4,))
    torch.testing.assert_close(data2vec_targets(layers, layer_norm="layer", final_norm="layer"), expected)
    # padding is left out of the instance statistics: the valid part alone gives the same values
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    padded = data2vec_targets(layers, valid)
    alone = data2vec_targets([layer[1:, :4] for layer in layers])
    torch.testing.assert_close(padded[1, :4], alone[0])
    torch.testing.assert_close(padded[0], data2vec_targets([layer[:1] for layer in layers])[0])


def test_centre_moves_towards_the_batch_mean():
    centering = TeacherCentering(3, momentum=0.9)
    logits = _random(4, 3, seed=7).float()
    centering.update(logits)
    torch.testing.assert_close(centering.center, 0.1 * logits.mean(dim=0))
    before = centering.center.clone()
    centering.update(logits[:0])  # no rows anywhere: unchanged
    torch.testing.assert_close(centering.center, before)


# --- two processes against one --------------------------------------------------------------------

def _cases(take, scale: float) -> dict:
    results = {}
    student = [take(_random(ROWS, 6, seed=s) * 2).requires_grad_() for s in range(3)]
    teacher = [take(_random(ROWS, 6, seed=10 + s) * 2) for s in range(2)]
    centering = TeacherCentering(6).double()
    centering.update(torch.cat(teacher))  # the centre of the global batch
    loss = dino(student, teacher, centering.center, 0.1, 0.05)
    loss.backward()
    results["dino"] = {"loss": loss.detach(), "grads": [s.grad * scale for s in student],
                       "center": centering.center.clone()}

    mask = _patch_mask()
    local_mask = take(mask)
    first_patch = int(mask[: int(take(torch.arange(ROWS))[0])].sum())  # patches of the rows before ours
    patches = slice(first_patch, first_patch + int(local_mask.sum()))
    s = (_random(int(mask.sum()), 6, seed=4) * 2)[patches].clone().requires_grad_()
    teacher_patches = (_random(int(mask.sum()), 6, seed=5) * 2)[patches]
    loss = ibot_patch(s, teacher_patches, local_mask, _random(6, seed=6), 0.1, 0.07)
    loss.backward()
    results["ibot_patch"] = {"loss": loss.detach(), "grads": [s.grad * scale]}

    x = take(_random(ROWS, 3, seed=8)).requires_grad_()
    loss = koleo(x)
    loss.backward()
    results["koleo"] = {"loss": loss.detach(), "grads": [x.grad * scale]}

    p = take(_random(ROWS, 5, seed=9)).requires_grad_()
    loss = latent_regression(p, take(_random(ROWS, 5, seed=10)), beta=2.0)
    loss.backward()
    results["latent_regression"] = {"loss": loss.detach(), "grads": [p.grad * scale]}
    return results


def _patch_mask() -> torch.Tensor:
    """[ROWS, 4]: rank 0's images about half masked, rank 1's one masked patch in one image."""
    mask = torch.rand(ROWS, 4, generator=torch.Generator().manual_seed(3)) < 0.5
    mask[SIZES[0]:] = False
    mask[SIZES[0], 1] = True
    return mask


def _on_this_rank() -> dict:
    start = sum(SIZES[: distributed.rank()])
    rows = SIZES[distributed.rank()]
    return _cases(lambda t: t[start: start + rows], 1.0 / distributed.world_size())


@pytest.mark.distributed
def test_two_processes_match_one_process_on_the_global_batch():
    reference = _cases(lambda t: t, 1.0)
    patches_before_rank1 = int(_patch_mask()[: SIZES[0]].sum())
    for rank, results in enumerate(run_in_processes(_on_this_rank)):
        start = sum(SIZES[:rank])
        for name, expected in reference.items():
            got = results[name]
            torch.testing.assert_close(got["loss"], expected["loss"], rtol=1e-7, atol=1e-9, msg=f"{name} rank {rank}")
            if "center" in expected:
                torch.testing.assert_close(got["center"], expected["center"], rtol=1e-7, atol=1e-9)
            for grad, full in zip(got["grads"], expected["grads"]):
                if name == "ibot_patch":  # rows are masked patches, not images
                    part = full[:patches_before_rank1] if rank == 0 else full[patches_before_rank1:]
                else:
                    part = full[start: start + SIZES[rank]]
                torch.testing.assert_close(grad, part, rtol=1e-7, atol=1e-9, msg=f"{name} rank {rank} gradient")
