"""Shared machinery for objective tests: tiny setups, overfitting runs, checkpoint round trips,
and two-process equivalence. Every objective test uses these, so the checks live once.

Setups read files laid out as ../shared/data; callers pass the ``data_root`` fixture's path (the
synthetic tree of tests/fixture_data.py, always there), or any folder of that layout:

    image: 64 CIFAR-10-like images at 16 px, a tiny ConvNeXt or ViT
    audio: 32 FSDD-like recordings at 8 kHz, 0.5 s crops, a tiny wav2vec2
    text:  64 captions, a sentencepiece tokenizer trained on them, a tiny BERT
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import torch
from domains import DataConfig, EncoderConfig, build_domain
from multissl.domain import Domain
from multissl import distributed
from multissl.features import Encoder
from multissl.modules import convert_to_global_batchnorm
from multissl.objectives.base import Objective
from tests.dist import run_in_processes

__all__ = [
    "Setup",
    "tiny_setup",
    "raw_batch",
    "make_views",
    "overfit",
    "assert_state_round_trip",
    "slice_rows",
    "distributed_equivalence",
]


class Setup:
    """A domain with its loaded rows and a tiny encoder."""

    def __init__(self, domain: Domain, dataset: Any, encoder: Encoder) -> None:
        self.domain, self.dataset, self.encoder = domain, dataset, encoder


def tiny_setup(kind: str, data_root: Path, architecture: str | None = None, rows: int = 64,
               options: dict[str, Any] | None = None, seed: int = 0) -> Setup:
    """A tiny setup of one modality (see module doc). ``options`` update the domain config."""
    torch.manual_seed(seed)
    if kind == "image":
        domain = build_domain("image", {"image_size": 16, "normalization": "cifar10", **(options or {})})
        data = DataConfig(path=str(data_root / "image/cifar10/train-00000-of-00004.parquet"),
                          columns={"image": "img", "label": "label"}, limit=rows)
        encoder_config = EncoderConfig(architecture=architecture or "convnext", size="tiny")
    elif kind == "audio":
        domain = build_domain("audio", {"sample_rate": 8000, "crop_seconds": 0.5, "sequence_seconds": 0.5,
                                        "max_seconds": 1.0,
                                        "filename_pattern": r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav$",
                                        **(options or {})})
        data = DataConfig(path=str(data_root / "audio/fsdd/recordings"), columns={"label": "label"}, limit=rows)
        encoder_config = EncoderConfig(architecture=architecture or "wav2vec2", size="tiny")
    elif kind == "text":
        domain = build_domain("text", {"tokenizer": "train", "vocab_size": 300, "max_length": 32, **(options or {})})
        data = DataConfig(path=str(data_root / "text/corpus/multi30k_captions.txt"), limit=rows)
        encoder_config = EncoderConfig(architecture=architecture or "bert", size="tiny")
    else:
        raise ValueError(f"unknown setup kind {kind!r}")
    dataset = domain.load(data)
    encoder = domain.build_encoder(encoder_config)
    return Setup(domain, dataset, encoder)


def raw_batch(setup: Setup, batch_size: int, start: int = 0) -> dict[str, Any]:
    """Collate rows [start, start + batch_size) of the setup's dataset."""
    rows = [setup.dataset[i] for i in range(start, start + batch_size)]
    return setup.domain.collate(rows)


