"""What the quality benchmarks share: a CPU-time budget, a budgeted training loop, seeded splits,
and one evaluation of frozen features.

Every quality benchmark (``bench/quality_<area>.py``) compares contenders (multissl methods, a peer
library's methods, baselines) trained under the SAME budget and evaluated by the SAME code on the
SAME held-out rows. The pieces here know nothing about images, audio or text:

* :class:`CpuBudget`: CPU seconds of this process (``time.process_time()``: every thread, data
  loading included when it runs in-process) with the wall seconds beside them. On a shared machine
  CPU time is what a contender actually got; wall time depends on the neighbours.
* :func:`budgeted_training`: call ``step(progress)`` until the budget is spent (checked between
  steps, so a run overshoots by at most one step, and the seconds really used are reported).
  ``progress`` is the fraction of the budget spent so far: schedules (learning rate, EMA momentum)
  follow it, since the number of steps a budget buys is not known in advance.
* :func:`progress_schedule`: multissl's warm-up + cosine learning-rate multiplier on that progress,
  and :func:`budget_lr_scheduler`, a ``LambdaLR`` that applies it (``scheduler.step()`` after each
  optimiser step, as with any per-step scheduler).
* :func:`estimated_total_steps`: the step count the budget will reach at the current rate, for
  code that schedules by (step, total_steps) (``Objective.on_step_end``).
* :func:`held_out_split` / :func:`labelled_subset`: seeded, stratified row indices.
* :func:`evaluate_frozen`: ``multissl.probes.linear_probe`` (its own validation sweep of the L2
  penalty, carved from the probe's train rows) and ``multissl.probes.knn_classify`` on the same
  features, and :func:`probe_rows` turns the scores into ``QualityRow`` dicts.
* :func:`fix_threads`: the torch thread count every contender runs with.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CpuBudget", "StepResult", "TrainingReport", "budgeted_training", "progress_schedule",
    "budget_lr_scheduler", "estimated_total_steps", "held_out_split", "labelled_subset", "ProbeScores", "evaluate_frozen",
    "probe_rows", "fix_threads", "DifferentStartError", "assert_same_start", "forever", "engine_step",
]


def fix_threads(threads: int) -> int:
    """Run torch's intra-op work on ``threads`` threads (inter-op too, where not yet fixed); returns it.

    A CPU-seconds budget only compares contenders that run with the same parallelism: the same
    work on more threads costs more CPU seconds (spinning, synchronisation)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # fixed once per process, by the first parallel op
        pass
    return torch.get_num_threads()


# ------------------------------------------------------------------------------------------ budget


class CpuBudget:
    """``seconds`` of this process's CPU time, counted from :meth:`start`.

    ``spent()`` is CPU seconds since the start (all threads of the process), ``wall()`` wall seconds,
    ``progress()`` the fraction spent, clipped to [0, 1], ``exhausted()`` whether it is all spent.
    """

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"a budget needs a positive number of CPU seconds, got {seconds}")
        self.seconds = float(seconds)
        self._cpu_start: float | None = None
        self._wall_start: float | None = None

    def start(self) -> "CpuBudget":
        self._cpu_start, self._wall_start = time.process_time(), time.perf_counter()
        return self

    @contextlib.contextmanager
    def paused(self):
        """Work inside is not charged to the budget (CPU and wall clocks move their start forward by
        what it took): a measurement taken during training, such as a learning curve's point."""
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            if self._cpu_start is not None and self._wall_start is not None:
                self._cpu_start += time.process_time() - cpu
                self._wall_start += time.perf_counter() - wall

    @property
    def started(self) -> bool:
        return self._cpu_start is not None

    def _started(self) -> tuple[float, float]:
        if self._cpu_start is None or self._wall_start is None:
            raise RuntimeError("CpuBudget.start() was not called")
        return self._cpu_start, self._wall_start

    def spent(self) -> float:
        return time.process_time() - self._started()[0]

    def wall(self) -> float:
        return time.perf_counter() - self._started()[1]

    def progress(self) -> float:
        return min(1.0, self.spent() / self.seconds)

    def exhausted(self) -> bool:
        return self.spent() >= self.seconds


@dataclass
class StepResult:
    """What one training step reports: its loss and how many source samples it consumed (a
    sample seen in two views counts once)."""

    loss: float
    samples: int


