"""masked_reconstruction (MAE, context encoders, denoising AEs) and MLM cross-entropy against loops."""

from __future__ import annotations

import math

import pytest
import torch

from multissl.losses import masked_reconstruction, masked_token_cross_entropy


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _random_mask(*shape: int, seed: int) -> torch.Tensor:
    mask = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < 0.6
    mask.view(-1)[0] = True  # at least one masked position
    return mask


def _close(value: torch.Tensor, expected: float, tol: float = 1e-5) -> None:
    assert value.dim() == 0
    got = float(value.detach())
    assert math.isclose(got, expected, rel_tol=tol, abs_tol=tol), (got, expected)


# --- naive references: python loops over the formulas, nothing shared with the implementation ---


def _normalised_patch(values: list[float], eps: float) -> list[float]:
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return [(v - mean) / math.sqrt(variance + eps) for v in values]


def naive_mae(prediction, target, mask, normalize: bool, eps: float = 1e-6) -> float:
    """He et al. 2022: per-patch MSE, averaged over the masked patches."""
    total, count = 0.0, 0
    for b in range(prediction.shape[0]):
        for t in range(prediction.shape[1]):
            if not mask[b, t]:
                continue
            goal = target[b, t].tolist()
            if normalize:
                goal = _normalised_patch(goal, eps)
            guess = prediction[b, t].tolist()
            total += sum((g - y) ** 2 for g, y in zip(guess, goal)) / len(goal)
            count += 1
    return total / count


def naive_emphasised(prediction, target, corrupted, alpha: float, beta: float) -> float:
    """Vincent et al. 2010 L_{2,alpha}: alpha on corrupted, beta on clean dimensions; / total weight."""
    weighted, weights = 0.0, 0.0
    for x, z, c in zip(target.flatten().tolist(), prediction.flatten().tolist(), corrupted.flatten().tolist()):
        w = alpha if c else beta
        weighted += w * (x - z) ** 2
        weights += w
    return weighted / weights


def naive_mlm(logits, labels, mask=None, ignore_index=-100) -> float:
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            label = int(labels[b, t])
            if label == ignore_index or (mask is not None and not mask[b, t]):
                continue
            row = logits[b, t].tolist()
            total -= row[label] - math.log(sum(math.exp(v) for v in row))
            count += 1
    return total / count


# --- masked_reconstruction ---


@pytest.mark.parametrize("normalize", [False, True])
def test_mae_patch_mask_matches_loops(normalize):
    prediction, target = _random(3, 5, 4, seed=1), _random(3, 5, 4, seed=2) * 3 + 1
    mask = _random_mask(3, 5, seed=3)
    _close(masked_reconstruction(prediction, target, mask, normalize_target=normalize),
           naive_mae(prediction, target, mask, normalize))


def test_normalised_target_ignores_each_patch_scale_and_offset():
    prediction, target = _random(2, 6, 5, seed=4), _random(2, 6, 5, seed=5)
    mask = _random_mask(2, 6, seed=6)
    scale = _random(2, 6, 1, seed=7).abs() + 0.5
    offset = _random(2, 6, 1, seed=8) * 10
    expected = float(masked_reconstruction(prediction, target, mask, normalize_target=True, eps=1e-12))
    _close(masked_reconstruction(prediction, target * scale + offset, mask, normalize_target=True, eps=1e-12),
           expected, tol=1e-9)
    # without normalisation the same change matters
    assert abs(float(masked_reconstruction(prediction, target * scale + offset, mask)) - expected) > 1e-3


def test_context_encoder_element_mask_is_the_mean_over_masked_elements():
    prediction, target = _random(2, 3, 4, 4, seed=9), _random(2, 3, 4, 4, seed=10)
    region = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    region[..., 1:3, 1:3] = True  # the dropped central block
    diff = [(p - t) ** 2 for p, t, m in zip(prediction.flatten().tolist(), target.flatten().tolist(),
                                            region.flatten().tolist()) if m]
    _close(masked_reconstruction(prediction, target, region), sum(diff) / len(diff))
    # what the visible context predicts does not matter
    changed = prediction.clone()
    changed[~region] += 100
    _close(masked_reconstruction(changed, target, region), sum(diff) / len(diff))


@pytest.mark.parametrize("alpha, beta", [(0.98, 0.02), (1.0, 0.0), (0.3, 0.7)])
def test_emphasised_denoising_matches_loops(alpha, beta):
    prediction, target = _random(4, 7, seed=11), _random(4, 7, seed=12)
    corrupted = _random_mask(4, 7, seed=13)
    _close(masked_reconstruction(prediction, target, corrupted, corrupted_weight=alpha, clean_weight=beta),
           naive_emphasised(prediction, target, corrupted, alpha, beta))


