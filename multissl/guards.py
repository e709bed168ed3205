"""Checks that stop a run which could only hang or train on nothing, before or while it trains.

At start-up (:func:`check_batch_size`, :func:`check_enough_rows`): every objective's smallest
batch (``Objective.min_batch_size``, on the global batch: the losses gather across processes),
two rows per process under per-process batch norm, and at least one global batch of data when
``train.drop_last`` is on (otherwise an epoch yields no batch and the loop would wait forever).

While training (:class:`BatchGuard`): a micro batch that bad-sample skips (or a short last
batch) left too small for an objective, or empty on some process, is skipped by every process
together and counted; too many such batches in a row stop the run with a message.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from multissl.config import RecipeError

__all__ = ["NotEnoughDataError", "check_batch_size", "check_enough_rows", "BatchGuard", "batch_rows",
           "smallest_batches"]


class NotEnoughDataError(RecipeError):
    """The data cannot fill the batches the recipe asks for; the message says how many rows there
    are, what was needed, and the fix."""


def smallest_batches(objectives: dict[str, type], model: nn.Module | None = None) -> tuple[int, int, str]:
    """(smallest global batch, smallest batch per process, why) for objectives (key -> class)
    and, when given, the built model (its batch-norm layers)."""
    global_min, why = 1, ""
    for key, cls in objectives.items():
        need = int(getattr(cls, "min_batch_size", 1))
        if need > global_min:
            global_min, why = need, f"objective {key!r} needs at least {need} rows per batch"
    local_min = 1
    if model is not None:
        from multissl.modules.normalization import GlobalBatchNorm

        for name, module in model.named_modules():
            if isinstance(module, GlobalBatchNorm):
                if global_min < 2:
                    global_min, why = 2, f"batch-norm layer {name!r} needs at least 2 rows per batch"
            elif isinstance(module, nn.BatchNorm1d) and local_min < 2:
                local_min = 2
                why = (why + "; " if why else "") + (
                    f"batch-norm layer {name!r} normalises over each process's rows and needs at least 2 of them")
    return global_min, local_min, why


def check_batch_size(recipe: Any, processes: int, source: str, model: nn.Module | None = None) -> tuple[int, int]:
    """Refuse a recipe whose batch is smaller than an objective (or a batch-norm layer) is defined
    for; returns (smallest global batch, smallest per-process batch)."""
    from multissl.objectives import objective_class

    classes = {spec.name: objective_class(spec.name) for spec in recipe.objectives}
    global_min, local_min, why = smallest_batches(classes, model)
    batch = recipe.train.batch_size
    if batch * processes < global_min or batch < local_min:
        need = max(local_min, -(-global_min // processes))
        raise RecipeError(f"key 'train.batch_size' is {batch} on {processes} process(es), too small: {why}; "
                          f"set train.batch_size={need} or more", "train.batch_size", source)
    return global_min, local_min


def check_enough_rows(rows: int | None, recipe: Any, processes: int, source: str) -> None:
    """With ``drop_last`` an epoch of fewer rows than one global batch yields nothing: stop now."""
    batch = recipe.train.batch_size
    if rows is None or not recipe.train.drop_last or rows >= batch * processes:
        return
    where = recipe.data.path + (f" (data.limit {recipe.data.limit})" if recipe.data.limit else "")
    raise NotEnoughDataError(
        f"the data has {rows} row(s) ({where}), fewer than one global batch of {batch * processes} "
        f"(train.batch_size {batch} x {processes} process(es)), and train.drop_last is on, so no batch can be "
        f"formed: set train.batch_size={max(1, rows // processes)} or less, add data, or raise data.limit",
        "train.batch_size", source)


def batch_rows(raw: dict[str, Any]) -> int:
    """Rows of a collated multi-domain batch: the smallest leading dimension of its tensors (every
    tensor of a ``RawBatch`` leads with the batch)."""
    sizes = []

    def walk(value: Any) -> None:
        if isinstance(value, Tensor):
            if value.dim() >= 1:
                sizes.append(int(value.shape[0]))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(raw)
    return min(sizes) if sizes else 0


class BatchGuard:
    """Decides, the same way on every process, whether a micro batch can be trained on."""

    def __init__(self, global_min: int, local_min: int, max_in_row: int, active: bool) -> None:
        self.global_min, self.local_min = global_min, max(1, local_min)
        self.max_in_row = max_in_row
        self.active = active  # only skips or a short last batch can shrink a batch
        self.in_row = 0

    def trainable(self, raw: dict[str, Any], accelerator: Any) -> tuple[bool, int]:
        """(whether to train on this micro batch, rows it has on this process). Raises when more
        than ``max_in_row`` batches in a row were too small."""
        rows = batch_rows(raw)
        if not self.active:
            return True, rows
        numbers = torch.tensor([float(rows), float(rows < self.local_min)], device=accelerator.device)
        if accelerator.num_processes > 1:
            numbers = accelerator.reduce(numbers, reduction="sum")
        total, short = int(numbers[0].item()), int(numbers[1].item())
        if total >= self.global_min and short == 0:
            self.in_row = 0
            return True, rows
        self.in_row += 1
        if self.in_row > self.max_in_row:
            raise NotEnoughDataError(
                f"{self.in_row} batches in a row had too few usable rows (the last: {total} over all processes, "
                f"at least {self.global_min} needed, and {self.local_min} per process): most samples are being "
                "skipped as bad; fix the data (the skipped samples are named in log.jsonl), or raise "
                "train.max_skipped_batches_in_row", "train.max_skipped_batches_in_row")
        return False, rows
