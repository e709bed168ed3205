"""Recipes: a YAML file mapped onto typed dataclasses, with ``key=value`` overrides.

A recipe names one dataset, the domains that read it (each with its encoder), the objectives that
train those encoders, and how to optimise, log, checkpoint, probe and publish. Every key is
checked against the dataclasses below before anything runs: an unknown key, a wrong type or a
missing local file is a :class:`RecipeError` naming the key and the recipe file.

A minimal recipe::

    data: {path: sklearn:digits, columns: {image: image, label: label}}
    domains:
      image:
        options: {image_size: 32, channels: 1}
        encoder: {architecture: resnet, size: tiny}
    objectives:
      - {name: simclr, domains: [image], options: {temperature: 0.2}}
    train: {batch_size: 128, max_steps: 200}

Overrides use dotted paths, list items by index, values parsed as YAML:
``train.batch_size=64 objectives.0.options.temperature=0.1 domains.image.encoder.size=small``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from domains.base import DataConfig, EncoderConfig

__all__ = [
    "RecipeError",
    "DomainSpec",
    "ObjectiveSpec",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "LoggingConfig",
    "CheckpointConfig",
    "ProbeSpec",
    "HubConfig",
    "Recipe",
    "load_recipe",
    "parse_recipe",
    "apply_overrides",
    "recipe_to_dict",
]


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file and the key."""


@dataclass
class DomainSpec:
    """One modality the run reads. ``type`` is the domain registry name (defaults to the key the
    domain has under ``domains``); ``options`` fill the domain's own config dataclass; ``data``
    gives this domain its own dataset instead of the run's (paired by ``Recipe.pairing``)."""

    encoder: EncoderConfig
    type: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    data: DataConfig | None = None


@dataclass
class ObjectiveSpec:
    """One method. ``domains`` lists the domain keys it trains (two for cross-modal methods);
    several objectives may share a domain and so its encoder; the run minimises the weighted sum."""

    name: str
    domains: list[str]
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    """``lr`` is the base rate for a global batch of ``lr_reference_batch``; ``lr_scaling``
    scales it to the real global batch ("linear" as SimCLR/MoCo, "sqrt" as SimCLR for LARS at
    large batch, "none"). Biases, norms and temperatures are excluded from weight decay."""

    name: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    lr_reference_batch: int = 256


@dataclass
class ScheduleConfig:
    """Linear warmup then cosine decay to ``final_lr_fraction`` of the peak.
    ``warmup`` below 1 is a fraction of the run, otherwise a number of steps."""

    warmup: float = 0.05
    final_lr_fraction: float = 0.0


@dataclass
class TrainConfig:
    """``batch_size`` is per process. Gradient accumulation sums gradients of several small
    contrastive batches: it does NOT enlarge the contrastive batch (negatives stay per micro
    batch); use more processes or GradCache for that."""

    batch_size: int = 256
    global_batchnorm: bool = False
    find_unused_parameters: bool = False
    max_steps: int | None = None
    epochs: float | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_accumulation: int = 1
    grad_clip: float | None = None
    compile: bool = False
    channels_last: bool = False
    seed: int = 0
    num_workers: int = 0
    drop_last: bool = True


@dataclass
class LoggingConfig:
    """Scalars every ``every`` steps to the trackers and ``log.jsonl``; representation health
    (embedding std, effective rank, alignment, uniformity) every ``health_every`` steps."""

    every: int = 10
    health_every: int = 50
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True


@dataclass
class CheckpointConfig:
    """``resume``: "auto" continues the newest complete checkpoint in the run folder, a path
    resumes that checkpoint, null starts fresh (refusing to overwrite existing checkpoints)."""

    every: int = 500
    keep: int = 2
    resume: str | None = "auto"


@dataclass
class ProbeSpec:
    """A probe run on the trained encoder at the end (see ``multissl.probes``)."""

    name: str
    domain: str
    train_data: DataConfig | None = None
    test_data: DataConfig | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class HubConfig:
    repo_id: str | None = None
    private: bool = True
    push: bool = False
    revision: str | None = None


@dataclass
class Recipe:
    """``pairing`` says how rows of domains line up: "row" (row i of every domain's data is one
    example: one captioned dataset, or equally long datasets) or "label" (the first domain's rows
    lead; the others contribute a row of the same label, e.g. an MNIST image and a spoken digit)."""

    data: DataConfig
    domains: dict[str, DomainSpec]
    objectives: list[ObjectiveSpec]
    description: str = ""
    pairing: Literal["row", "label"] = "row"
    output_dir: str = "runs/default"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    probes: list[ProbeSpec] = field(default_factory=list)
    hub: HubConfig = field(default_factory=HubConfig)


