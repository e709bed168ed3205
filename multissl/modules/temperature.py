"""Softmax temperatures: a learnable one in CLIP's parameterisation (Radford et al. 2021, sec. 2.5)
and the scheduled teacher temperature of DINO and iBOT."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LearnableTemperature", "warmup_temperature"]


class LearnableTemperature(nn.Module):
    """The logit scale ``s = exp(log_scale)``, i.e. temperature ``tau = 1 / s``; logits are
    ``s * cos_sim = cos_sim / tau``.

    CLIP learns the log of the scale ("directly optimized during training as a log-parameterized
    multiplicative scalar"), initialised to the equivalent of ``tau = 0.07`` (``s = 1 / 0.07``), and
    clips it so that logits are never scaled by more than 100. Here :attr:`scale` is clamped at
    ``max_scale`` (to float rounding) in the forward, where no gradient flows while the parameter
    sits above the bound, and :meth:`clamp_` clamps the parameter itself, as open_clip does after
    every optimiser step, so the parameter never drifts above the bound and a gradient that wants a
    lower scale acts at once.

    ``log_scale`` is a 0-d parameter: it is saved with the model and resumed with it, and
    :func:`multissl.optim.parameter_groups` keeps it out of weight decay and LARS adaptation (CLIP
    applies no decay to it; decaying a log-scale would pull the temperature towards 1).
    ``forward()`` returns the clamped scale, a 0-d tensor.
    """

    def __init__(self, initial_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        if not 0.0 < initial_temperature or not max_scale > 0.0:
            raise ValueError(f"initial_temperature and max_scale must be > 0, got {initial_temperature}, {max_scale}")
        if 1.0 / initial_temperature > max_scale:
            raise ValueError(f"initial scale 1/{initial_temperature} exceeds max_scale={max_scale}")
        self.max_scale = max_scale
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / initial_temperature)))

    def _log_bound(self) -> Tensor:
        # In the parameter's own dtype, so a parameter clamped by clamp_ sits exactly on the bound
        # and keeps its full gradient there (torch.clamp against a float64 bound, or at a tie with a
        # tensor bound, would zero or halve it).
        return torch.full_like(self.log_scale, math.log(self.max_scale))

    @property
    def scale(self) -> Tensor:
        bound = self._log_bound()
        return torch.where(self.log_scale <= bound, self.log_scale, bound).exp()

    @property
    def temperature(self) -> Tensor:
        return 1.0 / self.scale

    def forward(self) -> Tensor:
        return self.scale

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the parameter to ``log(max_scale)`` in place (call after the optimiser step)."""
        self.log_scale.copy_(torch.minimum(self.log_scale, self._log_bound()))

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exempt from weight decay (timm's convention, read by parameter_groups)."""
        return {"log_scale"}

    def extra_repr(self) -> str:
        return f"max_scale={self.max_scale}"


def warmup_temperature(step: Tensor, warmup_steps: int, start: float, end: float) -> Tensor:
    """DINO's teacher temperature warm-up (Caron et al. 2021, section 4.2 and ``main_dino.py``: a
    linear ramp from ``warmup_teacher_temp`` to ``teacher_temp`` over the first epochs, constant
    after), per optimiser step: ``start + (end - start) * min(step / warmup_steps, 1)``; 0 warm-up
    steps is ``end`` throughout. ``step`` is a 0-d tensor (an objective's step buffer), so the value
    stays on the device with no host sync. The reference ramps per epoch with ``np.linspace``."""
    if warmup_steps <= 0:
        return torch.full((), float(end), device=step.device)
    progress = (step.to(torch.float32) / warmup_steps).clamp(max=1.0)
    return start + (end - start) * progress
