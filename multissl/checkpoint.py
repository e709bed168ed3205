"""Checkpoint folders that are never half-written: save to a hidden temporary folder, mark it
complete, then rename. A run killed at any instant leaves the last complete checkpoint intact.

Layout of a run folder::

    RUN/checkpoints/step-00000500/   accelerator.save_state (model incl. every objective's state:
                                     queues, EMA teachers, temperatures; optimiser, scheduler,
                                     RNG of every process, the data position) + COMPLETE
    RUN/encoders/NAME/               the encoder in Hugging Face format (safetensors)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

__all__ = ["checkpoint_dir", "list_checkpoints", "latest_checkpoint", "save_checkpoint"]

_NAME = re.compile(r"^step-(\d{8})$")
_MARKER = "COMPLETE"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first. Half-written (unmarked) folders are ignored."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and (p / _MARKER).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(accelerator: Accelerator, run_dir: str | Path, step: int, keep: int) -> Path:
    """Save the whole training state for ``step``; keep the newest ``keep`` complete checkpoints.

    Every process takes part (each saves its own RNG state); only the main process renames and
    prunes, after all processes have written.
    """
    folder = checkpoint_dir(run_dir)
    final = folder / f"step-{step:08d}"
    staging = folder / f".staging-step-{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / _MARKER).write_text(json.dumps({"step": step}) + "\n")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
