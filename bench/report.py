"""Build ``bench/RESULTS.md`` from ``bench/results/*.json`` alone (never edit RESULTS.md by hand).

One section per results file: where and when it ran (machine, commit, load average at start and
end, the command), what it measures, a table per section of its rows with their ratios, and for
every row where multissl is slower or worse than a peer, one sentence saying so with the reason
the benchmark recorded in that row's ``notes``. Speed files come first, then the quality files
(``quality_*.json``). The file format is documented in ``bench/_common.py``.

    python bench/report.py                                  # bench/results -> bench/RESULTS.md
    python bench/report.py --results DIR --output FILE.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, ResultsFormatError, losing_rows, validate_results  # noqa: E402

OUTPUT = ROOT / "bench" / "RESULTS.md"
#: Speed files in this order first (others after them, by name); quality files last.
SPEED_ORDER = ("losses", "speed_peers", "augment", "train_throughput")
HIDDEN_COLUMNS = ("notes", "section", "task")


def load_results(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``*.json`` in ``directory``, checked; a malformed file stops the report, named."""
    loaded = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ResultsFormatError(f"{path}: not valid JSON: {error}") from error
        loaded.append((path, validate_results(data, str(path))))

    def order(item: tuple[Path, dict[str, Any]]) -> tuple[int, int, str]:
        path, data = item
        if data["kind"] == "quality":
            return (1, 0, path.stem)
        rank = SPEED_ORDER.index(path.stem) if path.stem in SPEED_ORDER else len(SPEED_ORDER)
        return (0, rank, path.stem)

    return sorted(loaded, key=order)


# -------------------------------------------------------------------------------------------- cells


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: Sequence[Mapping[str, Any]], first: Sequence[str] = (),
          hidden: Sequence[str] = HIDDEN_COLUMNS) -> tuple[list[str], list[str]]:
    """Markdown table lines of ``rows`` and their footnotes (each distinct ``notes`` text once).

    Columns: ``first`` (those present), then every other scalar key in order of appearance; raw
    ``*_samples`` lists and the ``hidden`` keys stay out (``notes`` become numbered footnotes).
    """
    columns: list[str] = [c for c in first if c not in hidden and any(c in row for row in rows)]
    for row in rows:
        for key in row:
            if key not in columns and key not in hidden and not key.endswith("_samples"):
                columns.append(key)
    footnotes: list[str] = []
    marks: list[str] = []
    for row in rows:
        note = str(row.get("notes") or "").strip()
        if note and note not in footnotes:
            footnotes.append(note)
        marks.append(f"[{footnotes.index(note) + 1}]" if note else "")
    with_marks = any(marks)
    header = columns + (["note"] if with_marks else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, mark in zip(rows, marks):
        values = [cell(row.get(column)) for column in columns] + ([mark] if with_marks else [])
        lines.append("| " + " | ".join(values) + " |")
    return lines, [f"[{index}] {cell(note)}" for index, note in enumerate(footnotes, 1)]


# ----------------------------------------------------------------------------------------- sections


def _load(values: Any) -> str:
    if isinstance(values, (list, tuple)) and values:
        return "/".join(f"{v:.1f}" for v in values)
    return "unknown"


def machine_line(machine: Mapping[str, Any]) -> str:
    commit = str(machine.get("git_commit", "unknown"))
    changed = machine.get("uncommitted_changes") or []
    provenance = f"commit `{commit[:12]}`" + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")
    return (f"{machine.get('cpu_model', '?')}, {machine.get('logical_cores', '?')} logical cores, "
            f"{machine.get('torch_threads', '?')} torch threads, accelerator {machine.get('accelerator') or 'none'}, "
            f"torch {machine.get('torch', '?')}; {provenance}; load average (1/5/15 min) "
            f"{_load(machine.get('load_average_at_start'))} at start, {_load(machine.get('load_average_at_end'))} at end")


def _mapping_text(values: Mapping[str, Any]) -> str:
    """``key value, ...`` for the scalar entries; nested ones are named and left to the JSON."""
    scalars = [f"{key} {cell(value)}" for key, value in values.items() if not isinstance(value, (dict, list))]
    nested = [key for key, value in values.items() if isinstance(value, (dict, list))]
    text = ", ".join(scalars) or ("" if nested else "not recorded")
    if nested:
        text += ("; " if text else "") + f"{', '.join(nested)}: in the JSON"
    return text


def _row_name(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    named = [f"{key}={cell(row[key])}" for key in keys if key in row and row[key] is not None]
    if not named:
        named = [f"{key}={cell(value)}" for key, value in row.items()
                 if isinstance(value, str) and key not in ("notes", "task")][:3]
    return ", ".join(named) or "a row"


def loss_sentences(data: Mapping[str, Any]) -> list[str]:
    """One plain sentence per place multissl is slower or worse than a peer, with the JSON's reason."""
    sentences = []
    for loss in losing_rows(data):
        row = loss["row"]
        reason = str(row.get("notes") or "").strip() or "no reason was recorded in the results file."
        ratio = loss["ours"] / loss["theirs"] if loss["theirs"] else float("inf")
        factor = ratio if loss["better"] == "lower" else (1 / ratio if ratio else float("inf"))
        if data["kind"] == "speed":
            word = "slower" if loss["better"] == "lower" else "lower (higher is better)"
            where = _row_name(row, data.get("key_columns", ()))
            sentences.append(
                f"- **multissl loses** ({where}): {loss['multissl']} {cell(loss['ours'])} vs {loss['metric']} "
                f"{cell(loss['theirs'])} for {loss['peer']}: {factor:.2f}x {word}. Why: {cell(reason)}")
        else:
            sentences.append(
                f"- **multissl loses** ({row['task']}, {loss['metric']}): {loss['multissl']} {cell(loss['ours'])} vs "
                f"{loss['peer']} {cell(loss['theirs'])} ({'higher' if loss['better'] == 'higher' else 'lower'} is "
                f"better). Why: {cell(reason)}")
    return sentences


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str | None, list[dict[str, Any]]]]:
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get("section"), []).append(row)
    return list(groups.items())


