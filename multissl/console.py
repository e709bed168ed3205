"""What a run shows while it trains, on the main process only.

On a terminal, a progress bar (``logging.progress_bar``). Anywhere else (a file, a pipe, CI), or
with the bar turned off, a plain line every ``logging.every`` steps and at the last step, so a log
file holds readable lines instead of a carriage-return redraw per step. The libraries' own bars
(transformers' "Loading weights", "Writing model shards"; datasets' "Map") are quiet during a run.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, TextIO

__all__ = ["RunConsole", "quiet_library_progress"]


class RunConsole:
    """Progress of optimiser steps ``done..total``: a tqdm bar on a terminal, else plain lines."""

    def __init__(self, enabled: bool, total: int, done: int, every: int, progress_bar: bool,
                 stream: TextIO | None = None) -> None:
        self.total, self.every, self.done = total, every, done
        self.stream = stream or sys.stderr
        self.started, self.bar = time.monotonic(), None
        self.lines = False
        if not enabled:
            return
        if progress_bar and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="train", dynamic_ncols=True, file=self.stream)
        else:
            self.lines = True

    def step(self, step: int, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}")
        elif self.lines and (step % self.every == 0 or step == self.total):
            rate = (step - self.done) / max(time.monotonic() - self.started, 1e-9)
            print(f"step {step}/{self.total}  loss {loss:.4f}  lr {lr:.3g}  {rate:.2f} steps/s",
                  file=self.stream, flush=True)

    def scores(self, step: int, record: dict[str, float]) -> None:
        """The online evaluation's scores at ``step``, one line (above the bar on a terminal)."""
        if self.bar is None and not self.lines:
            return
        text = "  ".join(f"{key} {value:.4f}" for key, value in record.items() if key.endswith("_top1"))
        line = f"step {step}/{self.total}  {text}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def quiet_library_progress() -> Iterator[None]:
    """transformers' and datasets' progress bars off for the duration, as they were after."""
    import datasets
    from transformers.utils import logging as transformers_logging

    transformers_on, datasets_on = transformers_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if transformers_on:
            transformers_logging.enable_progress_bar()
        if datasets_on:
            datasets.enable_progress_bars()
