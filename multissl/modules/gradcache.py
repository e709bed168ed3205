"""GradCache: a contrastive batch as large as you like, in the memory of a small one.

Gao, Zhang, Han, Callan 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup" (arXiv:2101.06983, section 3). An in-batch contrastive loss couples every row with every
other, so the batch cannot be split into micro-batches whose gradients add up (gradient
accumulation shrinks the set of negatives). GradCache splits the *encoder* instead:

    1. encode the batch chunk by chunk without a graph            -> representations r [B, D]
    2. compute the loss on all of r (heads, gathers, queues) and backward to d loss / d r
    3. re-encode each chunk with a graph, backward d loss / d r_chunk through it

Peak memory is one chunk's activations plus the [B, D] representations, whatever B is. The
gradients equal those of the full batch because the loss only sees the encoder through r.

**The seam: an opt-in wrapper.** An objective that offers GradCache takes a ``chunk_size`` option
and, when it is set, encodes through a :class:`GradCache` of its encoder instead of the encoder
itself; unset, the default path never meets this module. The wrapper returns the same
``Features.pooled`` (and nothing else), computed chunk by chunk. Steps 1 and 3 live in one autograd
function whose inputs are the encoder's trainable parameters: its forward is step 1, and its
backward, reached during the engine's ordinary ``accelerator.backward(loss)`` right after the loss
has produced d loss / d r (step 2), runs step 3 and *returns* the parameter gradients summed over
chunks. Autograd then accumulates each parameter's gradient exactly once, so DistributedDataParallel
sees one gradient-ready event per parameter as with any module. (Calling ``backward`` once per
chunk inside the hook, as reentrant checkpointing does, fires DDP's hooks once per chunk: with torch
2.14 and no ``static_graph`` the averaged gradients then come out silently wrong, measured on a toy
encoder in two gloo processes.) The engine, the recipe format and the loss functions need no change.

**Randomness.** Each chunk's RNG state (CPU and the chunk's device) is saved before its graph-free
pass and restored for its re-run, as the paper's ``RandContext`` does, so dropout draws the same
masks twice: the gradient is that of the loss that was computed. The caller's RNG stream continues
as if the re-runs had not happened. Autocast settings of the forward are re-entered in the re-run.

**Limits.** Rows must not interact inside the encoder: batch norm in training mode would normalise
each chunk with its own statistics (and a :class:`~multissl.modules.GlobalBatchNorm` would hang when
ranks run different numbers of chunks), so encoders with batch norm are refused in training mode
(ViT, ConvNeXt, BERT and wav2vec2 use per-row normalisation and are fine; heads with batch norm run
on the full batch in step 2 and are fine too). Only ``Features.pooled`` is cached: objectives that
read ``sequence`` are not in-batch contrastive and need no GradCache. Each chunk's encoder runs twice
(about +1 forward of compute, as activation checkpointing).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import get_device_states, set_device_states

from multissl.features import Encoder, Features

__all__ = ["GradCache", "grad_cache_or_none", "grad_cached_pooled", "split_rows"]


def split_rows(inputs: dict[str, Any], chunk_size: int) -> list[dict[str, Any]]:
    """Split an encoder's inputs (tensors with the batch first) into chunks of ``chunk_size`` rows."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    rows = {key: value.shape[0] for key, value in inputs.items() if isinstance(value, Tensor) and value.dim() > 0}
    if not rows:
        raise ValueError(f"encoder inputs hold no batched tensor to split (keys: {sorted(inputs)})")
    if len(set(rows.values())) > 1:
        raise ValueError(f"encoder inputs disagree on the batch size: {rows}")
    batch = next(iter(rows.values()))
    return [
        {key: value[start : start + chunk_size] if key in rows else value for key, value in inputs.items()}
        for start in range(0, batch, chunk_size)
    ]


def _check_rows_independent(encoder: nn.Module) -> None:
    for name, module in encoder.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"GradCache (chunk_size) needs an encoder whose rows do not interact, but {name or 'the encoder'} "
                f"is a {type(module).__name__} in training mode: each chunk would be normalised with its own "
                "statistics. Use an encoder without batch norm (ViT, ConvNeXt, BERT, wav2vec2) or chunk_size: null"
            )


class _RandomState:
    """The CPU and device RNG states at one moment, to replay a chunk's dropout exactly."""

    def __init__(self, tensors: list[Tensor]) -> None:
        self.cpu = torch.get_rng_state()
        one_per_device = list({t.device: t for t in tensors}.values())
        self.devices, self.device_states = get_device_states(*one_per_device)
        self.device_type = one_per_device[0].device.type

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.devices:
            set_device_states(self.devices, self.device_states, device_type=self.device_type)


