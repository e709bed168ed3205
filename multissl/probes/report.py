"""Probe results as records, a markdown table and JSON (the model card reads the same records).

One :class:`ProbeResult` per reported number. ``value`` keeps its metric's own unit: accuracies and
recalls are fractions in [0, 1] (metric names "accuracy", "recall@k", ...), STS and SentEval report
x 100 as their papers do (metric names end in "_x100").
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ProbeResult", "TABLE_COLUMNS", "format_value", "results_table", "save_results", "load_results"]

#: columns of the results table, in order
TABLE_COLUMNS = ("probe", "dataset", "split", "metric", "value")


@dataclass
class ProbeResult:
    """probe: "linear", "knn", "sts", ...; dataset: name or path of the evaluation data; split: the
    split scored; metric: what ``value`` is; details: hyper-parameters chosen, counts, skips."""

    probe: str
    dataset: str
    metric: str
    value: float
    split: str = "test"
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.value = float(self.value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_value(value: float, metric: str = "") -> str:
    """How the table prints a value: 2 decimals for x100 scores, 4 for everything else."""
    if math.isnan(value):
        return "nan"
    return f"{value:.2f}" if metric.endswith("_x100") else f"{value:.4f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_table(results: list[ProbeResult]) -> str:
    """GitHub-flavoured markdown table, one row per result, in the given order."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for result in results:
        cells = [result.probe, result.dataset, result.split, result.metric, format_value(result.value, result.metric)]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # tensors and numpy scalars
        return value.tolist()
    return value


def save_results(path: str | Path, results: list[ProbeResult], meta: dict[str, Any] | None = None) -> Path:
    """Write ``{"meta": {...}, "results": [ProbeResult, ...]}`` as JSON (NaN allowed as in Python's json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": _jsonable(meta or {}), "results": [_jsonable(r.to_dict()) for r in results]}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def load_results(path: str | Path) -> tuple[list[ProbeResult], dict[str, Any]]:
    """Read what :func:`save_results` wrote: (results, meta)."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or "results" not in payload:
        raise ValueError(f"{path}: not a probe results file (no 'results' key)")
    results = []
    for index, row in enumerate(payload["results"]):
        try:
            results.append(ProbeResult(**row))
        except TypeError as error:
            raise ValueError(f"{path}: results[{index}] is malformed ({error})") from None
    return results, payload.get("meta", {})