@dataclass
class TrainingReport:
    """How a budgeted run went: optimiser steps, source samples seen, CPU and wall seconds really
    used, why it stopped ("budget" | "max_steps"), and the loss of every step."""

    steps: int
    samples: int
    cpu_seconds: float
    wall_seconds: float
    budget_seconds: float
    stopped_by: str
    losses: list[float] = field(default_factory=list)

    @property
    def samples_per_cpu_second(self) -> float:
        return self.samples / self.cpu_seconds if self.cpu_seconds > 0 else math.nan

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers (without the per-step losses)."""
        data = asdict(self)
        data.pop("losses")
        data["cpu_seconds"] = round(self.cpu_seconds, 2)
        data["wall_seconds"] = round(self.wall_seconds, 2)
        data["samples_per_cpu_second"] = round(self.samples_per_cpu_second, 2)
        data["first_loss"] = self.losses[0] if self.losses else None
        data["last_loss"] = self.losses[-1] if self.losses else None
        return data


def budgeted_training(step: Callable[[float], StepResult], budget: CpuBudget | float, *,
                      max_steps: int | None = None, log_every: int = 0, name: str = "run",
                      printer: Callable[[str], None] = print,
                      checkpoints: Sequence[float] = (), on_checkpoint: Callable[[float, int], None] | None = None
                      ) -> TrainingReport:
    """Call ``step(progress)`` until ``budget`` (a :class:`CpuBudget` or CPU seconds) is spent.

    The budget is checked between steps, never inside one: the last step may end past the budget
    by at most its own cost; ``cpu_seconds`` says what was really used. ``progress`` handed to a
    step is the fraction spent before it (0 for the first step). A non-finite loss stops the run
    with an error naming ``name`` and the step. ``max_steps`` (tests, smoke runs) stops earlier.
    The clock starts here, so everything ``step`` does (data loading, augmentation, the
    optimiser) is inside the budget, and nothing done before the call is.

    ``on_checkpoint(cpu_seconds, steps)`` is called, with the clock paused (its work is not charged
    to the budget), before the first step when ``checkpoints`` holds 0, and after the first step at
    which the spent fraction reaches each value in ``checkpoints`` (fractions in [0, 1]; 1 is the
    end of the run): the points of a learning curve.
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    clock = budget if isinstance(budget, CpuBudget) else CpuBudget(budget)
    clock.start()
    steps, samples, losses = 0, 0, []
    stopped_by = "budget"
    pending = sorted(set(float(c) for c in checkpoints))

    def checkpoint(final: bool = False) -> None:
        due = [c for c in pending if c <= clock.progress() or final]
        if due and on_checkpoint is not None:
            spent = clock.spent()
            with clock.paused():
                on_checkpoint(spent, steps)
        for c in due:
            pending.remove(c)

    if pending and pending[0] <= 0:
        checkpoint()
    while not clock.exhausted():
        if max_steps is not None and steps >= max_steps:
            stopped_by = "max_steps"
            break
        result = step(clock.progress())
        if not math.isfinite(result.loss):
            raise FloatingPointError(f"{name}: the loss became {result.loss} at step {steps + 1}")
        steps += 1
        samples += int(result.samples)
        losses.append(float(result.loss))
        if log_every and steps % log_every == 0:
            printer(f"  {name}: step {steps}, loss {result.loss:.4f}, {clock.spent():.0f}/{clock.seconds:.0f} CPU s")
        if pending and pending[0] <= clock.progress() and not clock.exhausted():
            checkpoint()
    if pending:
        checkpoint(final=True)
    return TrainingReport(steps=steps, samples=samples, cpu_seconds=clock.spent(), wall_seconds=clock.wall(),
                          budget_seconds=clock.seconds, stopped_by=stopped_by, losses=losses)


