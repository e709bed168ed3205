"""Random draws from the engine's generator only, delivered on the batch's device.

Every random number of a view comes from the ``torch.Generator`` the engine passes (seeded from
seed, step and rank), so a resumed run draws exactly what an uninterrupted one did. Numbers are drawn
on the generator's own device (a CPU generator serves a CUDA batch) and then moved.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["uniform", "bernoulli", "randint", "normal", "random_permutations"]


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
