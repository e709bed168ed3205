"""Recipes: a YAML file mapped onto typed dataclasses, with ``key=value`` overrides.

A recipe names one dataset, the domains that read it (each with its encoder), the objectives that
train those encoders, and how to optimise, log, checkpoint, probe and publish. Every key is
checked before any data is read, against the dataclasses below and against the typed
declarations of what each section's ``options`` fill (a domain's config dataclass, an objective's
constructor, the probes' options): an unknown key (with the close matches), a wrong type, a value
out of range or a missing local file is one :class:`RecipeError` naming the recipe file and the
full key, e.g. ``recipes/simclr-image.yaml: unknown key 'objectives[0].options.temprature' (did you
mean 'temperature'?)``.

A minimal recipe::

    data: {path: sklearn:digits, columns: {image: image, label: label}}
    domains:
      image:
        options: {image_size: 32, channels: 1}
        encoder: {architecture: resnet, size: tiny}
    objectives:
      - {name: simclr, domains: [image], options: {temperature: 0.2}}
    train: {batch_size: 128, max_steps: 200}

Overrides use dotted paths, list items by index (``objectives.0`` or ``objectives[0]``), values
parsed as YAML (``3e-4`` is a number): ``train.batch_size=64 objectives.0.options.temperature=0.1
domains.image.encoder.size=small``.

The core knows no concrete domain: the caller that does (the engine, the CLI) passes
``domain_config``, which maps a domain's registry name to its config dataclass, so domain options
are checked here too.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import yaml

from multissl.domain import DataConfig, EncoderConfig
from multissl.options import (
    NonNegativeFloat,
    NonNegativeInt,
    OptionError,
    PositiveFloat,
    PositiveInt,
    Range,
    build,
    closest,
    convert,
    format_key,
    load_yaml,
)

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
    "EvaluationConfig",
    "HubConfig",
    "Recipe",
    "MAY_CHANGE_ON_RESUME",
    "load_recipe",
    "parse_recipe",
    "apply_overrides",
    "recipe_to_dict",
    "recipes_dir",
    "resolve_recipe",
    "recipe_help",
]


class RecipeError(OptionError):
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
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    lr_reference_batch: PositiveInt = 256


@dataclass
class ScheduleConfig:
    """Linear warmup then cosine decay to ``final_lr_fraction`` of the peak.
    ``warmup`` below 1 is a fraction of the run, otherwise a number of steps."""

    warmup: NonNegativeFloat = 0.05
    final_lr_fraction: Annotated[float, Range(0, 1)] = 0.0


@dataclass
class TrainConfig:
    """``batch_size`` is per process. Gradient accumulation sums gradients of several small
    contrastive batches: it does NOT enlarge the contrastive batch (negatives stay per micro
    batch); use more processes or GradCache for that. The run's length is ``max_steps`` optimiser
    steps or ``epochs`` passes over the data: exactly one in a recipe file, and an override of
    ``max_steps`` replaces the file's ``epochs`` (``train.max_steps=20`` alone makes a quick run).

    ``batch_size`` must be at least what every objective is defined for (``Objective.min_batch_size``
    on the global batch, 2 rows per process under per-process batch norm), and with ``drop_last``
    the data must hold one global batch; both are checked before training. A micro batch that
    bad-sample skips leave too small is skipped (counted); more than
    ``max_skipped_batches_in_row`` of them in a row stop the run."""

    batch_size: PositiveInt = 256
    global_batchnorm: bool = False
    find_unused_parameters: bool = False
    max_steps: PositiveInt | None = None
    epochs: PositiveFloat | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_accumulation: PositiveInt = 1
    grad_clip: PositiveFloat | None = None
    compile: bool = False
    channels_last: bool = False
    seed: int = 0
    num_workers: NonNegativeInt = 0
    drop_last: bool = True
    max_skipped_batches_in_row: PositiveInt = 10


@dataclass
class LoggingConfig:
    """Scalars every ``every`` steps to the trackers and ``log.jsonl``; representation health
    (embedding std, effective rank, alignment, uniformity) every ``health_every`` steps."""

    every: PositiveInt = 10
    health_every: PositiveInt = 50
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True


@dataclass
class CheckpointConfig:
    """``resume``: "auto" continues the newest intact checkpoint in the run folder (a newer one
    whose files do not match their manifest is skipped with a warning naming the file), a path
    resumes that checkpoint (an error if it is damaged), null starts fresh (refusing to overwrite
    existing checkpoints). A checkpoint holding a pickle is always refused.

    A resume needs the recipe the checkpoint was trained with, except the fields in
    :data:`MAY_CHANGE_ON_RESUME` (the run's length, logging, checkpoint cadence, workers,
    ``torch.compile``, probes, the Hub, the bad-sample policy); any other difference (data, domains
    and encoders, objectives, batch, seed, precision, optimiser, schedule) stops the run naming the
    fields: start a new run with another ``output_dir`` instead."""

    every: PositiveInt = 500
    keep: NonNegativeInt = 2
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
class EvaluationConfig:
    """Online evaluation while training: is the encoder getting better? (``multissl.probes.online``)

    On when ``data`` or ``held_out_fraction`` is set (exactly one). The labelled rows are ``data``,
    a validation set whose ``columns`` map a ``label`` role, or ``held_out_fraction`` of the run's
    own rows (they need a label column), drawn with ``train.seed`` and then never trained on.

    At step 0, every ``every`` steps (null: a tenth of the run, or less often where embedding the
    rows would cost more than ~3% of the training forward passes in between) and at the last step, the main
    process embeds at most ``max_rows`` of them (a seeded subset) with the current encoder of
    ``domain`` (null: the first domain), frozen, in eval mode, and logs to ``log.jsonl``, the
    trackers and ``curves.png``: ``online/knn_top1``, weighted kNN (cosine, ``k`` neighbours,
    weights ``exp(s / temperature)``), every row voted on by the others (leave-one-out); with
    ``linear``, ``online/linear_top1``, a logistic-regression probe on the detached features,
    fit on one half and scored on the other, both ways (``linear_weight_decay``: its L2 penalty
    on standardised features). The other processes do not wait for it beyond their next
    collective; the training RNG streams are left untouched, so a run's training is the same with
    and without it, and a resumed run logs the same values.
    """

    every: PositiveInt | None = None
    domain: str | None = None
    data: DataConfig | None = None
    held_out_fraction: Annotated[float, Range(0, 1, low_open=True)] | None = None
    max_rows: Annotated[int, Range(2)] = 2000
    k: PositiveInt = 20
    temperature: PositiveFloat = 0.07
    linear: bool = False
    linear_weight_decay: NonNegativeFloat = 1e-3
    batch_size: PositiveInt = 256

    @property
    def enabled(self) -> bool:
        return self.data is not None or self.held_out_fraction is not None


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
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    hub: HubConfig = field(default_factory=HubConfig)


#: recipe fields a resumed run may change (dotted prefixes, ``*`` for any domain); every other
#: field must equal the checkpoint's, or the resume stops (multissl.checkpoint.resume_checkpoint)
MAY_CHANGE_ON_RESUME: tuple[str, ...] = (
    "description", "output_dir", "train.max_steps", "train.epochs", "train.num_workers", "train.compile",
    "train.find_unused_parameters", "train.max_skipped_batches_in_row", "logging", "checkpoint", "probes", "hub",
    "data.on_bad_sample", "domains.*.data.on_bad_sample",
)


# ----------------------------------------------------------------------------------------------
# help


def recipe_help(width: int = 100) -> str:
    """The recipe's sections and their keys, one section a paragraph (``multissl train --help``):
    each key with its default, read from the dataclasses, so the help cannot drift from them."""
    sections = [
        ("data", DataConfig, "where the data is (folder, file, glob or Hub id) and which columns play which role"),
        ("domains.NAME", DomainSpec, "one modality the run reads: its encoder, its options, optionally its own data"),
        ("domains.NAME.encoder", EncoderConfig, "a stock architecture and size preset, or pretrained weights"),
        ("objectives[i]", ObjectiveSpec, "one method, the domains it trains, its weight in the summed loss"),
        ("optimizer", OptimizerConfig, "adamw, sgd or lars; lr for a global batch of lr_reference_batch"),
        ("schedule", ScheduleConfig, "linear warmup (a fraction of the run, or steps) then cosine decay"),
        ("train", TrainConfig, "batch per process, length (max_steps, or epochs), precision, seed, workers"),
        ("logging", LoggingConfig, "scalars every `every` steps, representation health every `health_every`"),
        ("checkpoint", CheckpointConfig, "how often to save, how many to keep, how to resume"),
        ("probes[i]", ProbeSpec, "probes run on the trained encoder at the end"),
        ("hub", HubConfig, "push the trained encoder to the Hugging Face Hub"),
    ]
    lines = ["recipe sections (every key is optional unless marked *required*; override any with key=value):"]
    for name, cls, summary in sections:
        keys = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                keys.append(f"{f.name}={f.default!r}")
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                value = f.default_factory()  # type: ignore[misc]
                keys.append(f.name if dataclasses.is_dataclass(value) else f"{f.name}={value!r}")
            else:
                keys.append(f"{f.name} *required*")
        lines.append(f"  {name}: {summary}")
        line = "      "
        for key in keys:
            if len(line) + len(key) + 2 > width:
                lines.append(line.rstrip())
                line = "      "
            line += key + "  "
        lines.append(line.rstrip())
    lines.append("  top level: description, pairing='row' ('label' pairs rows of two datasets by label), output_dir")
    lines.append("  objectives[i].options: the method's constructor keywords (multissl recipes lists the methods; a "
                 "wrong key names the close matches); domains.NAME.options: the domain's config "
                 "(domains/<name>/config.py)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# finding recipes


def recipes_dir() -> Path:
    """The recipes shipped beside the package (repository checkout or editable install)."""
    return Path(__file__).resolve().parents[1] / "recipes"


def resolve_recipe(name_or_path: str | os.PathLike) -> str:
    """A recipe file as given, or the shipped recipe of that name (with or without ``.yaml``).

    Raises :class:`RecipeError` when it is neither, suggesting the closest shipped names."""
    text = str(name_or_path)
    if Path(text).is_file():
        return text
    stem = text[:-5] if text.endswith(".yaml") else text
    shipped = recipes_dir() / f"{stem}.yaml"
    if shipped.is_file():
        return str(shipped)
    names = sorted(p.stem for p in recipes_dir().glob("*.yaml"))
    raise RecipeError(f"recipe {text!r} does not exist: it is neither a file nor a shipped recipe"
                      f"{closest(Path(stem).name, names)}; "
                      "`multissl recipes` lists the shipped ones")


# ----------------------------------------------------------------------------------------------
# checks beyond types


def _looks_local(path: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else that names a file is local."""
    if path.startswith(("sklearn:",)):
        return False
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or os.path.splitext(path)[1] != ""