def progress_schedule(progress: float, warmup: float = 0.0, final_fraction: float = 0.0) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of the budget: linear warm-up over the
    first ``warmup`` fraction, then a half cosine down to ``final_fraction`` (multissl's
    :func:`multissl.optim.warmup_cosine`, read on the budget instead of on steps)."""
    from multissl.optim import warmup_cosine

    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup}")
    resolution = 1_000_000
    position = round(min(max(progress, 0.0), 1.0) * resolution)
    return warmup_cosine(position, resolution, round(warmup * resolution), base_lr=1.0, final_lr=final_fraction)


def budget_lr_scheduler(optimizer: torch.optim.Optimizer, budget: CpuBudget, warmup: float = 0.0,
                        final_fraction: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` whose multiplier is :func:`progress_schedule` of ``budget``'s progress when
    ``step()`` is called (0 before the budget starts): each group's ``lr`` is its initial lr times
    it. Call ``scheduler.step()`` after every optimiser step; the next step then runs at the rate
    of the budget spent so far."""

    def multiplier(_: int) -> float:
        progress = budget.progress() if budget.started else 0.0
        return progress_schedule(progress, warmup, final_fraction)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def estimated_total_steps(steps_done: int, progress: float) -> int:
    """Steps the whole budget will buy at the rate so far: ``steps_done / progress`` (at least
    ``steps_done``, at least 1). For schedules written against (step, total_steps)."""
    if progress <= 0:
        return max(1, steps_done)
    return max(1, steps_done, round(steps_done / progress))


# ------------------------------------------------------------------------------------------ splits


def _stratified_counts(labels: Tensor, total: int) -> dict[int, int]:
    """Rows per class summing to ``total``, proportional to the class sizes (largest remainder)."""
    classes, sizes = torch.unique(labels, return_counts=True)
    exact = sizes.double() * total / len(labels)
    counts = exact.floor().long()
    shortfall = total - int(counts.sum())
    order = torch.argsort(-(exact - counts), stable=True)  # ties go to the smaller class id
    counts[order[:shortfall]] += 1
    return {int(c): int(n) for c, n in zip(classes, counts)}


