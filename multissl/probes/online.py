"""Online evaluation: is the encoder getting better while it trains? (recipe section ``evaluation``)

Loss and collapse telemetry say whether the objective is being optimised, not whether the encoder
is getting more useful. Every ``evaluation.every`` steps the engine calls
:meth:`OnlineEvaluator.maybe_evaluate`; on the main process it embeds a fixed labelled set with the
current encoder (frozen, eval mode, the domain's ``plain`` view) and logs

* ``online/knn_top1``: weighted kNN top-1 (Wu et al. 2018; cosine similarity, ``k`` = 20
  neighbours, votes ``exp(s / 0.07)``, :func:`multissl.probes.knn.knn_classify`), leave-one-out:
  every row is classified by its neighbours among the other rows, so all of them are scored and
  none is scored by a vote it took part in;
* ``online/linear_top1`` (``evaluation.linear``): a logistic-regression probe on the detached
  features (standardised, L2 ``linear_weight_decay``, L-BFGS), fit on one half of the rows and
  scored on the other, both ways (two-fold cross-fitting);
* ``online/seconds``, ``online/cpu_seconds``: what the evaluation took (its cost, beside the
  step time),

to ``log.jsonl``, the trackers (TensorBoard) and the run's ``curves.png``.

How this differs from solo-learn's online linear probe: solo-learn trains its classifier on the
detached features of every *training* batch (with their labels) and scores it on the validation
set. Here the probe is refit at each evaluation on the detached features of the labelled
evaluation rows. That needs no labels in the training data (self-supervised data usually has
none), costs nothing between evaluations, and keeps no state: a value depends only on the weights
at that step, so a resumed run logs exactly what an uninterrupted one would, without a classifier
or its optimiser in the checkpoint.

Contracts the engine relies on:

* It runs on the main process only. The other processes go on to their next step and wait there
  for the main process at the first collective; nothing here calls a collective (the encoder is the
  unwrapped module, in eval mode, so global / split batch norm normalise with running statistics).
  Sharded parameters (FSDP, DeepSpeed ZeRO-3) cannot be run by one process alone: the evaluation is
  then switched off, with a message.
* It leaves every random stream as it found it (``torch.random.fork_rng``): training with and
  without online evaluation is the same computation.
* Which rows, in which order, at which steps, are fixed by the recipe (seeded), never by timing.

Cost: one forward pass over at most ``max_rows`` rows (collated once and kept, when they fit in
``CACHE_BYTES``), a [N, N] similarity, two small L-BFGS fits and the curves PNG. The default
cadence (:func:`default_every`) is a tenth of the run, spaced further where embedding the rows
would cost more than 3% of the training forward passes in between, so that evaluating stays under
5% of a run (measured in ``bench/online_eval_cost.py``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from multissl.features import Encoder
from multissl.domain import move_to_device
from multissl.errors import DataError
from multissl.probes.knn import knn_classify
from multissl.views import ViewRequest

if TYPE_CHECKING:  # typed against the contracts; no concrete domain is imported
    from multissl.config import EvaluationConfig, Recipe
    from multissl.domain import Domain

__all__ = ["OnlineEvaluator", "knn_leave_one_out", "cross_fitted_linear_accuracy", "evaluation_steps", "split_held_out",
           "CACHE_BYTES", "HELD_OUT_SEED_OFFSET"]

#: collated evaluation batches are kept in memory when they take at most this many bytes
CACHE_BYTES = 512 * 2**20
#: the held-out rows are drawn with train.seed + this (a stream of its own)
HELD_OUT_SEED_OFFSET = 7_919


#: the default cadence keeps the rows embedded per evaluation within this share of the images a
#: run trains on in between, counted in forward passes (one training image is two views, forward
#: and backward: about six forward passes): 3%, so that with the kNN, the probe, the curves and
#: the evaluations at step 0 and at the end, evaluating stays under 5% of a run
COST_SHARE = 0.03
TRAINING_FORWARDS_PER_IMAGE = 6


def default_every(total_steps: int, rows: int | None = None, images_per_step: int | None = None) -> int:
    """The default cadence: a tenth of the run, and never so often that embedding ``rows`` costs
    more than :data:`COST_SHARE` of the training in between, counted in forward passes
    (``images_per_step`` rows trained on per optimiser step, all processes together)."""
    every = max(1, math.ceil(total_steps / 10))
    if rows is not None and images_per_step:
        every = max(every, math.ceil(rows / (COST_SHARE * TRAINING_FORWARDS_PER_IMAGE * images_per_step)))
    return every


def evaluation_steps(every: int | None, total_steps: int, rows: int | None = None,
                     images_per_step: int | None = None) -> tuple[int, set[int]]:
    """(the cadence, the set of steps evaluated): step 0, every multiple of ``every`` (None:
    :func:`default_every`) up to ``total_steps``, and ``total_steps`` itself."""
    every = every if every is not None else default_every(total_steps, rows, images_per_step)
    steps = set(range(0, total_steps + 1, every)) | {total_steps}
    return every, steps


def split_held_out(length: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Sorted row positions (train, held out) of a seeded draw of ``round(fraction * length)``
    rows (at least 2 held out, at least 1 left to train on)."""
    count = min(max(2, round(fraction * length)), length - 1)
    if count < 2 or length - count < 1:
        raise DataError(f"cannot hold out {fraction:g} of {length} rows for evaluation and train on the rest")
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed))
    held = order[:count].sort().values.tolist()
    train = order[count:].sort().values.tolist()
    return train, held