def _glob(path: str):
    import glob

    if any(ch in path for ch in "*?["):
        yield from glob.iglob(path, recursive=True)
    elif os.path.exists(path):
        yield path


def _check_paths(recipe: Recipe, source: str) -> None:
    def check(data: DataConfig | None, key: str) -> None:
        if data is None or not _looks_local(data.path):
            return
        if not any(True for _ in _glob(os.path.expanduser(data.path))):
            raise RecipeError(f"key '{key}.path' names {data.path!r}, which does not exist", f"{key}.path", source)

    check(recipe.data, "data")
    for name, spec in recipe.domains.items():
        check(spec.data, f"domains.{name}.data")
    for i, probe in enumerate(recipe.probes):
        check(probe.train_data, f"probes[{i}].train_data")
        check(probe.test_data, f"probes[{i}].test_data")
    check(recipe.evaluation.data, "evaluation.data")
    for name, spec in recipe.domains.items():
        local = spec.encoder.name_or_path
        if local and _looks_local(local) and not os.path.exists(os.path.expanduser(local)):
            key = f"domains.{name}.encoder.name_or_path"
            raise RecipeError(f"key '{key}' names {local!r}, which does not exist", key, source)


def _check_references(recipe: Recipe, source: str) -> None:
    if not recipe.domains:
        raise RecipeError("key 'domains' must name at least one domain", "domains", source)
    if not recipe.objectives:
        raise RecipeError("key 'objectives' must list at least one objective", "objectives", source)
    for i, objective in enumerate(recipe.objectives):
        for name in objective.domains:
            if name not in recipe.domains:
                key = f"objectives[{i}].domains"
                raise RecipeError(f"key '{key}' names domain {name!r}, not one of {sorted(recipe.domains)}", key, source)
    for i, probe in enumerate(recipe.probes):
        if probe.domain not in recipe.domains:
            key = f"probes[{i}].domain"
            raise RecipeError(f"key '{key}' names {probe.domain!r}, not one of {sorted(recipe.domains)}", key, source)
    if recipe.train.max_steps is None and recipe.train.epochs is None:
        raise RecipeError("set exactly one of 'train.max_steps' and 'train.epochs'", "train", source)
    _check_evaluation(recipe, source)


