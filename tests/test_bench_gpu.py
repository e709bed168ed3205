"""bench/gpu.sh, the one script for a lent GPU, runs end to end on the CPU at toy sizes
(``--cpu-smoke``): every step writes a results file the report reads. Needs no ../shared (it
makes synthetic CIFAR-layout images where the real ones are absent)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_cpu_smoke_writes_every_results_file():
    pytest.importorskip("lightly")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "bench/gpu.sh", "--cpu-smoke"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = Path(re.search(r"results in (\S+)", done.stdout).group(1))
    from bench.report import load_results

    loaded = dict((path.name, data) for path, data in load_results(folder))
    assert set(loaded) == {"gpu_train_throughput.json", "gpu_losses.json", "gpu_online_eval_cost.json"}
    throughput = loaded["gpu_train_throughput.json"]
    assert {row["encoder"] for row in throughput["rows"]} == {"regnet-small", "resnet18"}
    assert all(row["channels_last"] for row in throughput["rows"])