def held_out_split(labels: Tensor | Sequence[int], held_out: int, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted row indices (train, held_out) of a seeded, stratified split.

    Each class gives ``held_out * n_c / N`` rows (largest-remainder rounding, so exactly ``held_out``
    in all), drawn by a generator seeded with ``seed``; the rest is train. The two parts are
    disjoint and cover every row.
    """
    labels = torch.as_tensor(labels).long().flatten()
    if not 0 < held_out < len(labels):
        raise ValueError(f"held_out must be in [1, {len(labels) - 1}] for {len(labels)} rows, got {held_out}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for value, count in _stratified_counts(labels, held_out).items():
        rows = (labels == value).nonzero().flatten()
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:count]])
    is_held_out = torch.zeros(len(labels), dtype=torch.bool)
    is_held_out[torch.cat(chosen)] = True
    return (~is_held_out).nonzero().flatten(), is_held_out.nonzero().flatten()


def labelled_subset(rows: Tensor, labels: Tensor | Sequence[int], size: int | None, seed: int) -> Tensor:
    """A seeded, stratified choice of ``size`` of ``rows`` (indices into ``labels``), sorted.

    ``size`` None or >= len(rows) keeps every row. Used for the probe's labelled train set and for
    training on part of the data when the budget is small.
    """
    rows = torch.as_tensor(rows).long().flatten()
    if size is None or size >= len(rows):
        return rows.sort().values
    if size < 1:
        raise ValueError(f"subset size must be >= 1, got {size}")
    _, chosen = held_out_split(torch.as_tensor(labels).long()[rows], size, seed)  # its held-out part is ours
    return rows[chosen].sort().values


# ------------------------------------------------------------------------------------- evaluation


@dataclass
class ProbeScores:
    """Top-1 accuracies (fractions) of one frozen encoder: the linear probe and kNN per k, with
    the probe's chosen L2 penalty and its validation accuracy, and the probe's row counts."""

    linear_accuracy: float
    knn_accuracy: dict[int, float]
    linear_weight_decay: float
    linear_validation_accuracy: float
    num_train: int
    num_test: int
    feature_dim: int


def evaluate_frozen(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, *,
                    ks: Sequence[int] = (20, 200), seed: int = 0, **linear_options: Any) -> ProbeScores:
    """Linear probe and weighted kNN on frozen features, the same call for every contender.

    ``multissl.probes.linear_probe``: features standardised with train statistics, L-BFGS logistic
    regression, the L2 penalty chosen on a validation split carved (seeded) from the train rows,
    refit on all train rows, scored once on test. ``multissl.probes.knn_classify``: cosine
    similarity, ``exp(s / 0.07)`` weighted votes of the k nearest train rows (Wu et al. 2018).
    ``linear_options`` go to ``linear_probe`` (e.g. ``weight_decays``, ``max_iter``).
    """
    from multissl.probes import knn_classify, linear_probe

    linear = linear_probe(train_features, train_labels, test_features, test_labels, seed=seed, **linear_options)
    knn = knn_classify(train_features, train_labels, test_features, test_labels, ks=ks)
    return ProbeScores(linear_accuracy=linear.accuracy, knn_accuracy=dict(knn), linear_weight_decay=linear.weight_decay,
                       linear_validation_accuracy=linear.validation_accuracy, num_train=linear.num_train,
                       num_test=linear.num_test, feature_dim=int(train_features.shape[-1]))


def probe_rows(task: str, contender: str, scores: ProbeScores, budget_seconds: float | None,
               notes: str = "") -> list[dict[str, Any]]:
    """``QualityRow`` dicts for one contender: "<task>, linear probe" and "<task>, kNN k=<k>",
    metric ``top1_accuracy`` (higher is better)."""
    from bench._common import QualityRow

    rows = [QualityRow(f"{task}, linear probe", contender, "top1_accuracy", round(scores.linear_accuracy, 4), True,
                       budget_seconds, notes)]
    rows += [QualityRow(f"{task}, kNN k={k}", contender, "top1_accuracy", round(accuracy, 4), True, budget_seconds,
                        notes) for k, accuracy in sorted(scores.knn_accuracy.items())]
    return [row.as_row() for row in rows]


class DifferentStartError(AssertionError, RuntimeError):
    """A contender's model does not start from the weights every contender must start from."""


def assert_same_start(state: dict[str, Tensor], reference: dict[str, Tensor], who: str,
                      start: str = "the shared initial weights") -> None:
    """``state`` (a ``state_dict``) must hold exactly ``reference``'s tensors, bit for bit; the
    error names the contender and the first tensor that differs. Every quality bench checks its
    contenders with this before training, so a comparison never silently starts apart."""
    if state.keys() != reference.keys():
        missing = sorted(set(reference) ^ set(state))[:3]
        raise DifferentStartError(f"{who} does not start from {start} (other parameters: {missing} ...)")
    for name, value in reference.items():
        if not torch.equal(state[name], value):
            raise DifferentStartError(f"{who} does not start from {start} ({name} differs)")


def forever(loader: Iterable[Any]) -> Iterator[Any]:
    """Batches of ``loader`` epoch after epoch, reshuffled every epoch (``set_epoch`` for Accelerate's
    seedable sampler, as the engine calls it; a plain loader's seeded generator moves on by itself).
    A loader that gives no batch at all (fewer rows than one batch, with drop_last) is an error."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training data gave no batch (fewer rows than one batch, with drop_last)")
        epoch += 1


def engine_step(accelerator: Any, model: Any, optimizer: Any, scheduler: Any, domains: dict[str, Any],
                batches: Iterator[Any], seed: int, clock: CpuBudget, batch_size: int,
                grad_clip: float | None) -> tuple[Callable[[float], StepResult], dict[str, float]]:
    """One multissl training step as ``multissl.train.train`` takes it, for :func:`budgeted_training`:
    the next collated batch moved to the device, views from ``view_generator`` at (seed, step),
    ``SSLModel.make_views``, ``optimisation_step``, then every objective's ``on_step_end`` with the
    budget's progress as (step, total) (EMA schedules follow the budget, like the learning rate).

    Returns the step function and its counters: steps, skipped samples, and the CPU seconds spent
    in the data path (decode + views)."""
    from multissl.train import move_to_device, optimisation_step, view_generator

    unwrapped = accelerator.unwrap_model(model)
    counters = {"steps": 0, "skipped": 0, "data_cpu_seconds": 0.0}
    resolution = 1_000_000

    def step(progress: float) -> StepResult:
        started = time.process_time()
        raw = move_to_device(next(batches), accelerator.device)
        counters["skipped"] += sum(int(batch.get("skipped", 0)) for batch in raw.values())
        generator = view_generator(accelerator.device, seed, counters["steps"], accelerator.process_index, 0)
        views = unwrapped.make_views(domains, raw, generator)
        counters["data_cpu_seconds"] += time.process_time() - started
        loss, _, _ = optimisation_step(accelerator, model, optimizer, scheduler, views, counters["steps"] + 1, grad_clip)
        counters["steps"] += 1
        done = max(1, round(clock.progress() * resolution))
        for objective in unwrapped.objectives.values():
            objective.on_step_end(done, resolution)
        return StepResult(float(loss.detach()), batch_size)

    return step, counters