def _check_evaluation(recipe: Recipe, source: str) -> None:
    evaluation = recipe.evaluation
    if evaluation.data is not None and evaluation.held_out_fraction is not None:
        raise RecipeError("set one of 'evaluation.data' (a labelled validation set) and 'evaluation.held_out_fraction' "
                          "(rows held out from training), not both", "evaluation", source)
    if not evaluation.enabled:
        if evaluation.every is not None:
            raise RecipeError("key 'evaluation.every' needs labelled rows to evaluate: set 'evaluation.data' or "
                              "'evaluation.held_out_fraction'", "evaluation.every", source)
        return
    if evaluation.held_out_fraction is not None:
        if evaluation.held_out_fraction >= 1:
            raise RecipeError(f"key 'evaluation.held_out_fraction' must be below 1 (some rows must stay for training), "
                              f"got {evaluation.held_out_fraction}", "evaluation.held_out_fraction", source)
        if recipe.data.streaming:
            raise RecipeError("key 'evaluation.held_out_fraction' needs map-style data; with streaming data give a "
                              "labelled 'evaluation.data'", "evaluation.held_out_fraction", source)
    if evaluation.domain is not None and evaluation.domain not in recipe.domains:
        raise RecipeError(f"key 'evaluation.domain' names {evaluation.domain!r}, not one of {sorted(recipe.domains)}",
                          "evaluation.domain", source)


