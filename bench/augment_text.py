"""Throughput of the text domain: collation (one fast-tokenizer call per batch) and every view.

Real sentences: the first lines of the Flickr30k captions in ../shared/data/text/corpus, a
sentencepiece tokenizer trained on them first (not timed). Each figure is sentences per second
for one batch of ``batch_size`` rows, made exactly as the engine makes it: ``collate`` on the CPU
(what a DataLoader worker does), then ``make_views`` on the collated batch with ``num_views``
views ("masked" and "plain" make one).

    python bench/augment_text.py             # prints a JSON dict
    from bench.augment_text import throughput; throughput()
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multissl.domain import DataConfig  # noqa: E402
from domains.text import TextConfig, TextDomain  # noqa: E402
from multissl.views import ViewRequest  # noqa: E402

CAPTIONS = ROOT.parent / "shared" / "data" / "text" / "corpus" / "multi30k_captions.txt"
REQUESTS = {
    "plain": ViewRequest("plain"),
    "dropout": ViewRequest("augmented", {"policy": "dropout"}),
    "cutoff": ViewRequest("augmented", {"policy": "cutoff"}),
    "delete": ViewRequest("augmented", {"policy": "delete"}),
    "swap": ViewRequest("augmented", {"policy": "swap"}),
    "masked": ViewRequest("masked"),
}


def _rate(work, rows: int, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        work()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return round(repeats * rows / (time.perf_counter() - start), 1)


def throughput(batch_size: int = 256, num_views: int = 2, repeats: int = 20, warmup: int = 3, path: str | Path = CAPTIONS) -> dict:
    """Sentences per second on this machine's CPU.

    Returns {"batch_size", "num_views", "threads", "max_length", "mean_tokens",
    "collate_sentences_per_s", "<view>_sentences_per_s" for plain, dropout, cutoff, delete, swap
    and masked}: a sentence counts once however many views are made of it.
    """
    domain = TextDomain(TextConfig(vocab_size=8000, max_length=64))
    rows = domain.load(DataConfig(path=str(path), limit=20 * batch_size))
    samples = [rows[i] for i in range(batch_size)]
    batch = domain.collate(samples)
    generator = torch.Generator().manual_seed(0)
    result = {
        "batch_size": batch_size,
        "num_views": num_views,
        "threads": torch.get_num_threads(),
        "max_length": domain.config.max_length,
        "mean_tokens": round(float(batch["attention_mask"].sum(1).float().mean()), 1),
        "collate_sentences_per_s": _rate(lambda: domain.collate(samples), batch_size, repeats, warmup),
    }
    for name, request in REQUESTS.items():
        if request.kind == "augmented":
            request = ViewRequest("augmented", {**request.options, "num_views": num_views})
        result[f"{name}_sentences_per_s"] = _rate(lambda: domain.make_views(batch, request, generator), batch_size, repeats, warmup)
    return result


if __name__ == "__main__":
    print(json.dumps(throughput(), indent=2))
