"""Exponential-moving-average (momentum) copies of a network: MoCo's key encoder, BYOL's target,
DINO's teacher. One class, :class:`MomentumEncoder`, with its schedule.

MoCo (He et al. 2020, eq. 2) and BYOL (Grill et al. 2020, sec. 3.1) keep a second network whose
weights trail the online network's:  ``theta_target <- m * theta_target + (1 - m) * theta_online``.
BYOL anneals ``m`` from 0.996 to 1 over training with :func:`cosine_momentum`; MoCo keeps it fixed
(0.999) and MoCo v3 uses the same cosine schedule from 0.99; DINO the cosine from 0.996. I-JEPA
(0.996 -> 1 over the run) and data2vec (0.999 -> 0.9999 over its first ``ema_anneal_end_step``
updates, then constant) anneal linearly: :func:`linear_momentum`.

What is averaged: every parameter and every floating-point buffer (batch-norm running mean and
variance, so the target's eval-mode statistics trail the online ones too). Integer buffers (BN's
``num_batches_tracked``, position ids) cannot be averaged and are copied.

Under DDP: the online parameters are identical on every rank after the gradient all-reduce, and
every rank applies the same update with the same momentum, so the target parameters stay identical
without any communication. Floating buffers are per-rank statistics in the online network (each rank
normalises its own sub-batch); DDP's ``broadcast_buffers=True`` (its default) re-syncs all buffers of
the wrapped module from rank 0 before each forward, the target's included when it lives inside the
wrapped objective, and ``SyncBatchNorm`` keeps them identical outright. The target's parameters do
not require gradients, so DDP's reducer ignores them.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MomentumEncoder", "momentum_update", "cosine_momentum", "linear_momentum"]


def _paired_tensors(target: nn.Module, online: nn.Module) -> tuple[list, list, list, list]:
    """(target, online) floating tensors and (target, online) other buffers, matched by name."""
    target_params, online_params = dict(target.named_parameters()), dict(online.named_parameters())
    target_buffers, online_buffers = dict(target.named_buffers()), dict(online.named_buffers())
    for kind, mine, theirs in (("parameters", target_params, online_params), ("buffers", target_buffers, online_buffers)):
        if mine.keys() != theirs.keys():
            missing = sorted(set(mine) ^ set(theirs))[:5]
            raise ValueError(
                f"momentum target and online module have different {kind} (first differences: {missing}); "
                "pass the unwrapped online module (accelerator.unwrap_model), the one the target was copied from"
            )
    floats_target, floats_online, others_target, others_online = [], [], [], []
    for name, tensor in list(target_params.items()) + list(target_buffers.items()):
        source = online_params[name] if name in online_params else online_buffers[name]
        if tensor.shape != source.shape:
            raise ValueError(f"momentum target {name} has shape {tuple(tensor.shape)}, online has {tuple(source.shape)}")
        if tensor.is_floating_point():
            floats_target.append(tensor)
            floats_online.append(source.to(tensor.dtype))
        else:
            others_target.append(tensor)
            others_online.append(source)
    return floats_target, floats_online, others_target, others_online


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: ``t <- momentum * t + (1 - momentum) * o`` for every parameter and floating buffer
    of ``target`` (matched by name with ``online``); integer buffers are copied.

    ``momentum=1`` leaves the floating tensors unchanged, ``momentum=0`` copies ``online``.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    floats_target, floats_online, others_target, others_online = _paired_tensors(target, online)
    if floats_target:
        # Two fused multi-tensor kernels instead of one small kernel per tensor.
        torch._foreach_mul_(floats_target, momentum)
        torch._foreach_add_(floats_target, floats_online, alpha=1.0 - momentum)
    for mine, theirs in zip(others_target, others_online):
        mine.copy_(theirs)


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's target decay rate (Grill et al. 2020, sec. 3.2):
    ``tau_k = final - (final - base) * (cos(pi * k / K) + 1) / 2``, which with ``final=1`` is the
    paper's ``1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``. ``tau_0 = base``, ``tau_K = final``;
    steps past ``K`` stay at ``final``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    progress = min(step, total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def linear_momentum(step: int, total_steps: int, base: float = 0.999, final: float = 0.9999) -> float:
    """Linear annealing from ``base`` at step 0 to ``final`` at step ``total_steps``, constant after:
    data2vec's ``get_annealed_rate`` (fairseq ``examples/data2vec``) and I-JEPA's momentum scheduler
    (``src/train.py``: ``ema[0] + i (ema[1] - ema[0]) / (ipe * num_epochs)``)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return base + (final - base) * min(step, total_steps) / total_steps


