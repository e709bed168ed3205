"""Throughput of the audio domain's ``augmented`` views (the audio row of the augmentation benchmark).

Measures whole-batch view making exactly as the engine calls it: a raw batch of ``batch_size``
clips of ``seconds`` at 16 kHz (random speech-like noise, lengths varying by up to 20% so padding
and masks are exercised), two views per clip, each with a per-sample random crop, gain, noise at
a random SNR and a time shift (plus SpecAugment for the log-mel front end).

    python bench/augment_audio.py            # prints a JSON dict
    from bench.augment_audio import throughput; throughput()
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domains.audio import AudioConfig, AudioDomain  # noqa: E402
from multissl.views import ViewRequest  # noqa: E402


def _views_per_second(front_end: str, batch: dict, num_views: int, repeats: int, warmup: int) -> float:
    domain = AudioDomain(AudioConfig(front_end=front_end, crop_seconds=1.0))
    request = ViewRequest("augmented", {"num_views": num_views})
    generator = torch.Generator().manual_seed(0)
    for _ in range(warmup):
        domain.make_views(batch, request, generator)
    start = time.perf_counter()
    for _ in range(repeats):
        domain.make_views(batch, request, generator)
    elapsed = time.perf_counter() - start
    return repeats * num_views * batch["waveforms"].shape[0] / elapsed


def throughput(batch_size: int = 64, seconds: float = 1.0, num_views: int = 2, repeats: int = 10, warmup: int = 2) -> dict:
    """Augmented audio views per second on this machine's CPU, per front end.

    Returns {"batch_size", "seconds", "num_views", "threads", "waveform_views_per_s",
    "log_mel_views_per_s"}: a "view" is one augmented clip (a pair for a SimCLR-style step counts 2).
    """
    sample_rate = 16000
    generator = torch.Generator().manual_seed(0)
    length = round(seconds * sample_rate)
    lengths = length - (torch.rand(batch_size, generator=generator) * 0.2 * length).long()
    waveforms = torch.randn(batch_size, length, generator=generator) * 0.1
    waveforms = waveforms * (torch.arange(length) < lengths[:, None])
    batch = {"waveforms": waveforms, "lengths": lengths, "skipped": 0}
    result = {"batch_size": batch_size, "seconds": seconds, "num_views": num_views, "threads": torch.get_num_threads()}
    for front_end in ("waveform", "log_mel"):
        result[f"{front_end}_views_per_s"] = round(_views_per_second(front_end, batch, num_views, repeats, warmup), 1)
    return result


if __name__ == "__main__":
    print(json.dumps(throughput(), indent=2))
