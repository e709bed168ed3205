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
from multissl.domain import DataConfig, Domain
from multissl.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from multissl.config import Recipe, RecipeError, load_recipe, recipe_to_dict
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
    """The data position, checkpointed with the rest (``register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step = 0  # optimiser steps done
        self.epoch = 0
        self.batches_in_epoch = 0  # micro batches consumed in the current epoch
        self.skipped = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))


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
        name: domain.load(_domain_data(recipe.domains[name].data or recipe.data, domain))
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


def move_to_device(value: Any, device: torch.device) -> Any:
    """Tensors of a collated batch (nested dicts and lists) moved to ``device``."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: move_to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [move_to_device(v, device) for v in value]
    return value


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
    set_seed(tc.seed)
    resume_from = _resume_target(recipe, run_dir, recipe_source)

    domains, dataset, encoders, model = build_run(recipe)
    evaluator = None
    if recipe.evaluation.enabled:  # online kNN / linear probe on labelled rows (multissl.probes.online)
        from multissl.probes.online import OnlineEvaluator

        evaluator, dataset = OnlineEvaluator.build(recipe, domains, dataset, encoders, accelerator.is_main_process)
    if tc.global_batchnorm:
        convert_to_global_batchnorm(model)
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
    total_steps = _total_steps(recipe, loader)
    warmup = recipe.schedule.warmup
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps, min(warmup_steps, total_steps),
                                        final_lr_ratio=recipe.schedule.final_lr_fraction)
    accelerator.register_for_checkpointing(scheduler)
    state = StepState()
    accelerator.register_for_checkpointing(state)
    if tc.compile:
        model = torch.compile(model)

    if resume_from is not None:
        accelerator.print(f"resuming from {resume_from}")
        accelerator.load_state(str(resume_from))

    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    if recipe.logging.trackers:
        accelerator.init_trackers("multissl", config=_flat_config(recipe))
    log = JsonlLog(run_dir / "log.jsonl", accelerator.is_main_process)

    unwrapped: SSLModel = accelerator.unwrap_model(model)
    progress = _progress(accelerator, recipe, total_steps, state.step)
    losses: list[float] = []
    micro = 0
    if evaluator is not None and state.step == 0:
        evaluator.maybe_evaluate(0, total_steps, accelerator, log)

    model.train()
    while state.step < total_steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(state.epoch)
        batches = accelerator.skip_first_batches(loader, state.batches_in_epoch) if state.batches_in_epoch else loader
        for raw in batches:
            state.batches_in_epoch += 1
            raw = move_to_device(raw, accelerator.device)
            state.skipped += int(sum(int(b.get("skipped", 0)) for b in raw.values()))
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
            _log_step(accelerator, recipe, log, state, loss, logs, embeddings, scheduler)
            if evaluator is not None:
                evaluator.maybe_evaluate(state.step, total_steps, accelerator, log)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{losses[-1]:.4f}")
            if state.step % recipe.checkpoint.every == 0 or state.step == total_steps:
                save_checkpoint(accelerator, run_dir, state.step, recipe.checkpoint.keep)
            if state.step >= total_steps:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
            continue
        break

    if progress is not None:
        progress.close()
    if accelerator.is_main_process:
        write_curves(log.path, run_dir / "curves.png")
    encoder_dirs = _finish(accelerator, recipe, unwrapped, domains, run_dir, state.step)
    accelerator.end_training()
    return RunResult(run_dir, state.step, encoder_dirs, losses, state.skipped, time.time() - started,
                     evaluator.cpu_seconds if evaluator is not None else 0.0)


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


def _resume_target(recipe: Recipe, run_dir: Path, source: str) -> Path | None:
    resume = recipe.checkpoint.resume
    if resume is None:
        if list_checkpoints(run_dir):
            raise RecipeError(
                f"{source}: {run_dir} already holds checkpoints and checkpoint.resume is null; "
                "use checkpoint.resume=auto to continue, or another output_dir"
            )
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not path.is_dir():
        raise RecipeError(f"{source}: key 'checkpoint.resume' names {resume!r}, which is not a checkpoint folder")
    return path


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


def _log_step(accelerator, recipe, log, state, loss, logs, embeddings, scheduler) -> None:
    every, health_every = recipe.logging.every, recipe.logging.health_every
    if state.step % every and state.step % health_every:
        return
    record: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "loss": accelerator.reduce(loss.detach(), "mean")}
    record["lr"] = scheduler.get_last_lr()[0]
    record.update({k: v for k, v in logs.items()})
    record["skipped_samples"] = state.skipped
    if embeddings is not None and state.step % health_every == 0:
        record.update(health(*embeddings))
    scalars = {k: to_float(v) for k, v in record.items() if k != "step"}
    accelerator.log(scalars, step=state.step)
    log.write({"step": state.step, **scalars})


def _finish(accelerator: Accelerator, recipe: Recipe, model: SSLModel, domains: dict[str, Domain],
            run_dir: Path, steps: int) -> dict[str, Path]:
    """Probe each encoder as the recipe asks, save it in Hugging Face format with its model card
    (recipe, data, steps, hardware, results), and push it when the recipe says so. Main process."""
    from multissl.hub import ModelCardInfo, push_to_hub, save_encoder
    from multissl.probes import results_table, run_probes, save_results

    folders = {name: run_dir / "encoders" / name for name in model.encoders}
    _attach_joint_projections(accelerator, model)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        recipe_text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
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
            card = ModelCardInfo(
                model_name=recipe.hub.repo_id or f"{Path(recipe.output_dir).name}-{name}",
                description=recipe.description, domain=recipe.domains[name].type or name,
                objective=", ".join(objectives), architecture=recipe.domains[name].encoder.architecture,
                recipe=recipe_text, datasets=[(recipe.domains[name].data or recipe.data).path], steps=steps,
                hardware=_hardware(accelerator), repo_id=recipe.hub.repo_id, results=results,
            )
            save_encoder(encoder, folders[name], card)
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


def _progress(accelerator: Accelerator, recipe: Recipe, total: int, done: int):
    if not (recipe.logging.progress_bar and accelerator.is_main_process):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="train", dynamic_ncols=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m multissl.train RECIPE [key=value ...]`` (also what ``accelerate launch`` runs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    recipe_path, overrides = argv[0], argv[1:]
    try:
        recipe = read_recipe(recipe_path, overrides)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = train(recipe, recipe_path)
    if int(os.environ.get("RANK", "0")) == 0:
        for name, folder in result.encoder_dirs.items():
            print(f"encoder '{name}' saved to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
