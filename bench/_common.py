"""What every benchmark in ``bench/`` shares: machine info, timing, and the results file format.

Every script writes ``bench/results/<name>.json``, and ``bench/report.py`` builds
``bench/RESULTS.md`` from those files alone. One file is one object:

    {
      "schema": 1,
      "benchmark": "bench/speed_peers.py",       # the script that wrote it
      "title": "Loss kernels against peer libraries",
      "kind": "speed" | "quality",
      "description": "what is measured and how (markdown, one paragraph)",
      "command": "python bench/speed_peers.py --quick",   # exactly what ran
      "date": "2026-11-23T02:00:00+00:00",                 # UTC, at the end of the run
      "machine": {cpu_model, logical_cores, torch_threads, cpu_capability, accelerator, torch,
                  torchvision, python, platform, git_commit, uncommitted_changes,
                  load_average_at_start, load_average_at_end},   # see machine_info()
      "seeds": {"torch": 0, ...},
      "budget": {"quick": false, "repetitions": 7, "warmup": 1, "wall_seconds": 812.4, ...},
      "settings": {...},                        # anything else that fixes the numbers
      "notes": ["...", ...],                    # caveats about the whole file
      "rows": [{...}, ...]
    }

Rows are flat dicts of scalars (str, int, float, bool, None). A key ending in ``_samples`` holds
raw measurements (a list) and stays out of the tables. A row may carry ``"notes"``: the reason
it reads as it does, above all when multissl loses it (the report quotes it verbatim), and
``"section"``: rows of one file with different columns get one table per section.

Speed files (``kind: "speed"``) also say which columns to put side by side:

    "key_columns": ["loss", "batch", "dim"],     # what names a row in the report's sentences
    "comparisons": [
      {"multissl": "multissl_ms", "peer": "peer_ms", "better": "lower",
       "peer_label": "peer"}                     # a column naming the peer, or a fixed name
    ]

A row where the multissl column is worse than the peer column (``better`` says which way is
better) is a row multissl loses; the report says so, with the row's own ``notes`` as the reason.
Rows where either value is missing (None) are not compared.

Quality files (``kind: "quality"``, ``bench/results/quality_*.json``, written by the quality
benchmarks) have one row per (task, contender, metric), the fields of :class:`QualityRow`::

    {"task": "CIFAR-10 linear probe, SimCLR ResNet-18 200 epochs", "contender": "multissl",
     "metric": "top1_accuracy", "value": 0.871, "higher_is_better": true,
     "budget_seconds": 3600.0, "notes": "..."}

A contender whose name starts with ``multissl`` is ours; every other one is a peer. For each
(task, metric), a multissl row whose value is worse than a peer's on the same task and metric
is a row multissl loses. Use :func:`write_results` with ``kind="quality"`` and
``QualityRow(...).as_row()``; it checks the rows before writing.

A quality benchmark is a script ``bench/quality_<name>.py`` that accepts ``--quick`` (a smoke run
of a few minutes) and writes ``bench/results/quality_<name>.json``; ``bench/run_all.py`` finds and
runs it after the speed benchmarks, and ``bench/report.py`` puts it under "Quality".
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"
SCHEMA_VERSION = 1
KINDS = ("speed", "quality")
REQUIRED_KEYS = ("schema", "benchmark", "title", "kind", "command", "date", "machine", "seeds", "budget", "rows")
QUALITY_FIELDS = ("task", "contender", "metric", "value", "higher_is_better", "budget_seconds", "notes")

__all__ = [
    "ROOT", "RESULTS_DIR", "SHARED_DATA", "SCHEMA_VERSION", "QualityRow", "ResultsFormatError",
    "machine_info", "describe_machine", "git_state", "command_line", "alternate_timings", "median", "write_results",
    "validate_results", "is_multissl", "losing_rows",
]


class ResultsFormatError(ValueError):
    """A results file that does not follow the format above; the message names the file and key."""


@dataclass
class QualityRow:
    """One measured number of a quality benchmark (see the module docstring)."""

    task: str
    contender: str
    metric: str
    value: float | None
    higher_is_better: bool
    budget_seconds: float | None
    notes: str = ""

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_state(measured: Sequence[str] = ("multissl", "domains", "bench")) -> tuple[str, list[str]]:
    """HEAD's commit and which of the ``measured`` paths hold uncommitted changes.

    A result is reproducible from its commit only when the code it measured was committed; the
    paths that were not are recorded beside the commit rather than hidden.
    """

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    # staged or not, against HEAD; results files are outputs, not measured code
    changed = git("diff", "--name-only", "HEAD", "--", *measured, ":(exclude)bench/results", ":(exclude)bench/RESULTS.md")
    return commit, sorted({line.strip() for line in changed.splitlines() if line.strip()})


def machine_info(measured: Sequence[str] = ("multissl", "domains", "bench")) -> dict[str, Any]:
    """Where and on what the numbers were taken; call at the start of a run.

    ``load_average_at_start`` is the 1/5/15-minute load average now; :func:`write_results` adds
    ``load_average_at_end``. On a shared machine these say how much to trust the timings.
    """
    import torch

    try:
        import torchvision

        torchvision_version = torchvision.__version__
    except ImportError:
        torchvision_version = None
    accelerator = None
    if torch.cuda.is_available():
        accelerator = torch.cuda.get_device_name(0)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        accelerator = "Apple MPS"
    commit, changed = git_state(measured)
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "accelerator": accelerator,
        "torch": torch.__version__,
        "torchvision": torchvision_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "uncommitted_changes": changed,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line for the console: cpu, cores, threads, torch, load."""
    load = info.get("load_average_at_start") or [float("nan")]
    return (f"{info.get('cpu_model')}, {info.get('logical_cores')} cores, torch {info.get('torch')} "
            f"({info.get('torch_threads')} threads), accelerator {info.get('accelerator') or 'none'}, load {load[0]:.1f}")


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran, as one would type it again from the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path("?")
    if script.is_absolute() and script.is_relative_to(ROOT):
        script = script.relative_to(ROOT)
    return shlex.join(["python", str(script), *argv[1:]])