def knn_leave_one_out(features: Tensor, labels: Tensor, k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 accuracy of weighted kNN where each row is classified by the other rows."""
    return knn_classify(features, labels, features, labels, ks=(k,), temperature=temperature,
                        leave_one_out=True)[k]


def cross_fitted_linear_accuracy(features: Tensor, labels: Tensor, weight_decay: float = 1e-3, seed: int = 0,
                                 max_iter: int = 100) -> float:
    """Accuracy of a linear probe over all rows, each scored by a probe fit on the other half
    (rows split in two by a seeded permutation; standardised features, L-BFGS logistic regression
    with L2 ``weight_decay``, :func:`multissl.probes.classification.train_linear_classifier`)."""
    from multissl.probes.classification import train_linear_classifier

    features, labels = features.float(), labels.long()
    num_classes = int(labels.max()) + 1
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    halves = order[: len(order) // 2], order[len(order) // 2:]
    correct = 0
    for fit, score in (halves, halves[::-1]):
        classifier = train_linear_classifier(features[fit], labels[fit], num_classes, 1.0, weight_decay,
                                             optimizer="lbfgs", max_iter=max_iter, seed=seed)
        correct += int((classifier.predict(features[score]) == labels[score]).sum())
    return correct / len(labels)


def _nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


@dataclass
class _Rows:
    """The evaluation rows: collated batches kept in memory, or the rows to collate each time."""

    rows: Any
    batches: list[dict[str, Any]] | None
    count: int


class OnlineEvaluator:
    """Evaluates ``encoder`` (of ``domain``) on labelled ``rows`` at the steps of
    :func:`evaluation_steps`; see the module docstring. Build it with :meth:`build`."""

    def __init__(self, config: "EvaluationConfig", domain_key: str, encoder: Encoder, domain: "Domain" | None,
                 rows: Any, run_dir: Path, active: bool, seed: int = 0) -> None:
        self.config = config
        self.domain_key = domain_key
        self.encoder = encoder
        self.domain = domain
        self.run_dir = Path(run_dir)
        self.active = active
        self.seed = seed
        self.images_per_step = 1  # rows one process trains on per optimiser step (set by build)
        self.every: int | None = config.every
        self.seconds = 0.0  # wall seconds spent evaluating in this process (this session)
        self.cpu_seconds = 0.0
        self.evaluations = 0
        self._steps: set[int] | None = None
        self._rows = self._prepare(rows) if active else None

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, recipe: "Recipe", domains: dict[str, "Domain"], dataset: Any, encoders: dict[str, Encoder],
              is_main_process: bool, run_dir: str | Path | None = None) -> tuple["OnlineEvaluator", Any]:
        """The evaluator of ``recipe.evaluation`` and the dataset to train on (``dataset`` minus
        the held-out rows when ``held_out_fraction`` is set; the same split on every process).

        The evaluation rows are loaded by a copy of the run's domain (the copy keeps what loading
        the training data taught it, such as a trained tokenizer, and loading more data never
        changes the domain the training batches are collated by). Only the main process loads them.
        """
        config = recipe.evaluation
        key = config.domain or next(iter(recipe.domains))
        domain = copy.deepcopy(domains[key])
        rows = None
        if config.held_out_fraction is not None:
            from torch.utils.data import Subset

            sources = getattr(dataset, "datasets", None)
            if sources is None or key not in sources:
                raise DataError("evaluation.held_out_fraction needs the run's map-style rows (not streaming data)")
            train_rows, held = split_held_out(len(dataset), config.held_out_fraction,
                                              recipe.train.seed + HELD_OUT_SEED_OFFSET)
            source = sources[key]
            index = getattr(dataset, "index", {}).get(key)  # rows of a label-paired domain are looked up
            if index is not None:
                held = [int(index[i]) for i in held]
            rows = source.select(held) if is_main_process else None
            dataset = Subset(dataset, train_rows)
        elif is_main_process:
            rows = domain.load(config.data)
        evaluator = cls(config, key, encoders[key], domain, rows, Path(run_dir or recipe.output_dir),
                        active=is_main_process, seed=recipe.train.seed)
        evaluator.images_per_step = recipe.train.batch_size * recipe.train.gradient_accumulation
        return evaluator, dataset

    def _prepare(self, rows: Any) -> _Rows:
        if hasattr(rows, "column_names") and "label" not in rows.column_names:
            raise DataError(f"online evaluation needs labelled rows, but the {self.domain_key!r} rows have no 'label' "
                             f"column (columns: {rows.column_names}); map one with data.columns.label")
        if len(rows) > self.config.max_rows:
            keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(self.seed + 1))
            rows = rows.select(keep[: self.config.max_rows].sort().values.tolist())
        if len(rows) < 2:
            raise DataError(f"online evaluation needs at least 2 labelled rows, got {len(rows)}")
        batches: list[dict[str, Any]] = []
        size = 0
        for start in range(0, len(rows), self.config.batch_size):
            chunk = [rows[i] for i in range(start, min(start + self.config.batch_size, len(rows)))]
            batch = self.domain.collate(chunk)
            if batch.get("labels") is None:
                raise DataError(f"online evaluation needs labelled rows; the {self.domain_key!r} domain found no label "
                                 "in them (map a label column: evaluation.data.columns.label)")
            size += _nbytes(batch)
            if size > CACHE_BYTES:
                return _Rows(rows, None, len(rows))
            batches.append(batch)
        return _Rows(rows, batches, len(rows))

    def _batches(self):
        assert self._rows is not None
        if self._rows.batches is not None:
            yield from self._rows.batches
            return
        rows = self._rows.rows
        for start in range(0, len(rows), self.config.batch_size):
            yield self.domain.collate([rows[i] for i in range(start, min(start + self.config.batch_size, len(rows)))])

    # ------------------------------------------------------------------ running

    def steps(self, total_steps: int, images_per_step: int | None = None) -> set[int]:
        if self._steps is None:
            rows = self._rows.count if self._rows is not None else self.config.max_rows
            self.every, self._steps = evaluation_steps(self.config.every, total_steps, rows, images_per_step)
        return self._steps

    @torch.no_grad()
    def features(self, device: torch.device | str, autocast: Callable[[], Any] = contextlib.nullcontext
                 ) -> tuple[Tensor, Tensor]:
        """Pooled features [N, D] (float32, CPU) and labels [N] of the evaluation rows."""
        was_training = self.encoder.training
        self.encoder.eval()
        generator = torch.Generator(device=device).manual_seed(self.seed)  # plain views draw nothing
        pooled, labels, skipped = [], [], 0
        try:
            for batch in self._batches():
                skipped += int(batch.get("skipped", 0))
                views = self.domain.make_views(move_to_device(batch, device), ViewRequest("plain"), generator)
                with autocast():
                    features = self.encoder(**views["inputs"])
                pooled.append(features.pooled.float().cpu())
                labels.append(torch.as_tensor(views.get("labels", batch.get("labels"))).long().cpu())
        finally:
            self.encoder.train(was_training)
        if skipped:
            raise DataError(f"{skipped} evaluation rows were skipped as bad samples; the scores would move between runs")
        return torch.cat(pooled), torch.cat(labels)

    def evaluate(self, device: torch.device | str, autocast: Callable[[], Any] = contextlib.nullcontext
                 ) -> dict[str, float]:
        """The scores of the encoder as it is now (see the module docstring), every RNG untouched."""
        wall, cpu = time.perf_counter(), time.process_time()
        devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            features, labels = self.features(device, autocast)
            record = {"online/knn_top1": knn_leave_one_out(features, labels, self.config.k, self.config.temperature)}
            if self.config.linear:
                record["online/linear_top1"] = cross_fitted_linear_accuracy(
                    features, labels, self.config.linear_weight_decay, seed=self.seed)
        spent, spent_cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.seconds += spent
        self.cpu_seconds += spent_cpu
        self.evaluations += 1
        record["online/seconds"] = spent
        record["online/cpu_seconds"] = spent_cpu
        return record

    def maybe_evaluate(self, step: int, total_steps: int, accelerator: Any, log: Any) -> dict[str, float] | None:
        """Evaluate, log and redraw the curves when ``step`` is one of the evaluated steps; main
        process only (every other process returns None at once)."""
        images_per_step = self.images_per_step * getattr(accelerator, "num_processes", 1)
        if not self.active or step not in self.steps(total_steps, images_per_step):
            return None
        reason = self.supported(accelerator)
        if reason is not None:
            accelerator.print(f"online evaluation is off for this run: {reason}, and it runs on the main process alone")
            self.active = False
            return None
        autocast = accelerator.autocast if getattr(accelerator, "mixed_precision", "no") != "no" else contextlib.nullcontext
        record = self.evaluate(accelerator.device, autocast)
        accelerator.log(record, step=step)
        log.write({"step": step, **record})
        from multissl.telemetry import write_curves

        wall, cpu = time.perf_counter(), time.process_time()
        write_curves(log.path, self.run_dir / "curves.png")
        self.seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu
        return record

    @staticmethod
    def supported(accelerator: Any) -> str | None:
        """Why online evaluation cannot run under this accelerator (sharded parameters), or None."""
        kind = str(getattr(accelerator, "distributed_type", ""))
        if "FSDP" in kind:
            return "FSDP shards the parameters"
        plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
        if plugin is not None and getattr(plugin, "zero_stage", 0) == 3:
            return "DeepSpeed ZeRO-3 shards the parameters"
        return None
