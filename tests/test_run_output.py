"""What a run prints and logs outside a terminal, and the launcher traps it refuses: plain progress
lines (not a bar redrawn per step, not silence), the last step logged however short the run, no
library progress bars, a precision disagreement said, and two unsynchronised processes stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.batch_size=16", "logging.trackers=[]", "checkpoint.every=100",
        "domains.image.encoder.overrides={hidden_sizes: [8, 16], depths: [1, 1]}"]


def _cli(args: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return result


@pytest.mark.parametrize("progress_bar", ["true", "false"])
def test_a_run_writing_to_a_file_prints_plain_lines(tmp_path, progress_bar):
    result = _cli([sys.executable, "-m", "multissl.cli", "train", "simclr-digits", "train.max_steps=5",
                   "logging.every=2", f"logging.progress_bar={progress_bar}", f"output_dir={tmp_path / 'run'}", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("step ") and " loss " in line]
    assert [line.split()[1] for line in lines] == ["2/5", "4/5", "5/5"], result.stderr[-2000:]
    # the demo recipe scores its held-out digits online: at step 0 and at the last step, one line each
    scores = [line for line in result.stderr.splitlines() if "online/knn_top1" in line]
    assert [line.split()[1] for line in scores] == ["0/5", "5/5"], result.stderr[-2000:]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    assert "\r" not in result.stderr, "no progress bar redraws in a file"
    for noise in ("Loading weights", "Writing model shards", "Map:"):
        assert noise not in result.stderr, f"library progress bar {noise!r} leaked into the run's output"


def test_a_run_shorter_than_the_logging_interval_logs_its_last_step(tmp_path):
    result = _cli([sys.executable, "-m", "multissl.cli", "train", "simclr-digits", "train.max_steps=3",
                   "logging.every=10", "logging.health_every=10", f"output_dir={tmp_path / 'run'}", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line).get("step") for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert 3 in steps and "step 3/3" in result.stderr


def test_two_processes_that_do_not_synchronise_are_stopped_with_the_fix(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "ACCELERATE_USE_CPU"}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no", "--main_process_port", "0",
         "-m", "multissl.train", "simclr-digits", "train.max_steps=2", f"output_dir={tmp_path / 'run'}", *TINY],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    assert "the launcher started 2 processes but this one runs alone" in result.stdout + result.stderr
    assert "ACCELERATE_USE_CPU=1" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "encoders").exists(), "nothing may be trained or saved"


def test_a_launcher_precision_that_differs_from_the_recipe_is_said(tmp_path):
    result = _cli([sys.executable, "-m", "multissl.cli", "train", "simclr-digits", "train.max_steps=2",
                   f"output_dir={tmp_path / 'run'}", *TINY], env={"ACCELERATE_MIXED_PRECISION": "bf16"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the launcher's mixed precision 'bf16' differs from the recipe's train.precision='fp32'" in result.stderr
    card = (tmp_path / "run" / "encoders" / "image" / "README.md").read_text()
    assert "precision no" in card  # what ran is what the card says
