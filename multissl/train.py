"""The one training loop: every method, any domain, one CPU to many GPUs, from a recipe.

    multissl train RECIPE [key=value ...]
    accelerate launch [accelerate flags] -m multissl.train RECIPE [key=value ...]

Both run :func:`train`. Accelerate owns devices, processes and mixed precision; the loop owns the
order of things in one step::

    rows -> domain.collate (DataLoader) -> domain.make_views (on device, seeded by seed/step/rank)
         -> objectives (weighted sum; loss math in fp32) -> NaN guard -> backward -> clip -> step
         -> EMA/queue updates (objective.on_step_end) -> logs, health, checkpoint

Exact resume: the checkpoint holds every parameter and persistent buffer of every objective
(queues, EMA teachers, temperatures), the optimiser, the schedule, each process's RNG and the
data position (epoch, batches consumed); views are drawn from a generator seeded by
(seed, step, rank), and the sampler is reseeded per epoch, so a resumed run replays exactly what
an uninterrupted one would have done.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader

from domains import build_domain, domain_config_class
from multissl.domain import BadSampleError, DataConfig, Domain, move_to_device
from multissl.checkpoint import (Resumable, check_supported, fault_point, load_checkpoint, resume_checkpoint,
                                 save_checkpoint)
from multissl.config import MAY_CHANGE_ON_RESUME, Recipe, RecipeError, load_recipe, recipe_to_dict
from multissl.console import RunConsole, quiet_library_progress
from multissl.errors import DataError, LaunchError, run_reporting
from multissl.guards import BatchGuard, NotEnoughDataError, check_batch_size, check_enough_rows
from multissl.skips import SkipLedger, batch_skip_records
from multissl.features import Encoder
from multissl.objectives import build_objective
from multissl.modules import convert_to_global_batchnorm
from multissl.objectives.base import Objective
from multissl.optim import build_optimizer, parameter_groups, warmup_cosine_scheduler
from multissl.telemetry import JsonlLog, health, to_float, write_curves

__all__ = [
    "NonFiniteLossError", "RunResult", "SSLModel", "build_run", "move_to_device", "read_recipe", "view_generator",
    "optimisation_step", "scaled_lr", "train", "main",
]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message names the step. Checkpoints already written stay."""


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    encoder_dirs: dict[str, Path]
    losses: list[float] = field(default_factory=list)
    skipped_samples: int = 0
    seconds: float = 0.0
    evaluation_cpu_seconds: float = 0.0  # the online evaluation's share (multissl.probes.online)


class SSLModel(nn.Module):
    """All objectives of a run behind one ``forward``, so DDP sees one module and shared encoders
    (several objectives on one domain) hold their parameters once."""

    def __init__(self, objectives: dict[str, Objective], weights: dict[str, float], encoders: dict[str, Encoder],
                 domains_of: dict[str, list[str]]):
        super().__init__()
        self.objectives = nn.ModuleDict(objectives)
        self.weights = dict(weights)
        self.domains_of = dict(domains_of)  # objective key -> the domain keys it reads, in order
        # encoders are reachable through the objectives; kept here by name for saving only
        self._encoders = encoders

    @property
    def encoders(self) -> dict[str, Encoder]:
        return self._encoders

    def make_views(self, domains: dict[str, Domain], raw: dict[str, Any], generator: torch.Generator) -> dict:
        """Every objective's views of one collated batch (on its device): {objective key: views per domain}."""
        return {
            key: tuple(domains[d].make_views(raw[d], request, generator)
                       for d, request in zip(self.domains_of[key], objective.view_requests()))
            for key, objective in self.objectives.items()
        }

    def forward(self, views: dict[str, tuple[dict[str, Any], ...]]):
        total: Tensor | None = None
        logs: dict[str, Any] = {}
        embeddings = None
        single = len(self.objectives) == 1
        for name, objective in self.objectives.items():
            out = objective(*views[name])
            loss = out.loss.float()
            total = loss * self.weights[name] if total is None else total + loss * self.weights[name]
            prefix = "" if single else f"{name}/"
            if not single:
                logs[f"loss/{name}"] = loss.detach()
            logs.update({f"{prefix}{k}": v for k, v in out.logs.items()})
            if embeddings is None and out.embeddings is not None:
                embeddings = out.embeddings
        assert total is not None
        return total, logs, embeddings


