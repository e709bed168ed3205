"""The example `accelerate config` files load with Accelerate's own parser, and the CPU one really
starts two synchronised processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path):
    config = load_config_from_file(str(path))
    assert config.num_processes >= 2 and config.compute_environment.value == "LOCAL_MACHINE"


def test_expected_configs_are_shipped():
    assert {p.stem for p in CONFIGS} >= {"multi_gpu", "multi_node", "fsdp", "deepspeed_zero2", "cpu_two_processes"}


SCRIPT = """
import sys, torch, torch.distributed as dist
from accelerate import Accelerator
accelerator = Accelerator()
total = accelerator.reduce(torch.tensor([float(accelerator.process_index + 1)]), reduction="sum")
if accelerator.is_main_process:
    open(sys.argv[1], "w").write(f"{accelerator.num_processes} {int(total.item())}")
# as the engine ends: without destroying the process group, gloo's threads can abort the exit
accelerator.end_training()
"""


@pytest.mark.slow
def test_cpu_config_starts_two_synchronised_processes(tmp_path):
    import os
    import subprocess
    import sys

    script, out = tmp_path / "probe.py", tmp_path / "out.txt"
    script.write_text(SCRIPT)
    config = next(p for p in CONFIGS if p.stem == "cpu_two_processes")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                             str(script), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_text() == "2 3"  # two processes, and their all-reduce saw both (1 + 2)
