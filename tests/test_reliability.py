"""Bad input through the real command line, faults, and unsafe checkpoints (issue 12).

Every input here is built by the test in tmp_path (images with Pillow, clips with soundfile, text
and csv files by hand, scikit-learn's digits), so the module runs on a fresh clone. Each bad input
goes through ``multissl train`` (``multissl.cli.main``, in-process for speed; the kill and
two-process tests start real processes) under ``on_bad_sample: error`` and ``skip``, and must end
as one of:

- a clear error: exit code 2, one ``error: ...`` line naming the file/row/key, no traceback;
- a counted skip: exit code 0, the sample named in log.jsonl and counted in the summary by reason;
- accepted: a valid (if odd) input that trains, with nothing skipped.

``TALLY`` below counts the cases by outcome (never traceback, silent or hang: those fail a test).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from multissl import cli
from multissl.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------
# recipes and data, all built here


def tiny_image_recipe(data_path: str, out: Path, **extra) -> dict:
    recipe = {
        "description": "reliability test",
        "data": {"path": data_path, "columns": {"image": "image"}},
        "domains": {"image": {"options": {"image_size": 8, "channels": 1, "normalization": "none"},
                              "encoder": {"architecture": "convnext", "size": "tiny",
                                          "overrides": {"hidden_sizes": [8, 16], "depths": [1, 1]}}}},
        "objectives": [{"name": "simclr", "domains": ["image"], "options": {"projection_dim": 8, "hidden_dim": 16}}],
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "train": {"batch_size": 8, "max_steps": 2},
        "logging": {"every": 1, "health_every": 2, "trackers": [], "progress_bar": False},
        "checkpoint": {"every": 2, "keep": 2},
        "output_dir": str(out),
    }
    for key, value in extra.items():
        recipe[key] = value
    return recipe


def digits_recipe(out: Path, **train) -> dict:
    recipe = tiny_image_recipe("sklearn:digits", out)
    recipe["data"] = {"path": "sklearn:digits", "limit": 64, "columns": {"image": "image", "label": "label"}}
    recipe["train"].update(train)
    return recipe


def tiny_audio_recipe(data_path: str, out: Path) -> dict:
    return {
        "description": "reliability test",
        "data": {"path": data_path},
        "domains": {"audio": {"options": {"sample_rate": 8000, "crop_seconds": 0.25, "max_seconds": 0.5},
                              "encoder": {"architecture": "wav2vec2", "size": "tiny"}}},
        "objectives": [{"name": "simclr", "domains": ["audio"], "options": {"projection_dim": 8, "hidden_dim": 16}}],
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "train": {"batch_size": 8, "max_steps": 2},
        "logging": {"every": 1, "health_every": 2, "trackers": [], "progress_bar": False},
        "checkpoint": {"every": 2, "keep": 1},
        "output_dir": str(out),
    }


def tiny_text_recipe(data_path: str, out: Path, columns: dict | None = None) -> dict:
    return {
        "description": "reliability test",
        "data": {"path": data_path, "columns": columns or {}},
        "domains": {"text": {"options": {"tokenizer": "train", "vocab_size": 60, "max_length": 16},
                             "encoder": {"architecture": "bert", "size": "tiny"}}},
        "objectives": [{"name": "simcse", "domains": ["text"], "options": {}}],
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "train": {"batch_size": 8, "max_steps": 2},
        "logging": {"every": 1, "health_every": 2, "trackers": [], "progress_bar": False},
        "checkpoint": {"every": 2, "keep": 1},
        "output_dir": str(out),
    }


def write_png(path: Path, seed: int, size: int = 8) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def image_folder(root: Path, good: int, bad: dict[str, bytes | None] | None = None) -> Path:
    """``good`` random 8x8 PNGs plus the named bad files (bytes, or a PNG written by a callback)."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(good):
        write_png(root / f"good_{index:03d}.png", index)
    for name, content in (bad or {}).items():
        (root / name).write_bytes(content)
    return root


