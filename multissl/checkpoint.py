"""Checkpoints that never run code, are never half-written, and are checked before they are used.

Save to a hidden staging folder, write a manifest of every file (size and SHA-256) as the
``COMPLETE`` marker, then rename: a run killed at any instant leaves the last complete checkpoint
intact. Nothing is pickled: tensors are safetensors, everything else is JSON, and a folder that
holds a pickle is refused before anything in it is read (a pickle runs arbitrary code when it is
loaded, so a checkpoint from someone else must never be unpickled).

Layout of a run folder::

    RUN/checkpoints/step-00000500/
        model.safetensors           every parameter and persistent buffer of every objective
                                    (queues, EMA teachers, temperatures), encoders included
        optimizer.safetensors       the optimiser's per-parameter tensors (moments, momentum)
        training_state.json         the optimiser's groups and scalars, the schedule, the data
                                    position, skip counts, the process count, the recipe
        rng_state_<rank>.safetensors  each process's torch (and CUDA) generator, with Python's
                                    and NumPy's generator states as JSON in its metadata
        COMPLETE                    the manifest: {"format", "step", "files": {name: {bytes, sha256}}}
    RUN/encoders/NAME/              the encoder in Hugging Face format (safetensors)

Resuming (:func:`resume_checkpoint`): ``"auto"`` takes the newest checkpoint whose files match its
manifest, warning about each newer one that does not (naming the file); an explicit folder that
does not match is an error naming the file. Either way the checkpoint's recipe must match the
run's in every field that cannot change mid-run (:data:`multissl.config.MAY_CHANGE_ON_RESUME`
lists those that may).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "CorruptCheckpointError", "Resumable",
    "checkpoint_dir", "list_checkpoints", "latest_checkpoint", "save_checkpoint", "load_checkpoint",
    "verify_checkpoint", "resume_checkpoint", "recipe_differences", "check_supported", "fault_point",
]

FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})$")
_MARKER = "COMPLETE"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "training_state.json"
_RNG_FILE = "rng_state_{}.safetensors"
#: suffixes of the formats that unpickle on load (torch.save, pickle, joblib, accelerate's states)
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".joblib", ".npy", ".npz")
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed; the message names the folder, the file and the fix."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint holds a pickle (which could run code when loaded): refused, nothing read."""


class CorruptCheckpointError(CheckpointError):
    """A file of the checkpoint is missing, truncated or altered (its size or SHA-256 differs
    from the manifest written when the checkpoint completed)."""