def make_views(objective: Objective, setups: list[Setup], batches: list[dict[str, Any]], seed: int) -> tuple:
    """The views the engine would build for ``objective`` at one step (one per domain it reads)."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        setup.domain.make_views(batch, request, generator)
        for setup, batch, request in zip(setups, batches, objective.view_requests())
    )


def overfit(objective: Objective, setups: list[Setup], batches: list[dict[str, Any]], steps: int = 30,
            lr: float = 1e-3, seed: int = 0) -> list[float]:
    """Train on one fixed batch (fresh views each step) with AdamW; returns the loss per step.

    Calls ``on_step_end`` after each step as the engine does (EMA, queues, schedules)."""
    torch.manual_seed(seed)
    objective.train()
    parameters = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        views = make_views(objective, setups, batches, seed=seed * 100_003 + step)
        out = objective(*views)
        if not torch.isfinite(out.loss):
            raise AssertionError(f"loss became {out.loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        objective.on_step_end(step + 1, steps)
        losses.append(float(out.loss.detach()))
    return losses


def assert_state_round_trip(objective: Objective, factory: Callable[[], Objective]) -> None:
    """Every parameter and persistent buffer (queues, EMA teachers, temperatures, prototypes) of a
    trained ``objective`` survives ``state_dict`` -> a freshly built one, exactly, and the fresh one
    then computes the same loss on the same views."""
    state = objective.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = factory()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=f"state {key!r} changed in the round trip")
    assert set(fresh.state_dict()) == set(state)


def slice_rows(value: Any, start: int, stop: int, rows: int) -> Any:
    """Rows [start, stop) of every tensor whose first dimension is the batch (``rows``)."""
    if isinstance(value, torch.Tensor):
        return value[start:stop] if value.dim() > 0 and value.shape[0] == rows else value
    if isinstance(value, dict):
        return {k: slice_rows(v, start, stop, rows) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(slice_rows(v, start, stop, rows) for v in value)
    return value


def _loss_and_grads(objective: Objective, views: tuple, steps: int = 1) -> dict[str, Any]:
    for _ in range(steps - 1):  # forwards that move state (centres, queues), as earlier steps would
        objective(*views)
    out = objective(*views)
    objective.zero_grad(set_to_none=True)
    out.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in objective.named_parameters() if p.grad is not None}
    buffers = {name: b.detach().clone() for name, b in objective.named_buffers() if b.is_floating_point()}
    return {"loss": out.loss.detach(), "grads": grads, "buffers": buffers}


def _rank_worker(factory: Callable[[], Objective], views: tuple, sizes: list[int], seed: int,
                 steps: int = 1) -> dict[str, Any]:
    torch.manual_seed(seed)
    objective = convert_to_global_batchnorm(factory())
    rank = distributed.rank()
    start = sum(sizes[:rank])
    local = slice_rows(views, start, start + sizes[rank], sum(sizes))
    torch.manual_seed(seed + 1)
    return _loss_and_grads(objective, local, steps)


def distributed_equivalence(factory: Callable[[], Objective], views: tuple, sizes: list[int],
                            seed: int = 0, atol: float = 1e-5, rtol: float = 1e-4, steps: int = 1) -> None:
    """Two gloo processes holding rows ``sizes[0]`` and ``sizes[1]`` of ``views`` give the loss and
    (after DDP's averaging) the parameter gradients one process gives on all of them.

    ``factory`` must build the same objective (same weights) every call: build it under a fixed
    seed. Batch norms become :class:`GlobalBatchNorm` on both sides, as ``train.global_batchnorm``
    does. Dropout must be off (eval-mode-free determinism is the caller's job: use configs without
    dropout). ``factory`` and everything it references must be importable at module level.
    ``steps`` > 1 runs that many forwards on the same views and compares the last one's loss and
    gradients, and every floating buffer after them: state a forward updates from the batch (DINO's
    centre, queues) must move as one process moves it.
    """
    torch.manual_seed(seed)
    single = convert_to_global_batchnorm(factory())
    torch.manual_seed(seed + 1)
    reference = _loss_and_grads(single, views, steps)
    results = run_in_processes(_rank_worker, factory, views, sizes, seed, steps)
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["loss"], reference["loss"], atol=atol, rtol=rtol,
                                   msg=f"rank {rank} loss differs from one process")
    for name, grad in reference["grads"].items():
        averaged = sum(r["grads"][name] for r in results) / len(results)
        torch.testing.assert_close(averaged, grad, atol=atol, rtol=rtol,
                                   msg=f"gradient of {name!r} differs from one process")
    if steps > 1:
        for rank, result in enumerate(results):
            for name, buffer in reference["buffers"].items():
                torch.testing.assert_close(result["buffers"][name], buffer, atol=atol, rtol=rtol,
                                           msg=f"rank {rank}: buffer {name!r} differs from one process")