class _AutocastState:
    """Whether (and in which dtype) autocast was on for the forward's device type and the CPU."""

    def __init__(self, device_type: str) -> None:
        self.settings = {
            kind: (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
            for kind in {device_type, "cpu"}
        }

    def contexts(self) -> list[Any]:
        return [torch.autocast(kind, dtype=dtype, enabled=enabled) for kind, (enabled, dtype) in self.settings.items()]


class _GradCache(torch.autograd.Function):
    """forward: step 1 (graph-free chunks); backward: step 3, returning the parameters' gradients."""

    @staticmethod
    def forward(ctx, encode: Callable[[dict[str, Any]], Tensor], chunks: list[dict[str, Any]],  # type: ignore[override]
                preserve_rng_state: bool, *parameters: Tensor) -> Tensor:
        tensors = [value for chunk in chunks for value in chunk.values() if isinstance(value, Tensor)]
        ctx.encode, ctx.chunks, ctx.preserve_rng_state = encode, chunks, preserve_rng_state
        ctx.device_type = tensors[0].device.type
        ctx.autocast = _AutocastState(ctx.device_type)
        ctx.random_states = []
        ctx.save_for_backward(*parameters)
        outputs = []
        for chunk in chunks:  # autograd.Function.forward already runs without a graph
            ctx.random_states.append(_RandomState(tensors) if preserve_rng_state else None)
            outputs.append(encode(chunk))
        return torch.cat(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_representations: Tensor):  # type: ignore[override]
        parameters = ctx.saved_tensors
        totals: list[Tensor | None] = [None] * len(parameters)
        devices = ctx.random_states[0].devices if ctx.preserve_rng_state else []
        start = 0
        # fork_rng: the re-runs draw random numbers; the caller's stream must not notice them
        with torch.random.fork_rng(devices=devices, enabled=ctx.preserve_rng_state, device_type=ctx.device_type):
            for chunk, state in zip(ctx.chunks, ctx.random_states):
                if state is not None:
                    state.restore()
                with torch.enable_grad(), contextlib.ExitStack() as stack:
                    for context in ctx.autocast.contexts():
                        stack.enter_context(context)
                    representations = ctx.encode(chunk)
                rows = representations.shape[0]
                grads = torch.autograd.grad(representations, parameters, grad_representations[start : start + rows],
                                            allow_unused=True)
                start += rows
                for index, grad in enumerate(grads):
                    if grad is not None:
                        totals[index] = grad if totals[index] is None else totals[index].add_(grad)
        return (None, None, None, *totals)


def grad_cached_pooled(encoder: Encoder, inputs: dict[str, Any], chunk_size: int,
                       preserve_rng_state: bool = True) -> Tensor:
    """``encoder(**inputs).pooled`` [B, D], computed ``chunk_size`` rows at a time with GradCache.

    Value and gradients (for every trainable encoder parameter) equal the unchunked call's when
    rows do not interact in the encoder (see the module doc). Without a graph to build (no grad
    mode, or no trainable parameter) the chunks simply run one after another.
    ``preserve_rng_state=False`` skips the RNG replay: only for encoders without randomness.
    """
    chunks = split_rows(inputs, chunk_size)
    parameters = [p for p in encoder.parameters() if p.requires_grad]
    if not torch.is_grad_enabled() or not parameters:
        return torch.cat([encoder(**chunk).pooled for chunk in chunks])
    if encoder.training:
        _check_rows_independent(encoder)
    return _GradCache.apply(lambda chunk: encoder(**chunk).pooled, chunks, preserve_rng_state, *parameters)


class GradCache:
    """Calls ``encoder`` chunk by chunk with GradCache: ``GradCache(encoder, 64)(**inputs)`` is
    ``Features(pooled=encoder(**inputs).pooled)`` in the memory of 64 rows (:func:`grad_cached_pooled`).

    A plain callable, not a module: the encoder stays registered where its objective put it, so
    parameter names (and checkpoints) are the same with and without GradCache. An objective that
    offers it holds ``GradCache(encoder, chunk_size) if chunk_size else None`` and encodes with
    ``grad_cache or encoder``: the default path never enters this module.
    """

    def __init__(self, encoder: Encoder, chunk_size: int) -> None:
        split_rows({"check": torch.zeros(1)}, chunk_size)  # the same check, at build time
        self.encoder, self.chunk_size = encoder, chunk_size

    def __call__(self, **inputs: Tensor) -> Features:
        return Features(pooled=grad_cached_pooled(self.encoder, inputs, self.chunk_size))


def grad_cache_or_none(encoder: Encoder, chunk_size: int | None) -> GradCache | None:
    """A :class:`GradCache` of ``encoder`` when ``chunk_size`` is set, else None."""
    return None if chunk_size is None else GradCache(encoder, chunk_size)