# ----------------------------------------------------------------------------------------------
# typed parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> RecipeError:
        return RecipeError(f"{source}: key '{key}' expects {expected}, got {value!r}")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arm, key, source)
            except RecipeError:
                continue
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value not in args:
            raise fail("one of " + ", ".join(repr(a) for a in args))
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(f"a mapping ({tp.__name__})")
        return _build(tp, value, key, source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise fail(f"a list of {len(args)} items")
            return tuple(_convert(v, a, f"{key}.{i}", source) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}.{i}", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("a mapping")
        item = args[1] if args else Any
        return {str(k): _convert(v, item, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    return value


def _build(cls: type, data: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        raise RecipeError(f"{source}: unknown key {where}; known keys here: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise RecipeError(f"{source}: missing required key '{key}'")
    return cls(**kwargs)


def _looks_local(path: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else that names a file is local."""
    if path.startswith(("sklearn:",)):
        return False
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or os.path.splitext(path)[1] != ""


def _check_paths(recipe: Recipe, source: str) -> None:
    def check(data: DataConfig | None, key: str) -> None:
        if data is None or not _looks_local(data.path):
            return
        path = os.path.expanduser(data.path)
        if not any(True for _ in _glob(path)):
            raise RecipeError(f"{source}: key '{key}.path' names {data.path!r}, which does not exist")

    check(recipe.data, "data")
    for name, spec in recipe.domains.items():
        check(spec.data, f"domains.{name}.data")
    for i, probe in enumerate(recipe.probes):
        check(probe.train_data, f"probes.{i}.train_data")
        check(probe.test_data, f"probes.{i}.test_data")
    for name, spec in recipe.domains.items():
        local = spec.encoder.name_or_path
        if local and _looks_local(local) and not os.path.exists(os.path.expanduser(local)):
            raise RecipeError(f"{source}: key 'domains.{name}.encoder.name_or_path' names {local!r}, which does not exist")


def _glob(path: str):
    import glob

    if any(ch in path for ch in "*?["):
        yield from glob.iglob(path, recursive=True)
    elif os.path.exists(path):
        yield path


def _check_references(recipe: Recipe, source: str) -> None:
    if not recipe.domains:
        raise RecipeError(f"{source}: key 'domains' must name at least one domain")
    if not recipe.objectives:
        raise RecipeError(f"{source}: key 'objectives' must list at least one objective")
    for i, objective in enumerate(recipe.objectives):
        for name in objective.domains:
            if name not in recipe.domains:
                raise RecipeError(
                    f"{source}: key 'objectives.{i}.domains' names domain {name!r}, not one of {sorted(recipe.domains)}"
                )
    for i, probe in enumerate(recipe.probes):
        if probe.domain not in recipe.domains:
            raise RecipeError(f"{source}: key 'probes.{i}.domain' names {probe.domain!r}, not one of {sorted(recipe.domains)}")
    train = recipe.train
    if (train.max_steps is None) == (train.epochs is None):
        raise RecipeError(f"{source}: set exactly one of 'train.max_steps' and 'train.epochs'")
    for key, value in (("train.batch_size", train.batch_size), ("train.gradient_accumulation", train.gradient_accumulation),
                       ("logging.every", recipe.logging.every), ("checkpoint.every", recipe.checkpoint.every)):
        if value < 1:
            raise RecipeError(f"{source}: key '{key}' must be at least 1, got {value}")


# ----------------------------------------------------------------------------------------------
# overrides


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries (value parsed as YAML) in the raw recipe mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"{source}: override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        parts = key.split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                node = node[_index(part, node, where, source)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise RecipeError(f"{source}: override key '{where}' is not a mapping or list")
        last = parts[-1]
        if isinstance(node, list):
            node[_index(last, node, key, source)] = value
        else:
            node[last] = value
    return data


def _index(part: str, node: list, key: str, source: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(f"{source}: override key '{key}' needs an index below {len(node)}")
    return int(part)


# ----------------------------------------------------------------------------------------------
# entry points


def parse_recipe(data: dict[str, Any], source: str = "<recipe>", check_paths: bool = True) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of keys, got {type(data).__name__}")
    recipe = _build(Recipe, data, "", source)
    _check_references(recipe, source)
    if check_paths:
        _check_paths(recipe, source)
    return recipe


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None, check_paths: bool = True) -> Recipe:
    """Read a YAML recipe, apply ``key=value`` overrides, check every key and local path."""
    source = str(path)
    if not Path(path).is_file():
        raise RecipeError(f"recipe file {source!r} does not exist")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{source}: not valid YAML: {error}") from error
    apply_overrides(data, overrides or [], source)
    return parse_recipe(data, source, check_paths=check_paths)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe (defaults filled in), for the run folder and the model card."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(recipe))