def _check_options(recipe: Recipe, source: str, domain_config: Callable[[str], type] | None) -> None:
    """Every ``options`` mapping against its typed declaration; values are stored converted
    (``1e5`` for an int option becomes 100000)."""
    from multissl.objectives import objective_class, objective_options_class

    for i, spec in enumerate(recipe.objectives):
        key = f"objectives[{i}]"
        try:
            cls = objective_class(spec.name)
        except ValueError:
            from multissl.objectives import OBJECTIVES

            raise RecipeError(f"key '{key}.name' names no objective {spec.name!r}{closest(spec.name, OBJECTIVES)}; "
                              f"known: {sorted(OBJECTIVES)}", f"{key}.name", source) from None
        spec.options = _checked(objective_options_class(cls), spec.options, f"{key}.options", source)
    if recipe.probes:
        from multissl.probes.suite import ProbeOptions

        for i, probe in enumerate(recipe.probes):
            probe.options = _checked(ProbeOptions, probe.options, f"probes[{i}].options", source)
    if domain_config is not None:
        for name, spec in recipe.domains.items():
            kind = spec.type or name
            try:
                config_class = domain_config(kind)
            except ValueError as error:
                raise RecipeError(f"key 'domains.{name}': {error}", f"domains.{name}", source) from None
            spec.options = _checked(config_class, spec.options, f"domains.{name}.options", source)


