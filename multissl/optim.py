"""Optimisers and learning-rate schedules the engine builds from a recipe.

* :func:`parameter_groups`: weight decay on weight matrices and kernels only; biases, normalisation
  parameters and the learnable temperature go to a group with no decay and no LARS adaptation (SimCLR,
  BYOL, MoCo v3 and MAE all exclude them).
* :class:`LARS`: layer-wise adaptive rate scaling (You et al. 2017) as SimCLR and BYOL use it.
* :func:`warmup_cosine` / :func:`warmup_cosine_scheduler`: linear warm-up then cosine decay (SimCLR,
  BYOL, MoCo v3, MAE), as a ``LambdaLR`` whose ``state_dict`` resumes it.
* :func:`build_optimizer`: ``"adamw" | "sgd" | "lars"`` by name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "parameter_groups",
    "LARS",
    "warmup_cosine",
    "warmup_cosine_scheduler",
    "build_optimizer",
    "OPTIMIZERS",
]

_NORMALIZATION_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group (and the same
    two again for parameters whose learning rate stays at its peak).

    No decay (and ``layer_adaptation=False``, read by :class:`LARS`): parameters with fewer than two
    dimensions (biases, norm scales and shifts, the 0-d log temperature), every parameter of a
    normalisation module, and the names a module lists in its ``no_weight_decay()`` method (timm's
    convention; :class:`multissl.modules.LearnableTemperature` has one). Parameters with
    ``requires_grad=False`` (frozen parts, EMA copies) are left out, so the optimiser never sees
    them. Shared parameters appear once. Empty groups are dropped. Each group has a ``name``.

    Constant learning rate: the names a module lists in its ``fixed_learning_rate()`` method (as
    ``no_weight_decay``, relative to the module) go to groups marked ``fixed_lr: True``, which
    :func:`warmup_cosine_scheduler` keeps at the peak (SimSiam's predictor, ``--fix-pred-lr``).
    """
    excluded: set[str] = set()
    fixed: set[str] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, _NORMALIZATION_TYPES):
            excluded.update(prefix + name for name, _ in module.named_parameters(recurse=False))
        if callable(getattr(module, "no_weight_decay", None)):
            excluded.update(prefix + name for name in module.no_weight_decay())
        if callable(getattr(module, "fixed_learning_rate", None)):
            fixed.update(prefix + name for name in module.fixed_learning_rate())
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {key: [] for key in
                                                           ((True, False), (False, False), (True, True), (False, True))}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decayed = not (parameter.dim() < 2 or name in excluded)
        groups[decayed, name in fixed].append(parameter)
    return [
        {"name": ("decay" if decayed else "no_decay") + ("_fixed_lr" if constant else ""), "params": params,
         "weight_decay": weight_decay if decayed else 0.0, "layer_adaptation": decayed, "fixed_lr": constant}
        for (decayed, constant), params in groups.items() if params
    ]


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017), in the form of SimCLR's and BYOL's code.

    Per parameter tensor ``w`` with gradient ``g``, in a group with learning rate ``lr``::

        u = g + weight_decay * w
        trust = trust_coefficient * ||w|| / ||u||   (1 if ||w|| or ||u|| is 0, or the group has
                                                      layer_adaptation=False)
        v = momentum * v + lr * trust * u
        w = w - v

    The learning rate sits inside the velocity, as in the paper's Algorithm 1 and SimCLR's
    ``LARSOptimizer`` (torch's SGD puts it outside; the two differ while the lr changes). The
    paper's trust ratio divides by ``||g|| + weight_decay * ||w||``; SimCLR and BYOL divide by the
    norm of the decayed gradient ``||u||``, which we follow. Groups from :func:`parameter_groups`
    exclude biases and norm parameters from both decay and adaptation, as SimCLR and BYOL do.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        layer_adaptation: bool = True,
    ) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                            ("trust_coefficient", trust_coefficient)):
            if value < 0.0:
                raise ValueError(f"LARS {name} must be >= 0, got {value}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, layer_adaptation=layer_adaptation)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            decay, momentum = group["weight_decay"], group["momentum"]
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                grad = weight.grad
                if grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                # u = g + decay * w is never materialised: a fresh parameter-sized tensor per step
                # costs more than the whole update on a CPU (page faults on every allocation).
                # ||u||^2 = ||g||^2 + 2 decay <g, w> + decay^2 ||w||^2, and v += lr*trust*g + lr*trust*decay*w.
                step_size = torch.full((), group["lr"], dtype=weight.dtype, device=weight.device)
                if group["layer_adaptation"]:
                    weight_norm = torch.linalg.vector_norm(weight)
                    grad_norm = torch.linalg.vector_norm(grad)
                    inner = torch.dot(grad.reshape(-1), weight.reshape(-1))
                    update_norm = (grad_norm.square() + 2 * decay * inner + decay**2 * weight_norm.square()).clamp_min(0).sqrt()
                    # torch.where keeps this on the device: no host sync per tensor.
                    trust = torch.where((weight_norm > 0) & (update_norm > 0),
                                        group["trust_coefficient"] * weight_norm / update_norm, torch.ones_like(weight_norm))
                    step_size = step_size * trust
                state = self.state[weight]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(weight)
                velocity = state["momentum_buffer"]
                velocity.mul_(momentum).addcmul_(grad, step_size)
                if decay:
                    velocity.addcmul_(weight, step_size * decay)
                weight.sub_(velocity)
        return loss


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, base_lr: float = 1.0, final_lr: float = 0.0
) -> float:
    """Learning rate at ``step``: linear warm-up from 0 to ``base_lr`` over ``warmup_steps`` (SimCLR,
    Goyal et al. 2017), then a half-cosine from ``base_lr`` down to ``final_lr`` at ``total_steps``
    (Loshchilov & Hutter 2017, no restarts); ``final_lr`` after. With ``base_lr=1`` it is the
    multiplier ``LambdaLR`` wants.

    ``lr(0) = 0``, ``lr(warmup_steps) = base_lr``, ``lr(total_steps) = final_lr``.
    """
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got {total_steps=}, {warmup_steps=}"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_lr + (base_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: Optimizer, total_steps: int, warmup_steps: int, final_lr_ratio: float = 0.0
) -> LambdaLR:
    """A ``LambdaLR`` stepping every group's lr along :func:`warmup_cosine` from its own ``lr``
    (the peak) to ``final_lr_ratio * lr``; groups marked ``fixed_lr`` stay at their peak. Call
    ``scheduler.step()`` after each optimiser step.

    Resumable: its ``state_dict`` holds the step count (``last_epoch``) and plain numbers only
    (the multiplier is a ``functools.partial`` of a module-level function, saved as an empty dict),
    so a checkpoint stores it as JSON (``multissl.checkpoint``); the shape of the schedule comes
    from the arguments, i.e. from the recipe of the resumed run.
    """
    warmup_cosine(0, total_steps, warmup_steps)  # validate the arguments now, not at the first step
    multiplier = functools.partial(
        warmup_cosine, total_steps=total_steps, warmup_steps=warmup_steps, base_lr=1.0, final_lr=final_lr_ratio
    )
    constant = functools.partial(_constant, 1.0)
    return LambdaLR(optimizer, [constant if group.get("fixed_lr") else multiplier for group in optimizer.param_groups])


def _constant(value: float, step: int) -> float:
    return value


OPTIMIZERS = ("adamw", "sgd", "lars")


def build_optimizer(
    name: str,
    params_groups: Iterable[Any],
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    trust_coefficient: float = 0.001,
) -> Optimizer:
    """Build ``name`` in :data:`OPTIMIZERS` over ``params_groups`` (from :func:`parameter_groups`,
    or plain parameters). ``weight_decay`` is the default for groups that do not set their own;
    ``momentum`` applies to SGD and LARS, ``betas`` to AdamW, ``trust_coefficient`` to LARS."""
    key = name.lower()
    if key == "adamw":
        return torch.optim.AdamW(params_groups, lr=lr, betas=betas, weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(params_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if key == "lars":
        return LARS(params_groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                    trust_coefficient=trust_coefficient)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
