"""Random draws from the engine's generator only, delivered on the batch's device.

Every random number of a view comes from the ``torch.Generator`` the engine passes (seeded from
seed, step and rank), so a resumed run draws exactly what an uninterrupted one did. Numbers are drawn
on the generator's own device (a CPU generator serves a CUDA batch) and then moved.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["uniform", "bernoulli", "randint", "normal", "random_permutations", "gamma", "beta"]


def uniform(generator: torch.Generator, shape: tuple[int, ...], device: torch.device,
            low: float = 0.0, high: float = 1.0) -> Tensor:
    """Float32 draws from U[low, high) of ``shape``."""
    values = torch.rand(shape, generator=generator, device=generator.device)
    return values.mul_(high - low).add_(low).to(device)


def bernoulli(generator: torch.Generator, probability: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Bool draws, True with ``probability`` (always drawn, so the stream does not depend on it)."""
    return uniform(generator, shape, device) < probability


def randint(generator: torch.Generator, high: int, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Long draws from {0, ..., high - 1}."""
    return torch.randint(high, shape, generator=generator, device=generator.device).to(device)


def normal(generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Standard normal float32 draws."""
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def random_permutations(generator: torch.Generator, rows: int, length: int, device: torch.device) -> Tensor:
    """Long [rows, length]: an independent uniform permutation of range(length) per row (argsort of noise)."""
    return uniform(generator, (rows, length), device).argsort(dim=1)


def gamma(generator: torch.Generator, concentration: float, shape: tuple[int, ...], device: torch.device,
          attempts: int = 16) -> Tensor:
    """Float32 Gamma(concentration, 1) draws by Marsaglia & Tsang's method (2000), vectorised with a
    fixed number of ``attempts`` per value (each one normal and one uniform draw, all drawn whatever
    is accepted, so the stream does not depend on the values), plus one uniform for the boost of a
    concentration below 1 (``Gamma(a) = Gamma(a + 1) U^(1/a)``). Every attempt is accepted with
    probability above 0.95, so all of them fail with probability below 0.05^16; such a value falls
    back to the mode-like ``d = a + 2/3`` of the method."""
    if not concentration > 0:
        raise ValueError(f"concentration must be positive, got {concentration}")
    boosted = concentration if concentration >= 1 else concentration + 1
    d = boosted - 1 / 3
    c = 1 / (9 * d) ** 0.5
    x = normal(generator, (*shape, attempts), device)
    u = uniform(generator, (*shape, attempts), device)
    boost = uniform(generator, shape, device)
    v = (1 + c * x) ** 3
    accept = (v > 0) & (u.clamp_min(1e-30).log() < 0.5 * x**2 + d - d * v + d * v.clamp_min(1e-30).log())
    first = accept.to(torch.uint8).argmax(dim=-1, keepdim=True)
    value = (d * v).gather(-1, first).squeeze(-1)
    value = torch.where(accept.any(dim=-1), value, torch.full_like(value, d))
    if concentration < 1:
        value = value * boost.clamp_min(1e-30) ** (1 / concentration)
    return value


def beta(generator: torch.Generator, alpha: float, beta_: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Float32 Beta(alpha, beta_) draws, ``X / (X + Y)`` of two :func:`gamma` draws."""
    x = gamma(generator, alpha, shape, device)
    y = gamma(generator, beta_, shape, device)
    return x / (x + y).clamp_min(1e-30)