class StepState:
    """The data position, checkpointed with the rest (as JSON)."""

    def __init__(self) -> None:
        self.step = 0  # optimiser steps done
        self.epoch = 0
        self.batches_in_epoch = 0  # micro batches consumed in the current epoch

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("step", "epoch", "batches_in_epoch"):
            setattr(self, key, int(state[key]))


class AlignedRows(torch.utils.data.Dataset):
    """Row i of the run as {domain key: row}: the rows one step collates.

    pairing="row": every domain reads the same data (each its own column roles, picked by
    ``Domain.roles``) or its own equally long data; row i of each describes one example.
    pairing="label": the first domain's rows lead; every other domain contributes a row with the
    same label, cycling through that label's rows in an order shuffled once by ``seed`` (an MNIST
    image and a spoken FSDD digit of the same class). The pairing is fixed for the run, so a
    resumed run sees the same pairs.
    """

    def __init__(self, datasets: dict[str, Any], pairing: str = "row", seed: int = 0) -> None:
        self.datasets = datasets
        names = list(datasets)
        self.length = len(datasets[names[0]])
        self.index = {names[0]: None}
        if pairing == "row":
            lengths = {name: len(ds) for name, ds in datasets.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"the domains read different numbers of rows {lengths}; rows would not line up "
                                 "(use pairing: label to pair rows of different datasets by their label)")
            self.index.update({name: None for name in names[1:]})
            return
        leading = self._labels(names[0])
        generator = torch.Generator().manual_seed(seed)
        for name in names[1:]:
            labels = self._labels(name)
            by_label: dict[int, Tensor] = {}
            for value in labels.unique().tolist():
                rows = (labels == value).nonzero().flatten()
                by_label[value] = rows[torch.randperm(len(rows), generator=generator)]
            missing = sorted(set(leading.unique().tolist()) - set(by_label))
            if missing:
                raise ValueError(f"domain {name!r} has no rows with label(s) {missing} to pair with {names[0]!r}")
            seen: dict[int, int] = {}
            index = torch.empty(self.length, dtype=torch.long)
            for position, value in enumerate(leading.tolist()):
                rows = by_label[value]
                index[position] = rows[seen.get(value, 0) % len(rows)]
                seen[value] = seen.get(value, 0) + 1
            self.index[name] = index

    def _labels(self, name: str) -> Tensor:
        dataset = self.datasets[name]
        if "label" not in getattr(dataset, "column_names", []):
            raise ValueError(f"pairing: label needs a label column in domain {name!r}'s data (data.columns.label)")
        # one Arrow read: indexing the column walks it row by row (seconds for MNIST's labels)
        return torch.from_numpy(dataset.with_format("arrow")["label"].to_numpy().copy()).long()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {name: ds[index if self.index[name] is None else int(self.index[name][index])]
                for name, ds in self.datasets.items()}


class MultiDomainCollate:
    """Collate a list of {domain key: row} with every domain of the run: {domain key: RawBatch}."""

    def __init__(self, domains: dict[str, Domain]) -> None:
        self.domains = domains

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batches = {name: domain.collate([row[name] for row in rows]) for name, domain in self.domains.items()}
        if len(batches) > 1:
            skipped = {name: int(batch.get("skipped", 0)) for name, batch in batches.items()}
            if any(skipped.values()):
                raise ValueError(
                    f"bad samples were skipped by some domains {skipped}: with several domains on one "
                    "dataset the rows would no longer line up; clean the data or use on_bad_sample: error"
                )
        return batches


def _domain_data(data: DataConfig, domain: Domain) -> DataConfig:
    """The data one domain reads: its own, or the run's, with only the column roles it reads."""
    roles = getattr(domain, "roles", None)
    if roles is None:
        return data
    return dataclasses.replace(data, columns={r: c for r, c in data.columns.items() if r in roles})


