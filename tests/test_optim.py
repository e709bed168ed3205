"""multissl.optim: parameter groups, LARS against a naive implementation, the warm-up cosine
schedule against its formula, resuming the schedule, building optimisers by name."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from multissl.modules import LearnableTemperature, MomentumEncoder
from multissl.optim import LARS, build_optimizer, parameter_groups, warmup_cosine, warmup_cosine_scheduler


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.linear = nn.Linear(4, 5)
        self.layer_norm = nn.LayerNorm(5)
        self.position = nn.Parameter(torch.zeros(1, 7, 5))  # 3-D, excluded by name below
        self.temperature = LearnableTemperature()
        self.frozen = nn.Linear(5, 5)
        self.frozen.requires_grad_(False)
        self.target = MomentumEncoder(self.linear)

    def no_weight_decay(self):
        return {"position"}


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_parameter_groups_put_biases_norms_temperature_in_no_decay():
    model = _Model()
    groups = parameter_groups(model, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert _ids(by_name["decay"]["params"]) == _ids([model.conv.weight, model.linear.weight])
    assert _ids(by_name["no_decay"]["params"]) == _ids([
        model.conv.bias, model.bn.weight, model.bn.bias, model.linear.bias, model.layer_norm.weight,
        model.layer_norm.bias, model.position, model.temperature.log_scale,
    ])  # frozen and EMA parameters are in neither group
    assert by_name["decay"]["weight_decay"] == 0.05 and by_name["decay"]["layer_adaptation"]
    assert by_name["no_decay"]["weight_decay"] == 0.0 and not by_name["no_decay"]["layer_adaptation"]
    # a model with only decayed parameters yields one group
    assert [g["name"] for g in parameter_groups(nn.Linear(3, 3, bias=False), 0.1)] == ["decay"]


def _naive_lars(weights, grads_per_step, lrs, momentum, weight_decays, adaptations, eta):
    """Per tensor, per step, with norms as square roots of summed squares over a Python loop."""
    weights = [w.clone() for w in weights]
    velocities = [torch.zeros_like(w) for w in weights]
    for grads, lr in zip(grads_per_step, lrs):
        for i, (w, g) in enumerate(zip(weights, grads)):
            update = g + weight_decays[i] * w
            trust = 1.0
            if adaptations[i]:
                w_norm = math.sqrt(sum(float(v) ** 2 for v in w.flatten()))
                u_norm = math.sqrt(sum(float(v) ** 2 for v in update.flatten()))
                if w_norm > 0 and u_norm > 0:
                    trust = eta * w_norm / u_norm
            velocities[i] = momentum * velocities[i] + lr * trust * update
            weights[i] = w - velocities[i]
    return weights


def test_lars_matches_naive_implementation_over_steps_with_changing_lr():
    torch.manual_seed(4)
    matrix = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    zero_init = nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))  # ||w|| = 0: trust ratio 1
    bias = nn.Parameter(torch.randn(4, dtype=torch.float64))
    params = [matrix, zero_init, bias]
    initial = [p.detach().clone() for p in params]
    groups = [
        {"params": [matrix, zero_init], "weight_decay": 1e-2, "layer_adaptation": True},
        {"params": [bias], "weight_decay": 0.0, "layer_adaptation": False},
    ]
    optimizer = LARS(groups, lr=0.5, momentum=0.9, trust_coefficient=0.02)
    lrs = [0.5, 0.2, 1.0]
    grads_per_step = [[torch.randn_like(p) for p in params] for _ in lrs]
    for grads, lr in zip(grads_per_step, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
    expected = _naive_lars(initial, grads_per_step, lrs, 0.9, [1e-2, 1e-2, 0.0], [True, True, False], 0.02)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)


def test_lars_skips_parameters_without_gradient():
    used, unused = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2, 2))
    optimizer = LARS([used, unused], lr=0.1)
    used.grad = torch.ones(2, 2)
    optimizer.step()
    assert torch.equal(unused, torch.ones(2, 2)) and not torch.equal(used, torch.ones(2, 2))


def test_warmup_cosine_values_at_start_warmup_end_and_end():
    base, final, total, warmup = 0.3, 0.01, 100, 10
    assert warmup_cosine(0, total, warmup, base, final) == 0.0
    assert warmup_cosine(5, total, warmup, base, final) == pytest.approx(base * 5 / 10)
    assert warmup_cosine(warmup, total, warmup, base, final) == pytest.approx(base)
    assert warmup_cosine(55, total, warmup, base, final) == pytest.approx((base + final) / 2)
    assert warmup_cosine(total, total, warmup, base, final) == pytest.approx(final)
    assert warmup_cosine(total + 7, total, warmup, base, final) == pytest.approx(final)
    step = 73
    expected = final + (base - final) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2
    assert warmup_cosine(step, total, warmup, base, final) == pytest.approx(expected)
    assert warmup_cosine(0, 5, 0, base) == pytest.approx(base)  # no warm-up
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(0, 10, 11)


def _sgd_with_two_groups():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    return torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.4}], lr=0.1, momentum=0.9)


def test_warmup_cosine_scheduler_follows_formula_and_resumes():
    total, warmup, ratio = 20, 4, 0.1
    optimizer = _sgd_with_two_groups()
    scheduler = warmup_cosine_scheduler(optimizer, total, warmup, final_lr_ratio=ratio)
    seen = []
    for step in range(8):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for step, lrs in enumerate(seen):
        for lr, peak in zip(lrs, (0.1, 0.4)):
            assert lr == pytest.approx(warmup_cosine(step, total, warmup, peak, ratio * peak))

    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # what accelerate's load_state can read safely
    resumed_optimizer = _sgd_with_two_groups()
    resumed = warmup_cosine_scheduler(resumed_optimizer, total, warmup, final_lr_ratio=ratio)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    for _ in range(total - 8 + 2):
        assert [g["lr"] for g in resumed_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]
        for opt, sched in ((optimizer, scheduler), (resumed_optimizer, resumed)):
            opt.step()
            sched.step()
    assert resumed_optimizer.param_groups[1]["lr"] == pytest.approx(0.4 * ratio)


def test_build_optimizer_by_name_uses_groups():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    groups = parameter_groups(model, weight_decay=0.1)
    adamw = build_optimizer("adamw", groups, lr=1e-3, weight_decay=0.5, betas=(0.8, 0.95))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.95)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]  # the groups' own decay wins
    sgd = build_optimizer("SGD", model.parameters(), lr=0.1, weight_decay=0.5, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    assert sgd.param_groups[0]["weight_decay"] == 0.5
    lars = build_optimizer("lars", parameter_groups(model, 0.1), lr=0.3, trust_coefficient=0.01)
    assert isinstance(lars, LARS) and [g["layer_adaptation"] for g in lars.param_groups] == [True, False]
    model(torch.randn(5, 3)).sum().backward()
    for optimizer in (adamw, sgd, lars):
        optimizer.step()
    with pytest.raises(ValueError, match="adamw, sgd, lars"):
        build_optimizer("adam", groups, lr=0.1)


class _WithFixedPredictor(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 4)
        self.predictor = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))

    def fixed_learning_rate(self):
        return {f"predictor.{name}" for name, _ in self.predictor.named_parameters()}


def test_fixed_learning_rate_groups_stay_at_their_peak_while_the_rest_follows_the_schedule():
    model = nn.Sequential(_WithFixedPredictor())  # the names are relative to the declaring module
    groups = parameter_groups(model, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"decay", "no_decay", "decay_fixed_lr", "no_decay_fixed_lr"}
    assert {id(p) for p in by_name["decay_fixed_lr"]["params"]} == {id(model[0].predictor[0].weight)}
    assert by_name["no_decay_fixed_lr"]["weight_decay"] == 0.0 and by_name["decay_fixed_lr"]["weight_decay"] == 0.1
    optimizer = torch.optim.SGD(groups, lr=0.5)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps=10, warmup_steps=2)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["decay_fixed_lr"] == lrs["no_decay_fixed_lr"] == 0.5
    assert lrs["decay"] == lrs["no_decay"] == pytest.approx(0.5 * warmup_cosine(6, 10, 2, base_lr=1.0))


def test_simsiam_keeps_its_predictor_at_a_constant_lr_by_default():
    from domains import EncoderConfig, build_domain
    from multissl.objectives import build_objective

    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    simsiam = build_objective("simsiam", [encoder], {"projection_dim": 16, "predictor_hidden_dim": 8})
    fixed = {id(p) for g in parameter_groups(simsiam, 1e-4) if g["fixed_lr"] for p in g["params"]}
    assert fixed == {id(p) for p in simsiam.predictor.parameters()}
    off = build_objective("simsiam", [encoder], {"projection_dim": 16, "predictor_hidden_dim": 8,
                                                 "fix_predictor_lr": False})
    assert not any(g["fixed_lr"] for g in parameter_groups(off, 1e-4))
