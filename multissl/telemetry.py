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

__all__ = ["JsonlLog", "health", "to_float"]


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