def png_bytes(size: tuple[int, int] = (8, 8), seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decompression_bomb_png() -> bytes:
    """A 40000 x 40000 grey PNG (1.6 G pixels, over Pillow's 2 x MAX_IMAGE_PIXELS): a small file
    whose header alone is refused; the pixel data is never inflated."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b"")


def wav_bytes(samples: np.ndarray, rate: int = 8000, subtype: str = "PCM_16") -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def audio_folder(root: Path, good: int, bad: dict[str, bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for index in range(good):
        noise = np.random.default_rng(index).normal(0, 0.1, 4000).astype(np.float32)
        (root / f"good_{index:03d}.wav").write_bytes(wav_bytes(noise))
    for name, content in (bad or {}).items():
        (root / name).write_bytes(content)
    return root


WORDS = "the a cat dog runs jumps over under red blue green small large house tree river stone bird fish".split()


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(count)]


def write_recipe(tmp_path: Path, data: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


#: (exit code, number of "error:" lines, a traceback printed) of every in-process command line
#: run of this module, in order: what the tally at the end measures
OBSERVED: list[tuple[int, int, bool]] = []


def run_cli(capsys, recipe: Path, *overrides: str) -> tuple[int, str]:
    """``multissl train RECIPE OVERRIDES`` in this process: (exit code, stderr). An exception that
    escapes the command line (a traceback for the user) fails the test."""
    capsys.readouterr()
    code = cli.main(["train", str(recipe), *overrides])
    err = capsys.readouterr().err
    OBSERVED.append((code, sum(line.startswith("error:") for line in err.splitlines()), "Traceback" in err))
    return code, err


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"expected one error line, got:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def summary_of(run_dir: Path) -> dict:
    summaries = [r for r in log_records(run_dir) if r.get("event") == "summary"]
    assert summaries, "the run wrote no end-of-run summary"
    return summaries[-1]


def named_skips(run_dir: Path) -> list[dict]:
    return [r for r in log_records(run_dir) if r.get("event") == "skipped_sample"]


# ------------------------------------------------------------------------------------------------
# the bad-input corpus: (id, domain, bad files, expected under "error", expected under "skip")
#   expected: ("error", fragment the one error line must hold) | ("skip", {reason: count}) |
#             ("accepted", None)

TRUNCATED_PNG = png_bytes(seed=7)[:40]
NOT_AN_IMAGE = b"this is a text file wearing a .png name\n"
HEADER_ONLY_WAV = wav_bytes(np.zeros(4000, dtype=np.float32))[:44]
TRUNCATED_WAV = wav_bytes(np.random.default_rng(3).normal(0, 0.1, 4000).astype(np.float32))[:1000]
NAN_WAV = wav_bytes(np.full(4000, np.nan, dtype=np.float32), subtype="FLOAT")

IMAGE_CASES = [
    ("image-truncated", {"cut.png": TRUNCATED_PNG}, ("error", "cut.png"), ("skip", {"cannot decode image": 1})),
    ("image-zero-byte", {"empty.png": b""}, ("error", "empty.png"), ("skip", {"empty file": 1})),
    ("image-mislabelled-file", {"notes.png": NOT_AN_IMAGE}, ("error", "notes.png"), ("skip", {"cannot decode image": 1})),
    ("image-1x1", {"dot.png": png_bytes((1, 1))}, ("accepted", None), ("accepted", None)),
    ("image-decompression-bomb", {"bomb.png": decompression_bomb_png()}, ("error", "bomb.png"),
     ("skip", {"decompression bomb": 1})),
]
AUDIO_CASES = [
    ("audio-truncated", {"cut.wav": TRUNCATED_WAV}, ("error", "cut.wav"), ("skip", {"truncated audio": 1})),
    ("audio-header-only", {"header.wav": HEADER_ONLY_WAV}, ("error", "header.wav"), ("skip", {"truncated audio": 1})),
    ("audio-nan-samples", {"nan.wav": NAN_WAV}, ("error", "nan.wav"), ("skip", {"non-finite audio samples": 1})),
]


def _run_data_case(tmp_path, capsys, recipe: dict, policy: str, expected: tuple, rows: int):
    recipe["data"]["on_bad_sample"] = policy
    recipe["train"]["max_steps"] = rows // recipe["train"]["batch_size"]  # one epoch: every row is read once
    path = write_recipe(tmp_path, recipe)
    code, stderr = run_cli(capsys, path)
    kind, detail = expected
    run_dir = Path(recipe["output_dir"])
    if kind == "error":
        line = error_line(stderr)
        assert code == 2 and detail in line, (code, line)
        return "clear error"
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    summary = summary_of(run_dir)
    if kind == "accepted":
        assert summary["skipped_samples"] == 0, summary
        return "accepted"
    assert summary["skipped_by_reason"] == detail, summary
    names = named_skips(run_dir)
    assert len(names) == sum(detail.values()) and all(n["where"] and n["reason"] in detail for n in names), names
    assert all("row " in n["where"] and "." in n["where"] for n in names), names  # row and file
    return "counted skip"


@pytest.mark.parametrize("policy", ["error", "skip"])
@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_bad_images_are_named_or_counted(tmp_path, capsys, case, policy):
    name, bad, on_error, on_skip = case
    folder = image_folder(tmp_path / "images", good=16 - len(bad), bad=bad)
    recipe = tiny_image_recipe(str(folder), tmp_path / "run")
    outcome = _run_data_case(tmp_path, capsys, recipe, policy, on_error if policy == "error" else on_skip, rows=16)
    assert outcome in TALLY_OUTCOMES


@pytest.mark.parametrize("policy", ["error", "skip"])
@pytest.mark.parametrize("case", AUDIO_CASES, ids=[c[0] for c in AUDIO_CASES])
def test_bad_audio_is_named_or_counted(tmp_path, capsys, case, policy):
    name, bad, on_error, on_skip = case
    folder = audio_folder(tmp_path / "clips", good=16 - len(bad), bad=bad)
    recipe = tiny_audio_recipe(str(folder), tmp_path / "run")
    outcome = _run_data_case(tmp_path, capsys, recipe, policy, on_error if policy == "error" else on_skip, rows=16)
    assert outcome in TALLY_OUTCOMES


def test_non_utf8_text_names_file_and_line_or_skips_it(tmp_path, capsys, caplog):
    lines = [line.encode() for line in sentences(24)]
    lines[5] += b" caf\xe9"  # a latin-1 byte in a UTF-8 file
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    recipe = tiny_text_recipe(str(corpus), tmp_path / "run")
    path = write_recipe(tmp_path, recipe)

    code, stderr = run_cli(capsys, path)
    line = error_line(stderr)
    assert code == 2 and f"{corpus}:6" in line and "data.encoding" in line, line

    code, stderr = run_cli(capsys, path, "data.on_bad_sample=skip")
    assert code == 0, stderr[-3000:]
    assert summary_of(tmp_path / "run")["skipped_by_reason"] == {"undecodable text": 1}
    assert [n["where"] for n in named_skips(tmp_path / "run")] == [f"{corpus}:6"]

    # the right encoding reads every line: nothing skipped
    code, stderr = run_cli(capsys, path, f"output_dir={tmp_path / 'latin'}", "data.encoding=latin-1")
    assert code == 0 and summary_of(tmp_path / "latin")["skipped_samples"] == 0, stderr[-3000:]
    # an unknown encoding is named by its key
    code, stderr = run_cli(capsys, path, "data.encoding=klingon")
    assert code == 2 and "data.encoding" in error_line(stderr)

    # multissl probe reads data the same way: a csv with a non-UTF-8 line
    rows = [b"text,label"] + [f"{s},{i % 2}".encode() for i, s in enumerate(sentences(30))]
    rows[3] = b"caf\xe9 au lait,1"
    table = tmp_path / "table.csv"
    table.write_bytes(b"\n".join(rows) + b"\n")
    probe = ["probe", "--domain", "text", "--encoder", str(tmp_path / "latin/encoders/text"), "--data", str(table),
             "--columns", "text=text,label=label", "--probe", "knn", "--test-data", str(table), "--test-split", "train",
             "--output", str(tmp_path / "probe.json")]
    capsys.readouterr()
    assert cli.main(probe) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("multissl probe: error")]
    assert f"{table}:4" in line and "--encoding" in line, line
    caplog.clear()
    assert cli.main([*probe, "--on-bad-sample", "skip"]) == 0
    assert f"{table}:4" in caplog.text  # the skipped line is named (a logging warning: stderr in a shell)
    assert cli.main([*probe, "--encoding", "latin-1"]) == 0


def test_non_utf8_csv_lines_are_named_or_left_out(tmp_path):
    rows = [b"text,label"] + [f"{s},{i % 2}".encode() for i, s in enumerate(sentences(12))]
    rows[3] = b"caf\xe9 au lait,1"
    table = tmp_path / "table.csv"
    table.write_bytes(b"\n".join(rows) + b"\n")
    from domains.text import TextDomain
    from multissl.domain import BadSampleError, DataConfig

    with pytest.raises(BadSampleError, match=rf"{table}:4: not valid utf-8"):
        TextDomain().load(DataConfig(path=str(table), columns={"text": "text"}))
    domain = TextDomain()
    rows_read = domain.load(DataConfig(path=str(table), columns={"text": "text"}, on_bad_sample="skip"))
    assert len(rows_read) == 11 and [s["where"] for s in domain.load_skips] == [f"{table}:4"]


def test_blank_and_very_long_text_lines(tmp_path, capsys):
    lines = sentences(20)
    lines[3] = ""
    lines[9] = "   "
    lines[12] = "word " * 20_000  # 100k characters: truncated to max_length tokens, trains
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    recipe = tiny_text_recipe(str(corpus), tmp_path / "run")
    recipe["train"]["max_steps"] = 2  # 18 rows kept, 2 batches of 8
    code, stderr = run_cli(capsys, write_recipe(tmp_path, recipe))
    assert code == 0, stderr[-3000:]
    summary = summary_of(tmp_path / "run")
    assert summary["skipped_by_reason"] == {"blank line": 2}, summary
    (named,) = named_skips(tmp_path / "run")
    assert named["count"] == 2 and "rows 3, 9" in named["where"]


def test_csv_missing_its_column_is_one_line(tmp_path, capsys):
    table = tmp_path / "table.csv"
    # no column the text role could be (a "sentence" column would be read instead, with a warning)
    table.write_text("words,label\n" + "".join(f"{s},0\n" for s in sentences(16)))
    recipe = tiny_text_recipe(str(table), tmp_path / "run", columns={"text": "text"})
    for policy in ("error", "skip"):
        code, stderr = run_cli(capsys, write_recipe(tmp_path, recipe), f"data.on_bad_sample={policy}")
        line = error_line(stderr)
        assert code == 2 and "table.csv" in line and "'text'" in line and "words" in line, line


def test_string_labels_in_an_image_table_are_named(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", good=16)
    (folder / "metadata.csv").write_text("file_name,kind\n" + "".join(f"good_{i:03d}.png,cat\n" for i in range(16)))
    recipe = tiny_image_recipe(str(folder), tmp_path / "run")
    recipe["data"]["columns"] = {"image": "image", "label": "kind"}
    code, stderr = run_cli(capsys, write_recipe(tmp_path, recipe))
    line = error_line(stderr)
    assert code == 2 and "row " in line and "'cat'" in line and "class id" in line, line


# ------------------------------------------------------------------------------------------------
# recipe misuse

RECIPE_CASES = [
    ("epochs-negative", ["train.max_steps=null", "train.epochs=-1"], "train.epochs"),
    ("epochs-zero", ["train.max_steps=null", "train.epochs=0"], "train.epochs"),
    ("max-steps-zero", ["train.max_steps=0"], "train.max_steps"),
    ("batch-size-zero", ["train.batch_size=0"], "train.batch_size"),
    ("limit-negative", ["data.limit=-3"], "data.limit"),
    ("limit-zero", ["data.limit=0"], "data.limit"),
    ("lr-nan", ["optimizer.lr=.nan"], "optimizer.lr"),
    ("unknown-key", ["train.bach_size=3"], "train.bach_size"),
    ("override-not-yaml", ["objectives.0.options={projection_dim:"], "objectives.0.options"),
    ("missing-data-path", ["data.path=./no/such/folder.parquet"], "data.path"),
    ("simclr-batch-of-one", ["train.batch_size=1"], "train.batch_size"),
    ("barlow-batch-of-two", ["objectives.0.name=barlow_twins", "objectives.0.options={projection_dim: 8}",
                             "train.batch_size=2"], "train.batch_size"),
    ("limit-below-the-batch", ["data.limit=5"], "5 row(s)"),
    ("encoding-unknown", ["data.encoding=klingon"], "data.encoding"),
    ("stream-below-the-batch", ["data.streaming=true", "data.limit=5"], "train.batch_size"),
]


@pytest.mark.parametrize("overrides, fragment", [c[1:] for c in RECIPE_CASES], ids=[c[0] for c in RECIPE_CASES])
def test_recipe_misuse_is_one_line_naming_the_key(tmp_path, capsys, overrides, fragment):
    path = write_recipe(tmp_path, digits_recipe(tmp_path / "run"))
    code, stderr = run_cli(capsys, path, *overrides)
    line = error_line(stderr)
    assert code == 2 and fragment in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_python_float_spellings_are_numbers(tmp_path):
    from multissl.train import read_recipe

    data = digits_recipe(tmp_path / "run")
    path = tmp_path / "recipe.yaml"
    text = yaml.safe_dump(data).replace("lr: 0.001", "lr: 3e-4")
    assert "lr: 3e-4" in text
    path.write_text(text)
    assert read_recipe(str(path)).optimizer.lr == 3e-4
    for spelling, value in [("1.0e12", 1e12), ("1E5", 1e5), (".5e-3", 5e-4), ("5.", 5.0), ("1_000.5", 1000.5),
                            ("+1e-3", 1e-3), ("inf", float("inf"))]:
        assert read_recipe(str(path), [f"optimizer.lr={spelling}"]).optimizer.lr == value, spelling


def test_fewer_rows_than_a_batch_stops_instead_of_hanging(tmp_path):
    """The audit's hang: 17 images, batch 32, drop_last on. A real process, with a timeout."""
    folder = image_folder(tmp_path / "images", good=17)
    path = write_recipe(tmp_path, tiny_image_recipe(str(folder), tmp_path / "run", train={"batch_size": 32, "max_steps": 5}))
    result = subprocess.run([sys.executable, "-m", "multissl.cli", "train", str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = error_line(result.stderr)
    assert result.returncode == 2 and "17 row(s)" in line and "32" in line and "train.batch_size" in line, line
    # --debug (or MULTISSL_DEBUG=1) shows the traceback instead
    result = subprocess.run([sys.executable, "-m", "multissl.cli", "train", str(path), "--debug"], cwd=ROOT,
                            capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 1 and "Traceback" in result.stderr and "NotEnoughDataError" in result.stderr


def test_no_network_is_one_line(tmp_path):
    path = write_recipe(tmp_path, digits_recipe(tmp_path / "run"))
    result = subprocess.run([sys.executable, "-m", "multissl.cli", "train", str(path), "data.path=someone/some-dataset"],
                            cwd=ROOT, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    line = error_line(result.stderr)
    assert result.returncode == 2 and "no network" in line and "someone/some-dataset" in line, line


def test_all_bad_batches_stop_the_run_and_small_ones_are_counted(tmp_path, capsys):
    # 15 of 16 images are bad: every batch of 8 keeps at most one row, below SimCLR's 2
    folder = image_folder(tmp_path / "images", good=1, bad={f"bad_{i:02d}.png": b"" for i in range(15)})
    recipe = tiny_image_recipe(str(folder), tmp_path / "run")
    recipe["data"]["on_bad_sample"] = "skip"
    recipe["train"]["max_skipped_batches_in_row"] = 3
    code, stderr = run_cli(capsys, write_recipe(tmp_path, recipe))
    line = error_line(stderr)
    assert code == 2 and "4 batches in a row" in line and "max_skipped_batches_in_row" in line, line
    assert summary_of(tmp_path / "run")["skipped_by_reason"]["empty file"] >= 15  # named and counted before stopping

    # 7 of 16 bad: the run goes on; a batch too small after skips would be skipped and its rows
    # counted ("batch too small to train on after skips"); each bad file is named once
    folder = image_folder(tmp_path / "half", good=9, bad={f"bad_{i:02d}.png": b"" for i in range(7)})
    recipe = tiny_image_recipe(str(folder), tmp_path / "half-run")
    recipe["data"]["on_bad_sample"] = "skip"
    recipe["train"]["max_steps"] = 3
    code, stderr = run_cli(capsys, write_recipe(tmp_path, recipe, "half.yaml"))
    assert code == 0, stderr[-3000:]
    summary = summary_of(tmp_path / "half-run")
    assert summary["skipped_by_reason"]["empty file"] >= 7  # each bad file, once per epoch read (mid-epoch stop)
    assert summary["skipped_samples"] == sum(summary["skipped_by_reason"].values())
    assert {n["where"].split("file ")[-1] for n in named_skips(tmp_path / "half-run") if n["reason"] == "empty file"} \
        == {repr(str(folder / f"bad_{i:02d}.png")) + ")" for i in range(7)}


# ------------------------------------------------------------------------------------------------
# checkpoints: no code runs, a corrupt one has a fallback, a changed recipe is refused


@pytest.fixture
def finished_run(tmp_path, capsys):
    path = write_recipe(tmp_path, digits_recipe(tmp_path / "run", max_steps=4))
    code, stderr = run_cli(capsys, path)
    assert code == 0, stderr[-3000:]
    return path, tmp_path / "run"


class _WritesAFile:
    """A pickle payload: unpickling it calls open(path, "w"), i.e. runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_holding_a_pickle_is_refused_and_never_unpickled(finished_run, tmp_path, capsys):
    path, run_dir = finished_run
    newest = list_checkpoints(run_dir)[-1]
    assert sorted(p.name for p in newest.iterdir()) == [
        "COMPLETE", "model.safetensors", "optimizer.safetensors", "rng_state_0.safetensors", "training_state.json"]
    witness = tmp_path / "code-ran"
    # as accelerate's own format names it (what an older multissl wrote), and the manifest updated
    # by the attacker to list it: still refused, by name and by content
    (newest / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_WritesAFile(str(witness))))
    manifest = json.loads((newest / "COMPLETE").read_text())
    manifest["files"]["custom_checkpoint_0.pkl"] = {"bytes": 0, "sha256": ""}
    (newest / "COMPLETE").write_text(json.dumps(manifest))
    for resume in ("auto", str(newest)):
        code, stderr = run_cli(capsys, path, "train.max_steps=6", f"checkpoint.resume={resume}")
        line = error_line(stderr)
        assert code == 2 and "custom_checkpoint_0.pkl" in line and "pickle" in line, line
        assert not witness.exists(), "the checkpoint's pickle was loaded: it ran code"
    # a pickle under a safe-looking name is never unpickled either
    (newest / "custom_checkpoint_0.pkl").unlink()
    (newest / "extra_state.dat").write_bytes(pickle.dumps(_WritesAFile(str(witness))))
    code, stderr = run_cli(capsys, path, "train.max_steps=6")
    assert code == 2 and "extra_state.dat" in error_line(stderr) and not witness.exists()


def test_a_damaged_explicit_checkpoint_names_the_file(finished_run, capsys):
    path, run_dir = finished_run
    newest = list_checkpoints(run_dir)[-1]
    with (newest / "model.safetensors").open("r+b") as handle:
        handle.truncate(100)
    code, stderr = run_cli(capsys, path, f"checkpoint.resume={newest}", "train.max_steps=6")
    line = error_line(stderr)
    assert code == 2 and "model.safetensors" in line and "truncated" in line, line


def test_a_rerun_with_changed_settings_is_refused(finished_run, capsys):
    path, run_dir = finished_run
    card = (run_dir / "encoders/image/README.md").read_text()
    code, stderr = run_cli(capsys, path, "optimizer.lr=0.5", "train.seed=3")
    line = error_line(stderr)
    assert code == 2 and "optimizer.lr (0.001 -> 0.5)" in line and "train.seed (0 -> 3)" in line, line
    assert "output_dir" in line
    assert (run_dir / "encoders/image/README.md").read_text() == card  # the card still tells the truth
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["optimizer"]["lr"] == 0.001
    # fields that may change on resume: the run's length, logging, checkpoint cadence
    code, stderr = run_cli(capsys, path, "train.max_steps=6", "logging.every=2", "checkpoint.every=3")
    assert code == 0, stderr[-3000:]
    assert [p.name for p in list_checkpoints(run_dir)][-1] == "step-00000006"


def _subprocess_train(recipe: Path, *overrides: str, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill:
        env["MULTISSL_TEST_KILL"] = kill
    return subprocess.run([sys.executable, "-m", "multissl.cli", "train", str(recipe), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kill_during_training_and_checkpoint_write_then_corrupt_newest_resumes_exactly(tmp_path):
    """kill -9 after an optimiser step, kill -9 in the middle of writing a checkpoint, then damage
    the newest complete checkpoint's generator state: resume=auto falls back to the previous one,
    says which file it skipped, and ends with the weights of an uninterrupted run."""
    def recipe(out: Path) -> Path:
        data = digits_recipe(out, max_steps=8, batch_size=16)
        data["checkpoint"] = {"every": 2, "keep": 5}
        data["objectives"] = [{"name": "moco_v2", "domains": ["image"],  # a queue and an EMA teacher to restore
                               "options": {"queue_size": 32, "projection_dim": 8, "hidden_dim": 16}}]
        return write_recipe(tmp_path, data, f"{out.name}.yaml")

    full = _subprocess_train(recipe(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    path = recipe(killed_dir)
    first = _subprocess_train(path, kill="step:3")
    assert first.returncode == -9, first.stderr[-3000:]
    assert [p.name for p in list_checkpoints(killed_dir)] == ["step-00000002"]
    second = _subprocess_train(path, kill="checkpoint:6")
    assert second.returncode == -9, second.stderr[-3000:]
    assert [p.name for p in list_checkpoints(killed_dir)] == ["step-00000002", "step-00000004"]
    assert (killed_dir / "checkpoints/.staging-step-00000006").is_dir()  # the half-written one, ignored

    damaged = killed_dir / "checkpoints/step-00000004/rng_state_0.safetensors"
    content = bytearray(damaged.read_bytes())
    content[len(content) // 2] ^= 0xFF  # one flipped byte inside the generator state: same size
    damaged.write_bytes(bytes(content))
    resumed = _subprocess_train(path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"skipping corrupt checkpoint: {damaged}" in resumed.stderr
    assert "resuming from" in resumed.stdout and "step-00000002" in resumed.stdout

    expected = load_file(tmp_path / "full/checkpoints/step-00000008/model.safetensors")
    got = load_file(killed_dir / "checkpoints/step-00000008/model.safetensors")
    assert set(expected) == set(got)
    for key in expected:  # parameters, queue, queue pointer, EMA teacher
        torch.testing.assert_close(got[key], expected[key], atol=0, rtol=0, msg=f"{key} differs after the faults")


@pytest.mark.slow
def test_two_processes_count_every_skip_once(tmp_path):
    """Under 2 processes each rank skips its own bad samples; the totals are reduced across them."""
    folder = image_folder(tmp_path / "images", good=28, bad={f"bad_{i}.png": TRUNCATED_PNG for i in range(4)})
    recipe = tiny_image_recipe(str(folder), tmp_path / "run")
    recipe["data"]["on_bad_sample"] = "skip"
    recipe["train"].update(batch_size=8, max_steps=2)  # 32 rows = one epoch of 2 steps of 2 x 8
    path = write_recipe(tmp_path, recipe)
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", "-m", "multissl.train", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-5000:]
    summary = summary_of(tmp_path / "run")
    assert summary["skipped_by_reason"] == {"cannot decode image": 4}, summary
    assert sorted(n["where"].split("/")[-1] for n in named_skips(tmp_path / "run")) == [f"bad_{i}.png')" for i in range(4)]
    steps = [r for r in log_records(tmp_path / "run") if "event" not in r]
    assert steps[-1]["skipped_samples"] == 4


# ------------------------------------------------------------------------------------------------
# the tally the issue asks for

TALLY_OUTCOMES = ("clear error", "counted skip", "accepted")


def tally() -> dict[str, int]:
    """Outcomes of every case above (each asserted by its test): data cases under both policies,
    the text, csv and label cases, recipe misuse, the hang, the unsafe and damaged checkpoints."""
    counts = {"clear error": 0, "counted skip": 0, "accepted": 0}
    for cases in (IMAGE_CASES, AUDIO_CASES):
        for _, _, on_error, on_skip in cases:
            for kind, _ in (on_error, on_skip):
                counts[{"error": "clear error", "skip": "counted skip", "accepted": "accepted"}[kind]] += 1
    counts["clear error"] += 3 + 1 + 2 + 1  # non-UTF-8 (train, probe, loader), bad encoding name, csv missing column x2, string labels
    counts["counted skip"] += 3 + 1  # non-UTF-8 skipped (train, probe, loader), blank lines counted
    counts["accepted"] += 2 + 1  # the right encoding (train, probe), the 100k-character line
    counts["clear error"] += len(RECIPE_CASES) + 1 + 1  # + the fewer-rows-than-a-batch hang, no network
    counts["accepted"] += 8  # the float spellings
    counts["clear error"] += 1  # all-bad batches stop the run
    counts["counted skip"] += 1 + 1  # small batches after skips; two processes
    counts["clear error"] += 3 + 1 + 1  # pickle (auto, path, disguised), damaged explicit path, changed recipe
    counts["counted skip"] += 1  # the corrupt newest checkpoint skipped by resume=auto, with a warning
    counts["accepted"] += 1  # resume with a longer run / other logging
    return {"tried": sum(counts.values()), **counts}


def test_tally_has_no_traceback_silent_or_hang():
    """The cases' outcomes as declared by their tests (``tally``), beside what this module's
    in-process command-line runs did: every one ended with exit code 0, or with exit code 2 and
    exactly one ``error:`` line, and none printed a traceback. (Runs after the cases: pytest runs a
    module's tests in file order, and ``--dist loadfile`` keeps the module on one worker.)"""
    if not OBSERVED:
        pytest.skip("the tally measures the command-line runs of this module's other tests: run the whole module")
    declared = tally()
    print("bad-input tally (declared by the cases):", declared)
    codes = [code for code, _, _ in OBSERVED]
    print(f"observed: {len(OBSERVED)} command-line runs, {codes.count(2)} one-line errors (exit 2), "
          f"{codes.count(0)} finished (exit 0), {sum(t for _, _, t in OBSERVED)} tracebacks")
    assert all(code in (0, 2) for code in codes), codes
    assert not any(traceback for _, _, traceback in OBSERVED)
    assert all(lines == 1 for code, lines, _ in OBSERVED if code == 2), OBSERVED
    assert all(lines == 0 for code, lines, _ in OBSERVED if code == 0), OBSERVED