def build_run(recipe: Recipe) -> tuple[dict[str, Domain], Any, dict[str, Encoder], SSLModel]:
    """Domains, the aligned dataset, the encoders, and every objective around them.

    Data is loaded before encoders are built: a domain may learn from it what its encoder needs
    (a tokenizer trained on the corpus sets the vocabulary size).
    """
    domains = {name: build_domain(spec.type or name, spec.options) for name, spec in recipe.domains.items()}
    loaded = {
        name: _load_data(name, domain, _domain_data(recipe.domains[name].data or recipe.data, domain))
        for name, domain in domains.items()
    }
    if recipe.data.streaming:
        if recipe.pairing != "row":
            raise RecipeError("pairing: label needs map-style data; streaming data can only pair rows")
        dataset = _zip_streams(loaded)
    else:
        dataset = AlignedRows(loaded, recipe.pairing, recipe.train.seed)
    encoders = {name: domains[name].build_encoder(spec.encoder) for name, spec in recipe.domains.items()}
    objectives, weights, domains_of = {}, {}, {}
    for index, spec in enumerate(recipe.objectives):
        key = spec.name if spec.name not in objectives else f"{spec.name}_{index}"
        objectives[key] = build_objective(spec.name, [encoders[d] for d in spec.domains], spec.options)
        weights[key], domains_of[key] = spec.weight, list(spec.domains)
    return domains, dataset, encoders, SSLModel(objectives, weights, encoders, domains_of)


def _load_data(name: str, domain: Domain, data: DataConfig):
    """``domain.load(data)``; a failure the data explains (a missing column, an unreadable file, a
    format that cannot be inferred) becomes a :class:`DataError` naming the domain and the path."""
    import datasets

    try:
        return domain.load(data)
    except (BadSampleError, RecipeError, DataError):
        raise
    except (ValueError, KeyError, OSError, datasets.exceptions.DatasetsError) as error:
        if isinstance(error, ConnectionError):
            raise
        text = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"domain {name!r} cannot load data {data.path!r}: {text}") from error


class _ZippedStreams(torch.utils.data.IterableDataset):
    def __init__(self, streams: dict[str, Any]) -> None:
        self.streams = streams

    def __iter__(self):
        names = list(self.streams)
        for rows in zip(*(self.streams[n] for n in names)):
            yield dict(zip(names, rows))


def _zip_streams(streams: dict[str, Any]) -> torch.utils.data.IterableDataset:
    return _ZippedStreams(streams)


def read_recipe(name_or_path: str, overrides: list[str] | None = None, check_paths: bool = True) -> Recipe:
    """A recipe file or shipped recipe name, with overrides, every key checked: the core's
    :func:`~multissl.config.load_recipe` given the domains' config classes (the engine knows them)."""
    return load_recipe(name_or_path, overrides, check_paths, domain_config=domain_config_class)


def view_generator(device: torch.device, seed: int, step: int, rank: int, micro: int) -> torch.Generator:
    """The only source of view randomness at (step, rank, micro batch): a resumed run replays it."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step * 9_973 + rank * 131 + micro) % (2**63 - 1))
    return generator


def _total_steps(recipe: Recipe, loader: DataLoader) -> int:
    if recipe.train.max_steps is not None:
        return recipe.train.max_steps
    try:
        per_epoch = len(loader) // recipe.train.gradient_accumulation
    except TypeError as error:
        raise RecipeError("train.epochs needs a dataset with a length; set train.max_steps for streaming data") from error
    return max(1, math.ceil(recipe.train.epochs * per_epoch))


def scaled_lr(recipe: Recipe, world_size: int) -> float:
    """The recipe's peak learning rate scaled to the global batch (``optimizer.lr_scaling``)."""
    opt = recipe.optimizer
    global_batch = recipe.train.batch_size * world_size * recipe.train.gradient_accumulation
    factor = {"none": 1.0, "linear": global_batch / opt.lr_reference_batch,
              "sqrt": math.sqrt(global_batch / opt.lr_reference_batch)}[opt.lr_scaling]
    return opt.lr * factor


def train(recipe: Recipe, recipe_source: str = "<recipe>", accelerator: Accelerator | None = None) -> RunResult:
    """Run a recipe to its end (or resume it); returns where its encoders were saved."""
    with quiet_library_progress():
        return _train(recipe, recipe_source, accelerator)