class MomentumEncoder(nn.Module):
    """A frozen EMA copy of ``online`` with its momentum schedule: MoCo's key encoder, BYOL's
    target, DINO's teacher, DeepCluster's labeler.

    ``momentum`` is the EMA rate at step 0; ``final_momentum=None`` keeps it constant (MoCo v2:
    0.999), a value anneals it with :func:`cosine_momentum` (``schedule="cosine"``) or
    :func:`linear_momentum` (``"linear"``) to ``final_momentum`` at the last step (BYOL: 0.996 -> 1,
    MoCo v3: 0.99 -> 1, I-JEPA linearly 0.996 -> 1), or at step ``anneal_steps`` when given, after
    which it stays there (data2vec). Call :meth:`follow` from
    ``Objective.on_step_end(step, total_steps)``: after optimiser step ``step`` (1-based) it applies
    the rate of step ``step``, which is what MoCo v3 applies before the forward of that (0-based)
    iteration; :meth:`update` applies a rate given explicitly (0 copies the online network). The
    rate last applied is the persistent buffer ``momentum`` (0-d float32), logged and checkpointed
    with the weights; the schedule itself is a pure function of the step.

    Register it as a submodule of the objective that owns the online network: its weights are then
    in the objective's ``state_dict`` (a resumed run continues from the same target), and
    ``.train()`` / ``.eval()`` on the objective reach it as they reach the online network. Its
    parameters have ``requires_grad=False``: its forward runs under ``no_grad``,
    :func:`multissl.optim.parameter_groups` leaves them out, and optimisers skip them even when
    handed ``objective.parameters()`` because they never receive a ``.grad``.
    """

    momentum: Tensor

    def __init__(self, online: nn.Module, momentum: float = 0.999, final_momentum: float | None = None,
                 schedule: str = "cosine", anneal_steps: int | None = None) -> None:
        super().__init__()
        for name, value in (("momentum", momentum), ("final_momentum", final_momentum)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if schedule not in ("cosine", "linear"):
            raise ValueError(f"momentum schedule must be 'cosine' or 'linear', got {schedule!r}")
        if anneal_steps is not None and anneal_steps < 1:
            raise ValueError(f"anneal_steps must be >= 1 or None, got {anneal_steps}")
        self.module = copy.deepcopy(online)
        self.module.requires_grad_(False)
        self.base_momentum, self.final_momentum = momentum, final_momentum
        self.schedule, self.anneal_steps = schedule, anneal_steps
        self.register_buffer("momentum", torch.tensor(momentum, dtype=torch.float32))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def rate(self, step: int, total_steps: int) -> float:
        """The EMA rate of optimiser step ``step`` out of ``total_steps``."""
        if self.final_momentum is None:
            return self.base_momentum
        anneal = linear_momentum if self.schedule == "linear" else cosine_momentum
        return anneal(step, self.anneal_steps or total_steps, self.base_momentum, self.final_momentum)

    @torch.no_grad()
    def follow(self, online: nn.Module, step: int, total_steps: int) -> None:
        """One EMA step at the scheduled rate of optimiser step ``step`` (see the class doc)."""
        self.update(online, self.rate(step, total_steps))

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        """EMA step towards ``online`` (the unwrapped module it was copied from; see
        :func:`momentum_update`); also mirrors each submodule's train/eval mode, so the target
        normalises with batch statistics exactly when the online network does (MoCo and BYOL run
        both networks in training mode)."""
        momentum_update(self.module, online, momentum)
        for mine, theirs in zip(self.module.modules(), online.modules()):
            mine.training = theirs.training
        self.momentum.fill_(momentum)

    def extra_repr(self) -> str:
        schedule = "constant" if self.final_momentum is None else f"{self.schedule} to {self.final_momentum}"
        if self.final_momentum is not None and self.anneal_steps is not None:
            schedule += f" over {self.anneal_steps} steps"
        return f"momentum={self.base_momentum}, schedule={schedule}"
