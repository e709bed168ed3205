"""The main job runs end to end from the command a newcomer types (shortened by overrides)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_trains_probes_and_reports(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "multissl.cli", "demo", "--output-dir", str(out),
         "train.max_steps=3", "train.batch_size=64", "logging.progress_bar=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for row in ("learned encoder", "random init", "raw pixels"):
        assert row in result.stdout
    assert f"encoder saved to {out}/encoders/image" in result.stdout
    scores = json.loads((out / "demo_results.json").read_text())
    assert set(scores) == {"learned encoder", "random init", "raw pixels"}
    for row in scores.values():
        assert 0.0 <= row["linear"] <= 1.0 and 0.0 <= row["knn"] <= 1.0
    # raw pixels of 10 balanced digit classes are far above chance: the probes really fit
    assert scores["raw pixels"]["linear"] > 0.5
    assert (out / "encoders/image/model.safetensors").is_file()
    assert f"curves (loss, online kNN on the held-out digits): {out}/curves.png" in result.stdout
    assert (out / "curves.png").is_file()
    assert "Loading weights" not in result.stdout + result.stderr  # no library bars in the demo's output
