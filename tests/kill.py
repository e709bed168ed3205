"""A training run killed with SIGKILL once a given checkpoint is on disk (the resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from multissl.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def kill_after_checkpoint(recipe: Path, run_dir: Path, step: int, last_step: int, timeout: float = 240.0) -> list[int]:
    """Start ``python -m multissl.train RECIPE`` (one torch thread), SIGKILL it as soon as the
    checkpoint of ``step`` exists under ``run_dir``, and return the steps checkpointed by then; fails
    when the run ends first or the kill came too late to leave anything to resume (``last_step``)."""
    process = subprocess.Popen([sys.executable, "-m", "multissl.train", str(recipe)], cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    name = f"step-{step:08d}"
    deadline = time.time() + timeout
    while time.time() < deadline and not any(p.name == name for p in list_checkpoints(run_dir)):
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = [int(p.name.split("-")[1]) for p in list_checkpoints(run_dir)]
    assert step in done and max(done) < last_step, f"kill came too late to test anything: {done}"
    return done