def _train(recipe: Recipe, recipe_source: str, accelerator: Accelerator | None) -> RunResult:
    started = time.time()
    run_dir = Path(recipe.output_dir)
    tc = recipe.train
    if accelerator is None:
        accelerator = Accelerator(
            mixed_precision="no" if tc.precision == "fp32" else tc.precision,
            gradient_accumulation_steps=tc.gradient_accumulation,
            log_with=recipe.logging.trackers or None,
            project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=tc.find_unused_parameters)],
        )
    check_launch(accelerator, tc.precision)
    set_seed(tc.seed)
    check_supported(accelerator)
    check_batch_size(recipe, accelerator.num_processes, recipe_source)
    resume_from = resume_checkpoint(run_dir, recipe.checkpoint.resume, recipe_to_dict(recipe), MAY_CHANGE_ON_RESUME,
                                    warn=lambda text: accelerator.is_main_process and print(text, file=sys.stderr))

    domains, dataset, encoders, model = build_run(recipe)
    evaluator = None
    if recipe.evaluation.enabled:  # online kNN / linear probe on labelled rows (multissl.probes.online)
        from multissl.probes.online import OnlineEvaluator

        evaluator, dataset = OnlineEvaluator.build(recipe, domains, dataset, encoders, accelerator.is_main_process)
    if tc.global_batchnorm:
        convert_to_global_batchnorm(model)
    guard = _batch_guard(recipe, model, accelerator, recipe_source)
    if not recipe.data.streaming:
        check_enough_rows(len(dataset), recipe, accelerator.num_processes, recipe_source)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = DataLoader(
        dataset,
        batch_size=tc.batch_size,
        shuffle=not recipe.data.streaming,
        drop_last=tc.drop_last,
        num_workers=tc.num_workers,
        collate_fn=MultiDomainCollate(domains),
        generator=torch.Generator().manual_seed(tc.seed),
        persistent_workers=tc.num_workers > 0,
    )

    lr = scaled_lr(recipe, accelerator.num_processes)
    optimizer = build_optimizer(
        recipe.optimizer.name, parameter_groups(model, recipe.optimizer.weight_decay), lr=lr,
        weight_decay=recipe.optimizer.weight_decay, momentum=recipe.optimizer.momentum, betas=recipe.optimizer.betas,
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    plain_model = accelerator.unwrap_model(model)
    total_steps = _total_steps(recipe, loader)
    warmup = recipe.schedule.warmup
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps, min(warmup_steps, total_steps),
                                        final_lr_ratio=recipe.schedule.final_lr_fraction)
    state, skips = StepState(), SkipLedger()
    resumable = Resumable(plain_model, optimizer, {"scheduler": scheduler, "progress": state, "skips": skips},
                          recipe_to_dict(recipe))
    if tc.compile:
        model = torch.compile(model)

    log = JsonlLog(run_dir / "log.jsonl", accelerator.is_main_process)
    if resume_from is not None:
        accelerator.print(f"resuming from {resume_from}")
        load_checkpoint(accelerator, resume_from, resumable, verified=True)
        log.forget_after(state.step)  # steps logged after the checkpoint are trained (and logged) again
    if accelerator.is_main_process:  # every process loaded the same rows: count load-time drops once
        for domain in domains.values():
            skips.add(getattr(domain, "load_skips", []), once=True)

    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    if recipe.logging.trackers:
        accelerator.init_trackers("multissl", config=_flat_config(recipe))

    unwrapped: SSLModel = accelerator.unwrap_model(model)
    console = RunConsole(accelerator.is_main_process, total_steps, state.step, recipe.logging.every,
                         recipe.logging.progress_bar)
    losses: list[float] = []
    micro = 0
    if evaluator is not None and state.step == 0:
        _report_scores(console, 0, evaluator.maybe_evaluate(0, total_steps, accelerator, log))

    model.train()
    while state.step < total_steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(state.epoch)
        batches = accelerator.skip_first_batches(loader, state.batches_in_epoch) if state.batches_in_epoch else loader
        started_at = state.batches_in_epoch
        for raw in _epoch(batches, recipe_source):
            state.batches_in_epoch += 1
            raw = move_to_device(raw, accelerator.device)
            for batch in raw.values():
                skips.add(batch_skip_records(batch))
            if not _usable(guard, raw, accelerator, skips, state, log):
                continue
            generator = view_generator(accelerator.device, tc.seed, state.step, accelerator.process_index, micro)
            views = unwrapped.make_views(domains, raw, generator)
            loss, logs, embeddings = optimisation_step(accelerator, model, optimizer, scheduler, views,
                                                       state.step + 1, tc.grad_clip)
            micro += 1
            if not accelerator.sync_gradients:
                continue
            micro = 0
            state.step += 1
            for objective in unwrapped.objectives.values():
                objective.on_step_end(state.step, total_steps)
            losses.append(to_float(loss))
            _log_step(accelerator, recipe, log, state, loss, logs, embeddings, scheduler, skips, total_steps)
            console.step(state.step, losses[-1], scheduler.get_last_lr()[0])
            if evaluator is not None:
                _report_scores(console, state.step, evaluator.maybe_evaluate(state.step, total_steps, accelerator, log))
            fault_point("step", state.step)
            if state.step % recipe.checkpoint.every == 0 or state.step == total_steps:
                _report_skips(accelerator, skips, log, state.step)
                save_checkpoint(accelerator, run_dir, state.step, recipe.checkpoint.keep, resumable)
            if state.step >= total_steps:
                break
        else:
            if state.batches_in_epoch == started_at == 0:
                raise NotEnoughDataError(
                    f"epoch {state.epoch} yielded no batch: the data has fewer rows than one global batch of "
                    f"{tc.batch_size * accelerator.num_processes} (train.drop_last is on); lower train.batch_size "
                    "or add data", "train.batch_size", recipe_source)
            state.epoch += 1
            state.batches_in_epoch = 0
            continue
        break

    console.close()
    _report_skips(accelerator, skips, log, state.step, summary=True)
    if accelerator.is_main_process:
        write_curves(log.path, run_dir / "curves.png")
    encoder_dirs = _finish(accelerator, recipe, unwrapped, domains, run_dir, state.step, _rows(dataset))
    accelerator.end_training()
    return RunResult(run_dir, state.step, encoder_dirs, losses, skips.total, time.time() - started,
                     evaluator.cpu_seconds if evaluator is not None else 0.0)


