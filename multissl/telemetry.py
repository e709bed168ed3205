"""What a run writes while it trains: scalars to Accelerate's trackers and to ``log.jsonl``, and
representation-health numbers that make collapse visible early (a constant embedding has zero
std and effective rank 1; a perfectly uniform one has low uniformity loss)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["JsonlLog", "health", "to_float", "read_log", "write_curves"]


def to_float(value: Any) -> float:
    if isinstance(value, Tensor):
        return float(value.detach().float().mean().item())
    return float(value)


class JsonlLog:
    """Append-only JSON-lines log, written by the main process only; one object per record.

    Step records hold scalars; event records (``"event"``: "skipped_sample", "summary") also
    hold strings, lists and mappings."""

    def __init__(self, path: str | Path, enabled: bool) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def forget_after(self, step: int) -> None:
        """Drop the records of steps after ``step`` (a run resumed from there trains and logs them
        again, so the log never holds a step twice)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines(keepends=True)
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (v if isinstance(v, (str, int, list, dict)) or v is None else to_float(v)) for k, v in record.items()}
        with self.path.open("a") as handle:
            handle.write(json.dumps(clean, allow_nan=True) + "\n")


@torch.no_grad()
def health(z1: Tensor, z2: Tensor) -> dict[str, float]:
    """Collapse indicators on two aligned embedding batches [B, D] (this process's rows).

    embedding_std: mean over dims of the per-dim std of L2-normalised z1 (SimSiam's collapse
    check: ~1/sqrt(D) when healthy, 0 when collapsed); effective_rank (Roy & Vetterli 2007);
    alignment and uniformity (Wang & Isola 2020).
    """
    from multissl.probes.health import alignment, effective_rank, uniformity

    a = torch.nn.functional.normalize(z1.detach().float(), dim=1)
    b = torch.nn.functional.normalize(z2.detach().float(), dim=1)
    out = {
        "embedding_std": float(a.std(dim=0).mean()),
        "effective_rank": float(effective_rank(a)),
        "alignment": float(alignment(a, b)),
        "uniformity": float(uniformity(a)) if a.shape[0] > 1 else math.nan,
    }
    return out


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``, in order; a line cut short by a killed process is skipped."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_curves(log_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw the run's curves from ``log.jsonl`` into ``png_path``: the loss (and learning rate)
    by step, and beside it the online evaluation's scores (``online/*_top1``) when the log has
    them. A step logged twice (a resumed run replays steps after its checkpoint) keeps its last
    value. Returns the path, or None when the log has no loss yet. Matplotlib's Agg backend: no
    display needed."""
    by_step: dict[str, dict[int, float]] = {}
    for record in read_log(log_path):
        step = record.get("step")
        if not isinstance(step, int):
            continue
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                by_step.setdefault(key, {})[step] = float(value)
    scores = sorted(key for key in by_step if key.startswith("online/") and key.endswith("_top1"))
    if "loss" not in by_step and not scores:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + bool(scores)
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.6), squeeze=False)
    loss_axis = axes[0][0]
    if "loss" in by_step:
        steps = sorted(by_step["loss"])
        loss_axis.plot(steps, [by_step["loss"][s] for s in steps], color="tab:blue", label="loss")
        loss_axis.set_xlabel("step")
        loss_axis.set_ylabel("training loss")
        loss_axis.set_title("training loss")
        if "lr" in by_step:
            lr_axis = loss_axis.twinx()
            lr_steps = sorted(by_step["lr"])
            lr_axis.plot(lr_steps, [by_step["lr"][s] for s in lr_steps], color="tab:gray", linewidth=0.8, alpha=0.6)
            lr_axis.set_ylabel("learning rate", color="tab:gray")
    if scores:
        score_axis = axes[0][1]
        for key in scores:
            steps = sorted(by_step[key])
            score_axis.plot(steps, [by_step[key][s] for s in steps], marker="o", markersize=3,
                            label=key.removeprefix("online/").replace("_top1", " top-1"))
        score_axis.set_xlabel("step")
        score_axis.set_ylabel("held-out accuracy")
        score_axis.set_title("online evaluation")
        score_axis.grid(alpha=0.3)
        score_axis.legend(loc="lower right")
    figure.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    staging = png_path.with_name(f".{png_path.name}.tmp.png")
    figure.savefig(staging, dpi=90)
    plt.close(figure)
    staging.replace(png_path)  # a reader never sees a half-written picture
    return png_path