def test_no_mask_and_equal_weights_are_plain_mse():
    prediction, target = _random(3, 4, 5, seed=14), _random(3, 4, 5, seed=15)
    mse = sum((p - t) ** 2 for p, t in zip(prediction.flatten().tolist(), target.flatten().tolist())) / 60
    _close(masked_reconstruction(prediction, target), mse)
    for mask in (_random_mask(3, 4, seed=16), _random_mask(3, 4, 5, seed=17)):
        _close(masked_reconstruction(prediction, target, mask, corrupted_weight=2.0, clean_weight=2.0), mse)
    _close(masked_reconstruction(target, target, _random_mask(3, 4, seed=18)), 0.0)


def test_gradient_reaches_only_masked_patches():
    prediction = _random(2, 5, 3, seed=19).requires_grad_(True)
    mask = _random_mask(2, 5, seed=20)
    masked_reconstruction(prediction, _random(2, 5, 3, seed=21), mask).backward()
    assert (prediction.grad[~mask] == 0).all()
    assert (prediction.grad[mask].abs().sum(-1) > 0).all()


# --- masked_token_cross_entropy ---


def test_mlm_matches_loops_and_ignores_minus_100():
    logits = _random(3, 6, 11, seed=22)
    labels = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(23))
    labels[_random_mask(3, 6, seed=24)] = -100
    labels[0, 1] = 4  # at least one token kept
    _close(masked_token_cross_entropy(logits, labels), naive_mlm(logits, labels))
    mask = _random_mask(3, 6, seed=25)
    mask[0, 1] = True
    _close(masked_token_cross_entropy(logits, labels, mask), naive_mlm(logits, labels, mask))
    # ignored tokens: their logits neither change the loss nor receive gradient
    ignored = labels == -100
    logits = logits.clone().requires_grad_(True)
    shifted = logits.detach().clone()
    shifted[ignored] = _random(int(ignored.sum()), 11, seed=26)
    _close(masked_token_cross_entropy(shifted, labels), float(masked_token_cross_entropy(logits.detach(), labels)))
    masked_token_cross_entropy(logits, labels).backward()
    assert (logits.grad[ignored] == 0).all()


def test_mlm_custom_ignore_index_and_bf16():
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[1, 2, 0, 0], [6, 0, 3, 0]])
    expected = naive_mlm(logits.double(), labels, ignore_index=0)
    _close(masked_token_cross_entropy(logits, labels, ignore_index=0), expected)
    out = masked_token_cross_entropy(logits.bfloat16(), labels, ignore_index=0)
    assert out.dtype == torch.float32
    _close(out, naive_mlm(logits.bfloat16().double(), labels, ignore_index=0))


def test_bf16_reconstruction_returns_float32():
    prediction, target = torch.randn(2, 4, 3).bfloat16(), torch.randn(2, 4, 3).bfloat16()
    out = masked_reconstruction(prediction, target, _random_mask(2, 4, seed=27), normalize_target=True)
    assert out.dtype == torch.float32 and torch.isfinite(out)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: masked_reconstruction(torch.randn(4), torch.randn(4)), "prediction must have at least 2"),
        (lambda: masked_reconstruction(torch.randn(2, 3), torch.randn(2, 4)),
         r"prediction \(2, 3\) and target \(2, 4\)"),
        (lambda: masked_reconstruction(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool)),
         r"mask must have the shape of prediction \(2, 3, 4\) .* or \(2, 3\)"),
        (lambda: masked_reconstruction(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 3)),
         "mask must be a bool"),
        (lambda: masked_reconstruction(torch.randn(2, 3), torch.randn(2, 3), corrupted_weight=0.9), "need a mask"),
        (lambda: masked_reconstruction(torch.randn(2, 3), torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.bool)),
         "mask selects no position"),
        (lambda: masked_reconstruction(torch.randn(2, 3), torch.randn(2, 3), torch.ones(2, 3, dtype=torch.bool),
                                       clean_weight=-1.0), "clean_weight"),
        (lambda: masked_reconstruction(torch.randn(2, 3), torch.randint(0, 3, (2, 3))), "target must be floating"),
        (lambda: masked_token_cross_entropy(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)),
         r"labels must be an integer tensor of shape \(2, 3\)"),
        (lambda: masked_token_cross_entropy(torch.randn(2, 3, 5), torch.zeros(2, 3)), "labels must be an integer"),
        (lambda: masked_token_cross_entropy(torch.randn(2, 3, 5), torch.full((2, 3), 5)), r"labels: .* \[0, 5\)"),
        (lambda: masked_token_cross_entropy(torch.randn(2, 3, 5), torch.full((2, 3), -100)), "no token is selected"),
        (lambda: masked_token_cross_entropy(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long),
                                            mask=torch.ones(2, 3)), "mask must be a bool"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