def _report_scores(console: RunConsole, step: int, record: dict[str, float] | None) -> None:
    if record is not None:
        console.scores(step, record)


def optimisation_step(accelerator: Accelerator, model: nn.Module, optimizer, scheduler, views: dict,
                      step: int, grad_clip: float | None = None):
    """One micro batch: forward (autocast), NaN guard, backward, and, when gradients are in sync,
    clipping, the optimiser and schedule steps. Returns (loss, logs, embeddings) of the forward."""
    with accelerator.accumulate(model), accelerator.autocast():
        loss, logs, embeddings = model(views)
        _guard_finite(accelerator, loss, step, logs)
        accelerator.backward(loss)
        if accelerator.sync_gradients and grad_clip is not None:
            logs["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if accelerator.sync_gradients:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return loss, logs, embeddings


def _epoch(batches, source: str):
    """The batches of one epoch. Accelerate's dispatcher meets a stream too short for one batch
    with a bare ValueError; it becomes the run's "too little data" error."""
    try:
        yield from batches
    except ValueError as error:
        if "does not contain any data" not in str(error):
            raise
        raise NotEnoughDataError("the data stream ended before it filled one global batch (train.batch_size x "
                                 "processes, train.drop_last on): lower train.batch_size or add data",
                                 "train.batch_size", source) from error


def _batch_guard(recipe: Recipe, model: nn.Module, accelerator: Accelerator, source: str) -> BatchGuard:
    """Refuse a batch smaller than the objectives and batch-norm layers need; the guard that
    skips micro batches which bad-sample skips (or a short last batch) left too small."""
    global_min, local_min = check_batch_size(recipe, accelerator.num_processes, source, model)
    policies = [recipe.data.on_bad_sample] + [spec.data.on_bad_sample for spec in recipe.domains.values() if spec.data]
    can_shrink = "skip" in policies or not recipe.train.drop_last
    return BatchGuard(global_min, local_min, recipe.train.max_skipped_batches_in_row, active=can_shrink)


def _usable(guard: BatchGuard, raw: dict, accelerator: Accelerator, skips: SkipLedger, state: StepState,
            log: JsonlLog) -> bool:
    """Whether every process trains on this micro batch; the rows of one that is skipped are
    counted as skipped (never dropped silently). When too many in a row were skipped, the skips
    are named and summed in the log before the run stops (every process stops here together)."""
    try:
        usable, rows = guard.trainable(raw, accelerator)
    except NotEnoughDataError:
        _report_skips(accelerator, skips, log, state.step, summary=True)
        raise
    if not usable and rows:
        where = f"epoch {state.epoch}, batch {state.batches_in_epoch} (process {accelerator.process_index})"
        skips.add([{"where": where, "reason": "batch too small to train on after skips", "count": rows,
                    "detail": f"{rows} usable row(s) left here, at least {guard.global_min} needed over all "
                              f"processes and {guard.local_min} per process"}])
    return usable


def _report_skips(accelerator: Accelerator, skips: SkipLedger, log: JsonlLog, step: int, summary: bool = False) -> None:
    """Gather every process's skips (a collective); name each new one once, in log.jsonl and on
    the console; at the end, the totals by reason."""
    fresh = skips.sync(accelerator)
    if accelerator.is_main_process:
        for index, record in enumerate(fresh):
            log.write({"event": "skipped_sample", "step": step, **record})
            if index < 20:
                count = f" ({record['count']} rows)" if record.get("count", 1) > 1 else ""
                print(f"skipped{count}: {record['where']}: {record['reason']}"
                      f"{': ' + record['detail'] if record.get('detail') else ''}", file=sys.stderr)
        if len(fresh) > 20:
            print(f"... and {len(fresh) - 20} more skipped sample(s), named in {log.path}", file=sys.stderr)
        if summary:
            log.write({"event": "summary", "step": step, "skipped_samples": skips.total,
                       "skipped_by_reason": dict(skips.by_reason)})
            if skips.total:
                print(skips.summary(), file=sys.stderr)


def _guard_finite(accelerator: Accelerator, loss: Tensor, step: int, logs: dict[str, Any]) -> None:
    """Stop every process together, before the update, when any process's loss is not finite."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item() > 0:
        parts = {k: round(to_float(v), 6) for k, v in logs.items()}
        raise NonFiniteLossError(
            f"loss is {to_float(loss)} at step {step} (logs: {parts}); no update was applied and the "
            "last complete checkpoint is intact: lower the learning rate, check the data, or use bf16/fp32"
        )


def _log_step(accelerator, recipe, log, state, loss, logs, embeddings, scheduler, skips: SkipLedger,
              total_steps: int) -> None:
    every, health_every = recipe.logging.every, recipe.logging.health_every
    if state.step % every and state.step % health_every and state.step != total_steps:
        return
    _report_skips(accelerator, skips, log, state.step)
    record: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "loss": accelerator.reduce(loss.detach(), "mean")}
    record["lr"] = scheduler.get_last_lr()[0]
    record.update({k: v for k, v in logs.items()})
    record["skipped_samples"] = skips.total
    if embeddings is not None and state.step % health_every == 0:
        record.update(health(*embeddings))
    scalars = {k: to_float(v) for k, v in record.items() if k != "step"}
    accelerator.log(scalars, step=state.step)
    log.write({"step": state.step, **scalars})


def _rows(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:  # a stream
        return None


def _finish(accelerator: Accelerator, recipe: Recipe, model: SSLModel, domains: dict[str, Domain],
            run_dir: Path, steps: int, rows: int | None = None) -> dict[str, Path]:
    """Probe each encoder as the recipe asks, save it in Hugging Face format with its model card
    (recipe, data, steps, hardware, results), and push it when the recipe says so. Main process."""
    from multissl.hub import ModelCardInfo, push_to_hub, save_encoder
    from multissl.probes import results_table, run_probes, save_results

    folders = {name: run_dir / "encoders" / name for name in model.encoders}
    _attach_joint_projections(accelerator, model)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # the run's resolved recipe, without the recipe's prose (it describes the data and encoder
        # the recipe was written for, not necessarily this run's: the card describes the run)
        recipe_text = yaml.safe_dump({k: v for k, v in recipe_to_dict(recipe).items() if k != "description"},
                                     sort_keys=False)
        for name, encoder in model.encoders.items():
            results = []
            encoder.eval()
            for spec in (p for p in recipe.probes if p.domain == name):
                results += run_probes([spec.name], encoder, domains[name], spec.train_data, spec.test_data, spec.options,
                                      device=accelerator.device)
            if results:
                save_results(run_dir / f"probe_results_{name}.json", results)
                accelerator.print(results_table(results))
            objectives = [o.name for o in recipe.objectives if name in o.domains]
            spec, data = recipe.domains[name], recipe.domains[name].data or recipe.data
            global_batch = recipe.train.batch_size * accelerator.num_processes * recipe.train.gradient_accumulation
            card = ModelCardInfo(
                model_name=recipe.hub.repo_id or f"{Path(recipe.output_dir).name}-{name}",
                domain=spec.type or name, objective=", ".join(objectives), architecture=spec.encoder.architecture,
                encoder_size=spec.encoder.name_or_path or spec.encoder.size,
                parameters=sum(p.numel() for p in encoder.model.parameters()),
                recipe=recipe_text, datasets=[data.path], data_split=data.split, data_rows=rows, steps=steps,
                batch_size=global_batch, hardware=_hardware(accelerator), repo_id=recipe.hub.repo_id, results=results,
            )
            save_encoder(encoder, folders[name], card, preprocessing=domains[name].preprocessing())
            if recipe.hub.push and recipe.hub.repo_id:
                repo = recipe.hub.repo_id if len(model.encoders) == 1 else f"{recipe.hub.repo_id}-{name}"
                url = push_to_hub(folders[name], repo, private=recipe.hub.private, revision=recipe.hub.revision)
                accelerator.print(f"pushed encoder '{name}' to {url}")
    accelerator.wait_for_everyone()
    return folders


def _attach_joint_projections(accelerator: Accelerator, model: SSLModel) -> None:
    """Give each encoder the joint-space map a cross-modal objective trained for it (CLIP's W_a,
    W_b), so the run's retrieval/zero-shot probes and the saved folder use the trained space. An
    encoder in two such objectives keeps the first one's map (recipe order), and says so."""
    for key, objective in model.objectives.items():
        for domain, projection in zip(model.domains_of[key], objective.joint_projections()):
            if projection is None:
                continue
            encoder = model.encoders[domain]
            if encoder.joint_projection is not None:
                accelerator.print(f"encoder '{domain}' keeps the joint projection of an earlier objective, not {key}'s")
                continue
            encoder.joint_projection = projection.weight.detach().float().cpu().clone()


def _hardware(accelerator: Accelerator) -> str:
    device = accelerator.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        import platform

        name = platform.processor() or platform.machine()
        name = f"CPU ({name}, {os.cpu_count()} cores)"
    return f"{accelerator.num_processes} x {name}, precision {accelerator.mixed_precision}"


def _flat_config(recipe: Recipe) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)

    walk("", recipe_to_dict(recipe))
    return flat


