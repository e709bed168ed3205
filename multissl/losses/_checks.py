"""Argument checks shared by the loss functions (errors name the argument and its shape), and the
float32 guard they share."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch
from torch import Tensor

_Loss = TypeVar("_Loss", bound=Callable)


def float32_math(loss: _Loss) -> _Loss:
    """Run ``loss`` with autocast off: under bf16 autocast its similarity matmuls would run in bf16,
    whose 8-bit mantissa costs ~1e-2 on logits scaled by 1 / temperature (0.04 in DINO), and
    nearest-neighbour distances (KoLeo) lose digits too."""

    @functools.wraps(loss)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return loss(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def check_float(name: str, tensor: Tensor, dims: int | tuple[int, ...]) -> None:
    """Raise ValueError unless ``tensor`` is floating point with ``dims`` dimensions."""
    allowed = (dims,) if isinstance(dims, int) else dims
    if not isinstance(tensor, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{name} must be {want}, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {tensor.dtype} (shape {tuple(tensor.shape)})")


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")


def check_same_dim(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Last (feature) dimensions must agree."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must share the feature dimension"
        )


def check_rows(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """First (batch) dimensions must agree."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same batch size")


def check_labels(name: str, labels: Tensor, rows: int) -> None:
    if labels.dim() != 1 or labels.shape[0] != rows or labels.is_floating_point():
        raise ValueError(
            f"{name} must be an integer tensor of shape ({rows},), got {labels.dtype} {tuple(labels.shape)}"
        )


def check_positive(name: str, value: float | Tensor) -> None:
    """Raise ValueError unless ``value`` is a positive finite number or a 0-d floating tensor.

    A tensor's value is not read (that would synchronise an accelerator); only its shape and dtype.
    """
    if isinstance(value, Tensor):
        if value.dim() != 0 or not value.is_floating_point():
            raise ValueError(
                f"{name} must be a number or a 0-d floating tensor, got {value.dtype} {tuple(value.shape)}"
            )
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number or a 0-d floating tensor, got {type(value).__name__}")
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"{name} must be positive and finite, got {value}")


def check_mask(name: str, mask: Tensor, shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``mask`` is a bool tensor of exactly ``shape``."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(shape):
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a bool tensor of shape {tuple(shape)}, got {got}")


# --- added for similarity / redundancy / metric / reconstruction losses ---


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype loss math runs in: float64 if any input is float64, else float32 (bf16/fp16 upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_float_min_dims(name: str, tensor: Tensor, min_dims: int) -> None:
    """Raise ValueError unless ``tensor`` is floating point with at least ``min_dims`` dimensions."""
    if not isinstance(tensor, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < min_dims:
        raise ValueError(f"{name} must have at least {min_dims} dimensions, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {tensor.dtype} (shape {tuple(tensor.shape)})")


def check_non_negative(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number >= 0 (margins, weights, penalties)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