def _checked(declaration: type, options: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    try:
        build(declaration, options, key, source)
        hints = typing.get_type_hints(declaration, include_extras=True)
        return {name: convert(value, hints[name], format_key(key, name), source) for name, value in options.items()}
    except OptionError as error:
        raise RecipeError(error.reason, error.key, source) from None


# ----------------------------------------------------------------------------------------------
# overrides


def _override_path(key: str) -> list[str]:
    """``objectives[0].options.t`` or ``objectives.0.options.t`` -> [objectives, 0, options, t]."""
    return [part for piece in key.split(".") for part in piece.replace("]", "").split("[") if part != ""]


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries (value parsed as YAML) in the raw recipe mapping, in place.

    Setting ``train.max_steps`` removes the file's ``train.epochs`` (a quick run needs one override).
    Pointing a ``data.path`` at local files drops the file's Hub-only settings of that section
    (``subset``, ``format``, a split other than ``train``) unless they are overridden too: your
    folder works with the one override."""
    overridden = {_override_path(item.split("=", 1)[0]).__str__() for item in overrides if "=" in item}
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key=value", item, source)
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw) if raw != "" else ""
        except yaml.YAMLError as error:
            problem = " ".join(str(getattr(error, "problem", "") or error).split())
            raise RecipeError(f"override {item!r}: the value is not valid YAML ({problem}); quote it for the shell, "
                              "e.g. 'key={a: 1, b: 2}'", key, source) from None
        parts = _override_path(key)
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                node = node[_index(part, node, where, source)]
            else:
                child = node.get(part)
                node = node.setdefault(part, {}) if child is None else child
            if not isinstance(node, (dict, list)):
                raise RecipeError(f"override key '{where}' is not a mapping or list", where, source)
        last = parts[-1]
        if isinstance(node, list):
            node[_index(last, node, key, source)] = value
        else:
            node[last] = value
        if parts == ["train", "max_steps"] and value is not None and isinstance(data.get("train"), dict):
            data["train"].pop("epochs", None)
        if parts[-1] == "path" and parts[-2] in ("data", "train_data", "test_data") and isinstance(value, str) \
                and _looks_local(value) and isinstance(node, dict):
            _drop_hub_settings(node, parts[:-1], overridden)
    return data


def _drop_hub_settings(section: dict[str, Any], where: list[str], overridden: set[str]) -> None:
    """A data section now reading local files: its Hub configuration name, builder and Hub split
    no longer apply (``datasets`` names a local folder's split "train")."""
    def given(key: str) -> bool:
        return str(where + [key]) in overridden

    for key in ("subset", "format"):
        if not given(key):
            section.pop(key, None)
    split = section.get("split")
    if not given("split") and isinstance(split, str) and split.split("[")[0].strip() != "train":
        section["split"] = "train"


def _index(part: str, node: list, key: str, source: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(f"override key '{key}' needs an index below {len(node)}", key, source)
    return int(part)


# ----------------------------------------------------------------------------------------------
# entry points


def parse_recipe(data: dict[str, Any], source: str = "<recipe>", check_paths: bool = True,
                 domain_config: Callable[[str], type] | None = None) -> Recipe:
    """A checked :class:`Recipe` from a raw mapping (see the module doc for what is checked)."""
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe is a mapping of keys, got {type(data).__name__}", "", source)
    if isinstance(data.get("train"), dict) and data["train"].get("max_steps") is not None \
            and data["train"].get("epochs") is not None:
        raise RecipeError("set exactly one of 'train.max_steps' and 'train.epochs' (an override of "
                          "train.max_steps replaces the file's epochs; to train by epochs, set "
                          "train.max_steps=null)", "train", source)
    try:
        recipe = build(Recipe, data, "", source)
    except OptionError as error:
        raise RecipeError(error.reason, error.key, source) from None
    _check_references(recipe, source)
    _check_options(recipe, source, domain_config)
    if check_paths:
        _check_paths(recipe, source)
    return recipe


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None, check_paths: bool = True,
                domain_config: Callable[[str], type] | None = None) -> Recipe:
    """Read a YAML recipe (a file, or a shipped recipe's name), apply ``key=value`` overrides,
    check every key, option and local path."""
    source = resolve_recipe(path)
    try:
        data = load_yaml(Path(source).read_text()) or {}
    except Exception as error:  # yaml.YAMLError, or an unreadable file
        raise RecipeError(f"not valid YAML: {str(error).splitlines()[0]}", "", source) from error
    apply_overrides(data, overrides or [], source)
    return parse_recipe(data, source, check_paths=check_paths, domain_config=domain_config)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe (defaults filled in), for the run folder and the model card."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(recipe))