def check_launch(accelerator: Accelerator, precision: str) -> None:
    """Stop when ``accelerate launch`` started several processes that did not join one process
    group (on a CPU without ACCELERATE_USE_CPU=1 each runs alone and all write the same folder),
    and say so when the launcher's mixed precision differs from the recipe's (the recipe wins)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise LaunchError(
            f"the launcher started {launched} processes but this one runs alone (world size "
            f"{accelerator.num_processes}): they would train independently into the same folder. On a CPU, "
            f"launch with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {launched} ...; "
            "on GPUs, check that every process sees one")
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    wanted = "no" if precision == "fp32" else precision
    if launcher is not None and launcher.lower() != wanted and accelerator.is_main_process:
        print(f"note: the launcher's mixed precision {launcher!r} differs from the recipe's train.precision="
              f"{precision!r}: the recipe's is used (and the model card says so); set train.precision to change it",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """``python -m multissl.train [--debug] RECIPE [key=value ...]`` (also what ``accelerate launch``
    runs). A known error (recipe, data, checkpoint, network) prints one line and returns 2;
    ``--debug`` or ``MULTISSL_DEBUG=1`` shows its traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv:
        print(__doc__)
        return 2
    recipe_path, overrides = argv[0], argv[1:]

    def run() -> int:
        result = train(read_recipe(recipe_path, overrides), recipe_path)
        if int(os.environ.get("RANK", "0")) == 0:
            for name, folder in result.encoder_dirs.items():
                print(f"encoder '{name}' saved to {folder}")
        return 0

    return run_reporting(run, debug)


if __name__ == "__main__":
    raise SystemExit(main())
