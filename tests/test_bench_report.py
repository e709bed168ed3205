"""bench/report.py builds RESULTS.md from results files alone: tables, ratios, and one plain
sentence (with the file's own reason) for every row where multissl is slower or worse than a peer.

These tests exercise the generator on small synthetic results files, not any measured number.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench._common import QualityRow, ResultsFormatError, write_results  # noqa: E402

MACHINE = {
    "cpu_model": "Test CPU 9000", "logical_cores": 4, "torch_threads": 4, "cpu_capability": "AVX2",
    "accelerator": None, "torch": "0.0-test", "torchvision": None, "python": "3.11", "platform": "test",
    "git_commit": "0123456789abcdef0123", "uncommitted_changes": ["bench/x.py"],
    "load_average_at_start": [1.3, 1.0, 0.5],
}

SLOW_REASON = "multissl pays a transposed copy here (synthetic reason B)"


def header(**fields) -> dict:
    base = {
        "schema": 1, "benchmark": "bench/fake.py", "title": "Fake speed", "kind": "speed", "description": "desc",
        "command": "python bench/fake.py", "date": "2026-01-01T00:00:00+00:00",
        "machine": {**MACHINE, "load_average_at_end": [2.0, 1.5, 0.7]}, "seeds": {"inputs": 0},
        "budget": {"quick": False, "repetitions": 5}, "settings": {}, "notes": [], "rows": [],
    }
    base.update(fields)
    return base


def speed_results() -> dict:
    rows = [
        {"loss": "nt_xent", "batch": 256, "multissl_ms": 1.0, "peer_ms": 2.0, "multissl_over_peer": 0.5,
         "peer": "lightly", "notes": "", "multissl_ms_samples": [1.0, 1.1]},
        {"loss": "clip_loss", "batch": 256, "multissl_ms": 3.0, "peer_ms": 2.0, "multissl_over_peer": 1.5,
         "peer": "open_clip", "notes": SLOW_REASON},
        {"loss": "info_nce", "batch": 1024, "multissl_ms": 4.0, "peer_ms": None, "multissl_over_peer": None,
         "peer": "none"},
        {"loss": "info_nce", "batch": 4096, "multissl_ms": 9.0, "peer_ms": 8.0, "multissl_over_peer": 1.125,
         "peer": "sentence-transformers"},
    ]
    return header(key_columns=["loss", "batch"], rows=rows,
                  comparisons=[{"multissl": "multissl_ms", "peer": "peer_ms", "better": "lower", "peer_label": "peer"}])


def throughput_results() -> dict:
    rows = [
        {"section": "fp32", "task": "train", "workers": 0, "multissl_images_per_s": 100.0,
         "lightly_images_per_s": 50.0, "notes": "same process"},
        {"section": "fp32", "task": "train", "workers": 2, "multissl_images_per_s": 80.0,
         "lightly_images_per_s": 120.0, "notes": "workers hide the per-sample cost (synthetic)"},
        {"section": "bf16", "task": "train", "workers": 0, "multissl_images_per_s": 70.0,
         "lightly_images_per_s": None},
    ]
    return header(title="Fake throughput", benchmark="bench/fake_throughput.py", key_columns=["workers"], rows=rows,
                  budget={"quick": True, "steps": 3, "per_setting": {"floor": 1.0}},
                  comparisons=[{"multissl": "multissl_images_per_s", "peer": "lightly_images_per_s",
                                "better": "higher", "peer_label": "lightly-style loop"}])


def quality_results() -> dict:
    rows = [
        QualityRow("CIFAR-10 linear probe", "multissl SimCLR", "top1", 0.80, True, 600.0, "shorter schedule (synthetic)"),
        QualityRow("CIFAR-10 linear probe", "lightly SimCLR", "top1", 0.85, True, 600.0),
        QualityRow("CIFAR-10 linear probe", "solo-learn SimCLR", "top1", 0.70, True, 600.0),
        QualityRow("STS-B", "multissl SimCSE", "spearman", 0.75, True, 300.0),
        QualityRow("STS-B", "sentence-transformers", "spearman", 0.70, True, 300.0),
        QualityRow("FSDD", "multissl CPC", "phone_error", 0.30, False, 100.0, "no reason given here"),
        QualityRow("FSDD", "s3prl CPC", "phone_error", 0.20, False, 100.0),
    ]
    return header(title="Fake quality", kind="quality", benchmark="bench/quality_fake.py",
                  rows=[row.as_row() for row in rows])


def write(directory: Path, name: str, data: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(data))


def build(tmp_path: Path, files: dict[str, dict]) -> str:
    results = tmp_path / "results"
    for name, data in files.items():
        write(results, name, data)
    output = report.main(["--results", str(results), "--output", str(tmp_path / "RESULTS.md")])
    return output.read_text()


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in ``text`` as rows of cells (header first, separator dropped)."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif current:
            found.append([r for r in current if not set("".join(r)) <= set("-|")])
            current = []
    return found


def loss_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("- **multissl loses**")]


def test_speed_table_has_every_row_and_its_ratio(tmp_path):
    text = build(tmp_path, {"speed_peers": speed_results()})
    table = next(t for t in tables(text) if t[0][:2] == ["loss", "batch"])
    head, body = table[0], table[1:]
    assert head[:2] == ["loss", "batch"]  # key columns first
    assert "multissl_over_peer" in head and "multissl_ms_samples" not in head and "notes" not in head
    assert len(body) == 4 and all(len(row) == len(head) for row in body)
    by_loss = {(row[0], row[1]): dict(zip(head, row)) for row in body}
    assert by_loss[("clip_loss", "256")]["multissl_over_peer"] == "1.5"
    assert by_loss[("info_nce", "1024")]["peer_ms"] == "–"  # missing values are shown as missing


def test_a_sentence_for_each_row_multissl_loses_with_its_own_reason(tmp_path):
    text = build(tmp_path, {"speed_peers": speed_results()})
    lines = loss_lines(text)
    assert len(lines) == 2  # clip_loss (3.0 > 2.0) and info_nce 4096 (9.0 > 8.0); 1024 has no peer value
    clip = next(line for line in lines if "loss=clip_loss" in line)
    assert "batch=256" in clip and "open_clip" in clip and "1.50x slower" in clip and SLOW_REASON in clip
    no_reason = next(line for line in lines if "loss=info_nce" in line)
    assert "batch=4096" in no_reason and "no reason was recorded" in no_reason
    assert not any("nt_xent" in line for line in lines)  # multissl faster there


def test_higher_is_better_comparisons_sections_and_quick_warning(tmp_path):
    text = build(tmp_path, {"train_throughput": throughput_results()})
    assert "### fp32" in text and "### bf16" in text
    assert "Quick smoke run" in text
    assert "Budget: quick yes, steps 3; per_setting: in the JSON." in text  # nested entries are named only
    lines = loss_lines(text)
    assert len(lines) == 1 and "workers=2" in lines[0] and "lightly-style loop" in lines[0]
    assert "1.50x lower" in lines[0] and "workers hide the per-sample cost (synthetic)" in lines[0]
    # row notes become numbered footnotes under their table
    assert "[1] same process" in text and "[2] workers hide the per-sample cost (synthetic)" in text


def test_quality_rows_lose_against_the_best_peer_of_their_task_and_metric(tmp_path):
    text = build(tmp_path, {"quality_fake": quality_results()})
    lines = loss_lines(text)
    assert len(lines) == 2
    probe = next(line for line in lines if "CIFAR-10" in line)
    assert "lightly SimCLR 0.85" in probe and "multissl SimCLR 0.8" in probe and "shorter schedule" in probe
    assert "solo-learn" not in probe  # beaten by multissl: not the row that beats it
    fsdd = next(line for line in lines if "FSDD" in line)
    assert "s3prl CPC 0.2" in fsdd and "lower is better" in fsdd
    assert not any("STS-B" in line for line in lines)  # multissl ahead there
    table = next(t for t in tables(text) if t[0][0] == "task")
    assert table[0][:4] == ["task", "contender", "metric", "value"] and len(table) == 1 + 7


def test_header_machine_commit_load_and_placeholders(tmp_path):
    text = build(tmp_path, {"speed_peers": speed_results()})
    assert "do not edit by hand" in text
    assert "Test CPU 9000, 4 logical cores, 4 torch threads" in text
    assert "commit `0123456789ab` + uncommitted changes in bench/x.py" in text
    assert "1.3/1.0/0.5 at start, 2.0/1.5/0.7 at end" in text
    assert "Rows where multissl is slower or worse than a peer: 2" in text
    assert "_No quality results yet" in text  # room left for the quality benchmarks


def test_sections_are_ordered_speed_first_then_quality(tmp_path):
    text = build(tmp_path, {"quality_fake": quality_results(), "train_throughput": throughput_results(),
                            "speed_peers": speed_results()})
    positions = [text.index(f"## {title}") for title in ("Fake speed", "Fake throughput", "Fake quality")]
    assert positions == sorted(positions)
    assert "_No quality results yet" not in text


def test_a_malformed_file_is_named_with_what_is_wrong(tmp_path):
    broken = speed_results()
    del broken["machine"]
    with pytest.raises(ResultsFormatError, match=r"speed_peers\.json.*missing key.*machine"):
        build(tmp_path, {"speed_peers": broken})
    nested = speed_results()
    nested["rows"][0]["per_step"] = [1, 2]
    with pytest.raises(ResultsFormatError, match=r"row 0 key 'per_step'"):
        build(tmp_path / "second", {"speed_peers": nested})
    quality = quality_results()
    del quality["rows"][3]["higher_is_better"]
    with pytest.raises(ResultsFormatError, match=r"quality row 3 lacks \['higher_is_better'\]"):
        build(tmp_path / "third", {"quality_fake": quality})


def test_write_results_records_the_run_and_round_trips_through_the_report(tmp_path):
    data = speed_results()
    written = write_results(
        tmp_path / "results" / "speed_peers.json", benchmark="bench/fake.py", title="Written", kind="speed",
        description="d", machine=MACHINE, seeds={"inputs": 3}, budget={"quick": True}, rows=data["rows"],
        comparisons=data["comparisons"], key_columns=data["key_columns"], argv=["bench/fake.py", "--quick"],
    )
    assert written["command"] == "python bench/fake.py --quick"
    assert len(written["machine"]["load_average_at_end"]) == 3
    stored = json.loads((tmp_path / "results" / "speed_peers.json").read_text())
    assert stored == written
    output = report.main(["--results", str(tmp_path / "results"), "--output", str(tmp_path / "R.md")])
    assert "## Written" in output.read_text() and len(loss_lines(output.read_text())) == 2
    with pytest.raises(ResultsFormatError, match="'better' must be 'lower' or 'higher'"):
        write_results(tmp_path / "bad.json", benchmark="b", title="t", kind="speed", description="", machine=MACHINE,
                      seeds={}, budget={}, rows=[], comparisons=[{"multissl": "a", "peer": "b", "better": "faster"}])
    assert not (tmp_path / "bad.json").exists()


def test_a_peer_library_run_of_one_method_is_compared_with_that_method_only():
    """lightly MoCo v2 beating multissl SimCLR is two methods, not two libraries: no loss row. The
    same-method peer and a baseline (raw pixels) still count."""
    from bench._common import losing_rows

    rows = [
        QualityRow("CIFAR-10", "multissl SimCLR", "top1", 0.41, True, 300.0),
        QualityRow("CIFAR-10", "lightly SimCLR", "top1", 0.40, True, 300.0),
        QualityRow("CIFAR-10", "multissl MoCo v2", "top1", 0.43, True, 300.0),
        QualityRow("CIFAR-10", "lightly MoCo v2", "top1", 0.44, True, 300.0),
        QualityRow("CIFAR-10", "multissl BYOL", "top1", 0.34, True, 300.0),
        QualityRow("CIFAR-10", "raw pixels", "top1", 0.39, True, 0.0),
    ]
    data = header(title="Fake quality", kind="quality", benchmark="bench/quality_fake.py",
                  rows=[row.as_row() for row in rows])
    lost = {(loss["multissl"], loss["peer"]) for loss in losing_rows(data)}
    assert lost == {("multissl MoCo v2", "lightly MoCo v2"), ("multissl BYOL", "raw pixels")}