@dataclass
class Resumable:
    """What a checkpoint holds. ``model`` is the unwrapped module (no DDP / compile wrapper);
    ``objects`` are named objects whose ``state_dict()`` is JSON-able (the schedule, the data
    position, skip counts) and whose ``load_state_dict`` restores it; ``recipe`` is the run's
    resolved recipe, stored so that a resume can check it has not changed."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    objects: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None


# ----------------------------------------------------------------------------------------------
# finding checkpoints


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first. Half-written (unmarked) folders are ignored."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and (p / _MARKER).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def check_supported(accelerator: Accelerator) -> None:
    """The pickle-free format covers one process and DDP (every rank holds the whole model and
    optimiser). FSDP and DeepSpeed shard them and save through formats that pickle."""
    kind = accelerator.distributed_type
    if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        raise CheckpointError(
            f"checkpoints under {kind.value} are not supported: multissl's checkpoints hold whole, unsharded "
            "state without pickles; run with DDP (recipes/accelerate/multi_gpu.yaml) instead"
        )


# ----------------------------------------------------------------------------------------------
# saving


def save_checkpoint(accelerator: Accelerator, run_dir: str | Path, step: int, keep: int, state: Resumable) -> Path:
    """Save the whole training state for ``step``; keep the newest ``keep`` complete checkpoints.

    Every process takes part (each saves its own generator states); only the main process writes
    the shared files, the manifest, renames and prunes, after all processes have written.
    """
    folder = checkpoint_dir(run_dir)
    final = folder / f"step-{step:08d}"
    staging = folder / f".staging-step-{step:08d}"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if main:
        # force_contiguous: channels_last weights are saved in the standard layout (loading copies back)
        save_model(state.model, str(staging / MODEL_FILE), metadata={"format": "pt"}, force_contiguous=True)
        tensors, optimizer_meta = _split_optimizer_state(state.optimizer.state_dict())
        save_file(tensors, str(staging / OPTIMIZER_FILE), metadata={"format": "pt"})
        training = {
            "format": FORMAT,
            "step": step,
            "processes": accelerator.num_processes,
            "accelerator_step": accelerator.step,
            "optimizer": optimizer_meta,
            "objects": {name: _json_checked(obj.state_dict(), name) for name, obj in state.objects.items()},
            "scaler": _json_checked(accelerator.scaler.state_dict(), "scaler") if accelerator.scaler is not None else None,
            "recipe": state.recipe,
        }
        (staging / STATE_FILE).write_text(json.dumps(training, indent=1, allow_nan=True) + "\n")
    fault_point("checkpoint", step)
    _save_rng_state(staging / _RNG_FILE.format(accelerator.process_index))
    accelerator.wait_for_everyone()
    if main:
        files = {p.name: _describe(p) for p in sorted(staging.iterdir()) if p.is_file()}
        _write_durably(staging / _MARKER, json.dumps({"format": FORMAT, "step": step, "files": files}, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def _describe(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        os.fsync(handle.fileno())
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _write_durably(path: Path, text: str) -> None:
    with path.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _json_checked(value: Any, where: str) -> Any:
    """``value`` when it is plain JSON (numbers, strings, lists, dicts), else a TypeError naming
    where: checkpoints hold no pickles, so state that is not JSON must be stored as tensors."""
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise TypeError(f"checkpoint state {where!r} is not plain JSON ({error}); store tensors as safetensors") from None
    return value


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser ``state_dict`` as safetensors tensors and JSON: each per-parameter entry's
    tensors under ``"<param>/<name>"``, its other values and the param groups as JSON."""
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        described = {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                key = f"{index}/{name}"
                tensors[key] = value.detach().cpu().contiguous()
                described[name] = {"tensor": key}
            else:
                described[name] = {"value": _json_checked(value, f"optimizer state {index}.{name}")}
        entries[str(index)] = described
    return tensors, {"state": entries, "param_groups": _json_checked(state["param_groups"], "optimizer param_groups")}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for index, entry in meta["state"].items():
        state[int(index)] = {name: tensors[spec["tensor"]] if "tensor" in spec else spec["value"]
                             for name, spec in entry.items()}
    groups = []
    for saved, current in zip(meta["param_groups"], live["param_groups"]):
        # JSON has no tuples: give back the live optimiser's types (AdamW's betas)
        groups.append({key: tuple(value) if isinstance(current.get(key), tuple) else value for key, value in saved.items()})
    return {"state": state, "param_groups": groups}


def _save_rng_state(path: Path) -> None:
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{index}"] = value
    metadata = {
        "python": json.dumps([version, list(internal), gauss]),
        "numpy": json.dumps([kind, [int(k) for k in keys], int(position), int(has_gauss), float(cached)]),
    }
    save_file(tensors, str(path), metadata=metadata)


def _load_rng_state(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    try:
        version, internal, gauss = json.loads(metadata["python"])
        kind, keys, position, has_gauss, cached = json.loads(metadata["numpy"])
    except (KeyError, ValueError, TypeError) as error:
        raise CorruptCheckpointError(f"{path}: generator states unreadable ({error})") from None
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[key] for key in sorted((k for k in tensors if k.startswith("cuda/")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            raise CheckpointError(f"{path}: saved on {len(cuda)} CUDA devices, {torch.cuda.device_count()} visible now")
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------------------------
# checking and loading


def _refuse_pickles(folder: Path) -> None:
    pickles = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            pickles.append(path.name)
            continue
        with path.open("rb") as handle:
            head = handle.read(4)
        if path.name != _MARKER and not path.name.endswith((".json", ".safetensors")) and head.startswith(_PICKLE_MAGIC):
            pickles.append(path.name)
    if pickles:
        raise UnsafeCheckpointError(
            f"checkpoint {folder} holds pickle file(s) {', '.join(pickles)}: a pickle can run code when it is "
            "loaded, so multissl never loads one (a checkpoint from an older version or from someone else); "
            "nothing was read. Start a new run (another output_dir) or resume a checkpoint multissl wrote"
        )


def verify_checkpoint(folder: str | Path) -> None:
    """Raise :class:`UnsafeCheckpointError` when ``folder`` holds a pickle, and
    :class:`CorruptCheckpointError` (naming the file) when a file differs from the manifest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} is not a folder")
    _refuse_pickles(folder)
    marker = folder / _MARKER
    if not marker.is_file():
        raise CorruptCheckpointError(f"checkpoint {folder} has no {_MARKER} manifest: it was never completed")
    try:
        manifest = json.loads(marker.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CorruptCheckpointError(f"{marker}: the manifest is unreadable (truncated, or written by an older multissl)") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{marker}: checkpoint format {manifest.get('format')!r}, this multissl reads {FORMAT}")
    extra = sorted(p.name for p in folder.iterdir() if p.name != _MARKER and p.name not in files)
    if extra:
        raise CorruptCheckpointError(f"checkpoint {folder} holds file(s) {extra} its manifest does not list")
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise CorruptCheckpointError(f"{path}: missing (the manifest lists it)")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CorruptCheckpointError(f"{path}: {size} bytes, the manifest says {expected['bytes']} (truncated or altered)")
        if _describe(path)["sha256"] != expected["sha256"]:
            raise CorruptCheckpointError(f"{path}: SHA-256 differs from the manifest (the file was altered or damaged)")


def read_training_state(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CorruptCheckpointError(f"{path}: unreadable ({error})") from None


def load_checkpoint(accelerator: Accelerator, folder: str | Path, state: Resumable, verified: bool = False) -> dict[str, Any]:
    """Restore ``state`` (model, optimiser, objects), the gradient scaler, Accelerate's step
    counter and this process's generators from ``folder``; returns the saved training state.
    Checks the folder first (:func:`verify_checkpoint`) unless ``verified``."""
    folder = Path(folder)
    if not verified:
        verify_checkpoint(folder)
    training = read_training_state(folder)
    if training.get("processes") != accelerator.num_processes:
        raise CheckpointError(
            f"{folder} was written by {training.get('processes')} process(es), this run has "
            f"{accelerator.num_processes}: resume with the same number of processes (each restores its own "
            "generators and data shard)"
        )
    current = None
    try:
        current = MODEL_FILE
        load_model(state.model, str(folder / MODEL_FILE), strict=True, device=str(accelerator.device))
        current = OPTIMIZER_FILE
        tensors = load_file(str(folder / OPTIMIZER_FILE), device="cpu")
        state.optimizer.load_state_dict(_join_optimizer_state(tensors, training["optimizer"], state.optimizer.state_dict()))
        current = STATE_FILE
        for name, obj in state.objects.items():
            obj.load_state_dict(training["objects"][name])
        if accelerator.scaler is not None and training.get("scaler") is not None:
            accelerator.scaler.load_state_dict(training["scaler"])
        accelerator.step = int(training["accelerator_step"])
        current = _RNG_FILE.format(accelerator.process_index)
        _load_rng_state(folder / current)
    except CheckpointError:
        raise
    except (SafetensorError, KeyError, ValueError, RuntimeError, TypeError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{folder / current}: cannot be restored into this run ({type(error).__name__}: {first})") from error
    return training


# ----------------------------------------------------------------------------------------------
# choosing what to resume


def recipe_differences(saved: dict[str, Any], current: dict[str, Any], may_change: tuple[str, ...]) -> list[str]:
    """``key (old -> new)`` for every field whose value differs between two resolved recipes,
    skipping the dotted prefixes in ``may_change`` (``*`` matches any one name); ``saved`` comes
    from JSON, so tuples compare as lists."""
    saved, current = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
    patterns = [p.split(".") for p in may_change]
    found: list[str] = []

    def allowed(path: list[str]) -> bool:
        names = [part.split("[")[0] for part in path]
        return any(len(names) >= len(p) and all(q in ("*", n) for q, n in zip(p, names)) for p in patterns)

    def walk(a: Any, b: Any, path: list[str]) -> None:
        if path and allowed(path):
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                walk(a.get(name), b.get(name), [*path, str(name)])
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and path:
            for index, (x, y) in enumerate(zip(a, b)):
                walk(x, y, [*path[:-1], f"{path[-1]}[{index}]"])
        elif a != b:
            found.append(f"{'.'.join(path)} ({json.dumps(a)} -> {json.dumps(b)})")

    walk(saved, current, [])
    return found


def resume_checkpoint(run_dir: str | Path, resume: str | None, recipe: dict[str, Any], may_change: tuple[str, ...],
                      warn: Callable[[str], None] = print) -> Path | None:
    """The checkpoint a run resumes from (verified), or None to start fresh.

    ``resume``: None starts fresh and refuses a run folder that already holds checkpoints;
    "auto" takes the newest intact checkpoint (a corrupt newer one is skipped with a warning
    naming its file; a pickle anywhere stops the run); a path must be an intact checkpoint.
    Raises :class:`CheckpointError` when the checkpoint's recipe differs in a field outside
    ``may_change``, naming the fields.
    """
    run_dir = Path(run_dir)
    if resume is None:
        if list_checkpoints(run_dir):
            raise CheckpointError(
                f"{run_dir} already holds checkpoints and checkpoint.resume is null; use checkpoint.resume=auto "
                "to continue, or another output_dir to start a new run"
            )
        return None
    if resume == "auto":
        candidates = list(reversed(list_checkpoints(run_dir)))
        if not candidates:
            return None
        problems = []
        chosen = None
        for folder in candidates:
            try:
                verify_checkpoint(folder)
            except CorruptCheckpointError as error:
                warn(f"warning: skipping corrupt checkpoint: {error}")
                problems.append(str(error))
                continue
            chosen = folder
            break
        if chosen is None:
            raise CorruptCheckpointError(
                f"no intact checkpoint in {checkpoint_dir(run_dir)} ({'; '.join(problems)}); remove them to start "
                "again, or use another output_dir"
            )
    else:
        chosen = Path(resume)
        if not chosen.is_dir():
            raise CheckpointError(f"key 'checkpoint.resume' names {resume!r}, which is not a checkpoint folder")
        verify_checkpoint(chosen)
    saved = read_training_state(chosen).get("recipe")
    if saved is not None:
        differences = recipe_differences(saved, recipe, may_change)
        if differences:
            raise CheckpointError(
                f"the recipe differs from the one checkpoint {chosen} was trained with, in field(s) that cannot change "
                f"mid-run: {'; '.join(differences)}. Start a new run in another folder (output_dir=...), or rerun "
                f"with the checkpoint's values (its recipe is in {chosen / STATE_FILE})"
            )
    return chosen


# ----------------------------------------------------------------------------------------------
# fault injection for the tests


def fault_point(point: str, step: int) -> None:
    """Kill this process with SIGKILL at ``point`` ("step": after an optimiser step, before its
    checkpoint; "checkpoint": in the middle of writing one) of ``step`` when the environment
    variable ``MULTISSL_TEST_KILL`` says ``point:step`` (the fault tests' deterministic kill -9)."""
    if os.environ.get("MULTISSL_TEST_KILL") == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
