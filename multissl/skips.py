"""Counting and naming skipped samples across processes.

Domains skip bad samples in two places: at load time (a blank line of plain text, an undecodable
line; ``Domain.load_skips``) and at collation under ``on_bad_sample: skip`` (a truncated image, a
NaN clip; the batch's ``"skipped_samples"``). Each skip is a record ``{"where": file/row,
"reason": short category, "detail": the full message, "count": how many}``.

:class:`SkipLedger` keeps the run's totals by reason, identical on every process: each process
adds what it saw to its pending counts, and :meth:`SkipLedger.sync` (a collective, called at log
and checkpoint steps and at the end) gathers every process's pending counts into the totals.
A sample is *named* (logged with its file/row and reason) once, the first time any process skips
it; later skips of it (the next epoch) are counted only. The totals and the names already given
are checkpointed, so a resumed run counts exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["SkipLedger", "batch_skip_records", "UNNAMED"]

UNNAMED = "bad sample (the domain gave no reason)"


def batch_skip_records(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The skip records of one domain's collated batch: its ``"skipped_samples"``, or, from a
    domain that only counts, ``"skipped"`` unnamed samples."""
    records = list(batch.get("skipped_samples") or [])
    missing = int(batch.get("skipped", 0)) - sum(int(r.get("count", 1)) for r in records)
    if missing > 0:
        records.append({"where": "unknown rows", "reason": UNNAMED, "detail": "", "count": missing})
    return records


class SkipLedger:
    """Skipped samples of a run, by reason; see the module doc."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()
        self.named: set[str] = set()
        self._pending: Counter[str] = Counter()
        self._pending_records: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _key(record: dict[str, Any]) -> str:
        return f"{record.get('reason', UNNAMED)}\t{record.get('where', '')}"

    def add(self, records: list[dict[str, Any]], once: bool = False) -> None:
        """Count ``records`` seen by this process. ``once``: load-time skips, which every process
        sees identically and which a resumed run sees again; counted only when not named yet."""
        for record in records:
            key = self._key(record)
            if once and (key in self.named or key in self._pending_records):
                continue
            self._pending[record.get("reason", UNNAMED)] += int(record.get("count", 1))
            self._pending_records.setdefault(key, record)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def sync(self, accelerator: Any = None) -> list[dict[str, Any]]:
        """Add every process's pending counts to the totals (a collective when there are several
        processes: call it on all of them at the same point); returns the records named for the
        first time, the same list on every process."""
        payload = (dict(self._pending), self._pending_records)
        self._pending, self._pending_records = Counter(), {}
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            gathered = gather_object([payload])
        else:
            gathered = [payload]
        fresh = []
        for counts, records in gathered:
            self.by_reason.update(counts)
            for key, record in records.items():
                if key not in self.named:
                    self.named.add(key)
                    fresh.append(record)
        return fresh

    def summary(self) -> str:
        if not self.total:
            return "no samples were skipped"
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.by_reason.most_common())
        return f"skipped {self.total} sample(s) ({len(self.named)} named in log.jsonl): {reasons}"

    def state_dict(self) -> dict[str, Any]:
        return {"by_reason": dict(self.by_reason), "named": sorted(self.named)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.by_reason = Counter({str(k): int(v) for k, v in state.get("by_reason", {}).items()})
        self.named = set(state.get("named", []))