def section(path: Path, data: Mapping[str, Any]) -> list[str]:
    lines = [f"## {data['title']}", ""]
    lines.append(f"From `{path.name}`, written by `{data['benchmark']}` on {data['date']}: `{data['command']}`.")
    lines += ["", f"Machine: {machine_line(data['machine'])}.", ""]
    budget = data.get("budget") or {}
    if budget.get("quick"):
        lines += ["> **Quick smoke run**: few repetitions at small sizes; these numbers show that the benchmark "
                  "runs, not how fast anything is. Run it without `--quick` on a quiet machine to quote it.", ""]
    if data.get("description"):
        lines += [str(data["description"]), ""]
    lines += [f"Budget: {_mapping_text(budget)}. Seeds: {_mapping_text(data.get('seeds') or {})}.", ""]
    quality_first = ["task", "contender", "metric", "value", "higher_is_better", "budget_seconds"]
    first = list(data.get("key_columns", ())) if data["kind"] == "speed" else quality_first
    runs = data.get("section_runs") or {}
    for name, rows in _groups(list(data["rows"])):
        if name is not None:
            lines += [f"### {name}", ""]
            run = runs.get(name) or {}
            if run.get("machine") and len(runs) > 1:  # merged from several runs: each says where it ran
                lines += [f"Measured {run.get('date', '?')}{' (quick)' if run.get('quick') else ''}: "
                          f"{machine_line(run['machine'])}.", ""]
        hidden = ["notes", "section"]
        tasks = {row.get("task") for row in rows}
        if data["kind"] == "speed" and len(tasks) == 1:
            hidden.append("task")
            if None not in tasks:
                lines += [f"Task: {cell(tasks.pop())}.", ""]
        table_lines, footnotes = table(rows, first, hidden)
        lines += table_lines + [""]
        if footnotes:
            lines += footnotes + [""]
    for name, run in runs.items():
        if run.get("skipped"):
            lines += [f"Section {name} was skipped: {cell(run['skipped'])}", ""]
    if not data["rows"]:
        lines += ["_No rows._", ""]
    for note in data.get("notes") or []:
        lines.append(f"- Note: {cell(note)}")
    if data.get("notes"):
        lines.append("")
    sentences = loss_sentences(data)
    compares = data["kind"] == "quality" or bool(data.get("comparisons"))
    if sentences:
        lines += sentences + [""]
    elif compares:
        lines += ["multissl is not slower or worse than a peer on any row of this file.", ""]
    return lines


def render(results: list[tuple[Path, dict[str, Any]]]) -> str:
    speed = [(p, d) for p, d in results if d["kind"] == "speed"]
    quality = [(p, d) for p, d in results if d["kind"] == "quality"]
    lines = ["# Benchmark results", "",
             "Generated by `python bench/report.py` from `bench/results/*.json`; do not edit by hand "
             "(run `make bench`, or one script under `bench/`, then the report).", ""]
    losses = sum(len(losing_rows(d)) for _, d in results)
    lines += [f"Rows where multissl is slower or worse than a peer: {losses} "
              "(each is listed under its table, with the reason its benchmark recorded).", ""]
    lines += ["| file | title | date | commit | quick |", "|---|---|---|---|---|"]
    for path, data in results:
        lines.append(f"| {path.name} | {cell(data['title'])} | {data['date']} | "
                     f"`{str(data['machine'].get('git_commit', '?'))[:12]}` | {cell(bool(data['budget'].get('quick')))} |")
    lines.append("")
    lines += ["# Speed", ""]
    for path, data in speed:
        lines += section(path, data)
    if not speed:
        lines += ["_No speed results yet._", ""]
    lines += ["# Quality", ""]
    for path, data in quality:
        lines += section(path, data)
    if not quality:
        lines += ["_No quality results yet: each quality benchmark writes `bench/results/quality_<name>.json` "
                  "(rows of task, contender, metric, value, higher_is_better, budget_seconds, notes; see "
                  "`bench/_common.py`)._", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of results JSON files")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="markdown file to write")
    args = parser.parse_args(argv)
    text = render(load_results(args.results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return args.output


if __name__ == "__main__":
    main()