# ------------------------------------------------------------------------------------------ timing


def alternate_timings(steps: Mapping[str, Callable[[], Any]], repetitions: int, warmup: int = 1,
                      synchronize: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Wall milliseconds of each step, the steps alternating repetition by repetition.

    Alternating (A, B, C, A, B, C, ...) rather than running A's repetitions then B's makes every
    contender see the same machine load, which on a shared machine matters more than anything
    else. ``warmup`` untimed rounds come first; ``synchronize`` (e.g. ``torch.cuda.synchronize``)
    runs before each clock read when work is asynchronous.
    """
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repetitions):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# ------------------------------------------------------------------------------------ results file


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def validate_results(data: Any, source: str = "<results>") -> dict[str, Any]:
    """Check one results object against the format above; returns it, or raises
    :class:`ResultsFormatError` naming ``source``, the row and the key at fault."""
    if not isinstance(data, dict):
        raise ResultsFormatError(f"{source}: a results file holds one JSON object, got {type(data).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ResultsFormatError(f"{source}: missing key(s) {missing} (see bench/_common.py for the format)")
    if data["schema"] != SCHEMA_VERSION:
        raise ResultsFormatError(f"{source}: schema {data['schema']!r}, this report reads schema {SCHEMA_VERSION}")
    if data["kind"] not in KINDS:
        raise ResultsFormatError(f"{source}: kind {data['kind']!r} is not one of {KINDS}")
    if not isinstance(data["machine"], dict):
        raise ResultsFormatError(f"{source}: 'machine' must be an object (see machine_info())")
    rows = data["rows"]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ResultsFormatError(f"{source}: 'rows' must be a list of objects")
    for index, row in enumerate(rows):
        for key, value in row.items():
            if key.endswith("_samples"):
                if not isinstance(value, list):
                    raise ResultsFormatError(f"{source}: row {index} key {key!r} (raw samples) must be a list")
            elif not _is_scalar(value):
                raise ResultsFormatError(
                    f"{source}: row {index} key {key!r} holds a {type(value).__name__}; rows are flat "
                    "(name raw lists '<name>_samples')")
    if data["kind"] == "quality":
        for index, row in enumerate(rows):
            absent = [key for key in QUALITY_FIELDS if key not in row]
            if absent:
                raise ResultsFormatError(f"{source}: quality row {index} lacks {absent} (fields: {QUALITY_FIELDS})")
            if not isinstance(row["higher_is_better"], bool):
                raise ResultsFormatError(f"{source}: quality row {index}: 'higher_is_better' must be true or false")
    else:
        for index, comparison in enumerate(data.get("comparisons", [])):
            for key in ("multissl", "peer", "better"):
                if key not in comparison:
                    raise ResultsFormatError(f"{source}: comparison {index} lacks {key!r}")
            if comparison["better"] not in ("lower", "higher"):
                raise ResultsFormatError(f"{source}: comparison {index}: 'better' must be 'lower' or 'higher', "
                                         f"got {comparison['better']!r}")
    return data


def write_results(path: Path, *, benchmark: str, title: str, kind: str, description: str, machine: dict[str, Any],
                  seeds: dict[str, Any], budget: dict[str, Any], rows: list[dict[str, Any]],
                  settings: dict[str, Any] | None = None, notes: Sequence[str] = (),
                  comparisons: Sequence[dict[str, Any]] = (), key_columns: Sequence[str] = (),
                  extra: dict[str, Any] | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Add the end-of-run load average, check the object, write it (atomically) and return it.

    ``benchmark`` is the script's path from the repository root; ``argv`` the command that ran
    (default ``sys.argv``).
    """
    machine = {**machine, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    data: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "benchmark": benchmark,
        "title": title,
        "kind": kind,
        "description": description,
        "command": command_line(argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "seeds": seeds,
        "budget": budget,
        "settings": settings or {},
        "notes": list(notes),
    }
    if kind == "speed":
        data["key_columns"] = list(key_columns)
        data["comparisons"] = list(comparisons)
    data.update(extra or {})
    data["rows"] = rows
    validate_results(data, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    temporary.replace(path)
    shown = path.relative_to(ROOT) if path.is_absolute() and path.is_relative_to(ROOT) else path
    print(f"wrote {shown}")
    return data


# ---------------------------------------------------------------------------------- who loses what


def is_multissl(contender: str) -> bool:
    return str(contender).lower().startswith("multissl")


def _worse(ours: float, theirs: float, better: str) -> bool:
    return ours > theirs if better == "lower" else ours < theirs


def losing_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every place multissl is slower or worse than a peer in one (validated) results object.

    Each entry: {"row": the losing row, "ours": value, "theirs": value, "multissl": column or
    contender, "peer": peer name, "metric": column or metric, "better": "lower" | "higher"}.
    """
    losses: list[dict[str, Any]] = []
    if data["kind"] == "speed":
        for row in data["rows"]:
            for comparison in data.get("comparisons", []):
                ours, theirs = row.get(comparison["multissl"]), row.get(comparison["peer"])
                if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)):
                    continue
                if _worse(ours, theirs, comparison["better"]):
                    label = comparison.get("peer_label", comparison["peer"])
                    losses.append({"row": row, "ours": ours, "theirs": theirs, "multissl": comparison["multissl"],
                                   "peer": str(row.get(label, label)), "metric": comparison["peer"],
                                   "better": comparison["better"]})
        return losses
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in data["rows"]:
        groups.setdefault((row["task"], row["metric"]), []).append(row)
    for rows in groups.values():
        peers = [r for r in rows if not is_multissl(r["contender"]) and isinstance(r["value"], (int, float))]
        # "multissl MoCo v2" and "lightly MoCo v2" are one method through two libraries: a peer library's
        # run of a method multissl also ran is compared with that method only; baselines with every row
        methods = {str(r["contender"])[len("multissl"):].strip() for r in rows if is_multissl(r["contender"])}

        def method_of(contender: str) -> str | None:
            return next((m for m in methods if m and str(contender).endswith(" " + m)), None)

        for row in rows:
            if not is_multissl(row["contender"]) or not isinstance(row["value"], (int, float)):
                continue
            better = "higher" if row["higher_is_better"] else "lower"
            ours = method_of(row["contender"])
            beaten_by = [p for p in peers if _worse(row["value"], p["value"], better)
                         and method_of(p["contender"]) in (None, ours)]
            if beaten_by:
                best = (max if better == "higher" else min)(beaten_by, key=lambda p: p["value"])
                losses.append({"row": row, "ours": row["value"], "theirs": best["value"], "multissl": row["contender"],
                               "peer": best["contender"], "metric": row["metric"], "better": better})
    return losses
