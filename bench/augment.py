"""Throughput of the batched view makers against per-sample pipelines, measured side by side.

    .venv/bin/python bench/augment.py                 # every section
    .venv/bin/python bench/augment.py --sections image --repeats 5
    .venv/bin/python bench/augment.py --quick       # smoke run: small batches, few repeats

Each section is one function ``(args) -> list of rows`` registered in ``SECTIONS``; results are
printed and merged into ``bench/results/augment.json`` (the format of ``bench/_common.py``;
sections not run keep their last rows), with the machine, commit and load average each section
ran with under ``section_runs``. Timings on a shared machine are noisy.

Image: SimCLR's two views of a batch of 256 CIFAR-10 images (32x32, from ../shared/data), by
``ImageDomain.make_views`` on the whole uint8 batch, against torchvision's PIL transforms applied
image by image (RandomResizedCrop, RandomHorizontalFlip, ColorJitter, RandomGrayscale,
GaussianBlur, RandomSolarize, ToTensor, Normalize) with the same strengths and probabilities.
Both start from decoded images (a uint8 tensor / PIL images). Per core is the fair comparison (a
per-sample pipeline scales over DataLoader workers, the batched one over intra-op threads), so both
run with one thread first; the batched path is also timed with every core.

Audio and text: the batched view makers of those domains (``bench/augment_audio.py`` and
``bench/augment_text.py``, each a ``throughput()`` function also runnable alone), recorded
here so one file holds the whole augmentation benchmark. They have no per-sample peer row yet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench._common import (  # noqa: E402
    SHARED_DATA,
    ResultsFormatError,
    describe_machine,
    machine_info,
    validate_results,
    write_results,
)

RESULTS = ROOT / "bench" / "results" / "augment.json"


def _median_seconds(work: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------ image


def torchvision_pipeline(recipe, mean, std):
    """torchvision's per-sample PIL transforms with the strengths of one batched ViewRecipe."""
    from torchvision import transforms as T

    from domains.image.augment import blur_kernel_size

    s = recipe.settings
    strength = s.jitter_strength
    return T.Compose([
        T.RandomResizedCrop(recipe.size, scale=s.crop_scale, ratio=s.crop_ratio),
        T.RandomHorizontalFlip(s.flip_probability),
        T.RandomApply([T.ColorJitter(s.brightness * strength, s.contrast * strength, s.saturation * strength,
                                     s.hue * strength)], p=s.jitter_probability),
        T.RandomGrayscale(s.grayscale_probability),
        T.RandomApply([T.GaussianBlur(blur_kernel_size(recipe.size, s.blur_kernel_fraction),
                                      sigma=s.blur_sigma)], p=s.blur_probability),
        T.RandomSolarize(threshold=round(255 * s.solarize_threshold), p=s.solarize_probability),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def bench_image(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Two views of a CIFAR-10 batch: ``make_views`` on the uint8 batch vs torchvision PIL per image."""
    from PIL import Image

    from multissl.domain import DataConfig
    from domains.image import ImageConfig, ImageDomain
    from domains.image.views import view_recipes
    from multissl.views import ViewRequest

    shard = SHARED_DATA / "image" / "cifar10" / "train-00000-of-00004.parquet"
    if not shard.exists():
        raise FileNotFoundError(f"{shard} is absent (the image section reads CIFAR-10 from ../shared/data)")
    domain = ImageDomain(ImageConfig(image_size=32, normalization="cifar10"))
    dataset = domain.load(DataConfig(path=str(shard), limit=args.batch))
    batch = domain.collate([dataset[i] for i in range(len(dataset))])
    images = batch["images"]
    pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    count = images.shape[0]
    all_threads = torch.get_num_threads()
    rows = []
    for policy in ("simclr", "byol"):
        request = ViewRequest("augmented", {"num_views": 2, "policy": policy})
        recipes = view_recipes(domain.config, policy, 2, 0, 32)
        pipelines = [torchvision_pipeline(r, domain.config.mean, domain.config.std) for r in recipes]
        generator = torch.Generator().manual_seed(0)

        def batched() -> None:
            domain.make_views({"images": images}, request, generator)

        def per_sample() -> None:
            for image in pil_images:
                torch.stack([pipeline(image) for pipeline in pipelines])

        # Per core first (one thread each): the fair comparison; then the batched path on every core.
        torch.set_num_threads(1)
        batched_seconds = _median_seconds(batched, args.repeats)
        per_sample_seconds = _median_seconds(per_sample, max(1, args.repeats // 3))
        torch.set_num_threads(all_threads)
        batched_all_seconds = _median_seconds(batched, args.repeats)
        common = {"section": "image", "task": "two views of 32x32 CIFAR-10 images", "policy": policy,
                  "batch": count}
        rows.append({**common, "threads": 1, "multissl_images_per_s": round(count / batched_seconds, 1),
                     "torchvision_images_per_s": round(count / per_sample_seconds, 1),
                     "speedup": round(per_sample_seconds / batched_seconds, 2),
                     "notes": "per core: both pipelines on one thread" if batched_seconds <= per_sample_seconds else
                     "per core: both pipelines on one thread. The batched views were slower here, which the design "
                     "does not explain (one tensor operation per batch instead of one PIL call per image): check "
                     "this section's load average before reading it as a loss."})
        rows.append({**common, "threads": all_threads, "multissl_images_per_s": round(count / batched_all_seconds, 1),
                     "torchvision_images_per_s": None, "speedup": None,
                     "notes": "batched path on every intra-op thread (a per-sample pipeline scales over "
                     "DataLoader workers instead)"})
    return rows


def bench_audio(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Augmented audio views per second (``bench/augment_audio.py``), one row per front end."""
    from bench.augment_audio import throughput

    result = throughput(batch_size=args.audio_batch, repeats=args.repeats, warmup=min(2, args.repeats))
    return [{"section": "audio", "task": f"{result['num_views']} augmented views of {result['seconds']} s clips "
             "at 16 kHz (a view counts once)", "front_end": front_end, "batch": result["batch_size"],
             "threads": result["threads"], "multissl_views_per_s": result[f"{front_end}_views_per_s"]}
            for front_end in ("waveform", "log_mel")]


def bench_text(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Collation and each text view, sentences per second (``bench/augment_text.py``)."""
    from bench.augment_text import CAPTIONS, REQUESTS, throughput

    if not CAPTIONS.exists():
        raise FileNotFoundError(f"{CAPTIONS} is absent (the text section reads captions from ../shared/data)")
    result = throughput(batch_size=args.text_batch, repeats=args.repeats, warmup=min(3, args.repeats))
    return [{"section": "text", "task": f"caption batches, max {result['max_length']} tokens "
             f"(mean {result['mean_tokens']}); a sentence counts once", "step": step, "batch": result["batch_size"],
             "threads": result["threads"], "multissl_sentences_per_s": result[f"{step}_sentences_per_s"]}
            for step in ("collate", *REQUESTS)]


SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "image": bench_image,
    "audio": bench_audio,
    "text": bench_text,
}


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("section", "task", "notes")))


def _previous(path: Path) -> dict[str, Any] | None:
    """The last results, when they are in the current format (older files are replaced whole)."""
    if not path.exists():
        return None
    try:
        return validate_results(json.loads(path.read_text()), str(path))
    except (ResultsFormatError, json.JSONDecodeError) as error:
        print(f"not merging with {path}: {error}")
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--batch", type=int, default=256, help="images per batch (image section)")
    parser.add_argument("--audio-batch", type=int, default=64, help="clips per batch (audio section)")
    parser.add_argument("--text-batch", type=int, default=256, help="sentences per batch (text section)")
    parser.add_argument("--repeats", type=int, default=9, help="timed repetitions (median reported)")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 64, 3 repeats")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.audio_batch, args.text_batch, args.repeats = 64, 16, 64, 3

    started = time.perf_counter()
    previous = _previous(args.output)
    rows = [r for r in (previous or {}).get("rows", []) if r.get("section") not in args.sections]
    section_runs = {k: v for k, v in (previous or {}).get("section_runs", {}).items() if k not in args.sections}
    info = machine_info()
    print(describe_machine(info))
    for name in args.sections:
        section_machine = machine_info()
        run: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": bool(args.quick)}
        try:
            section_rows = SECTIONS[name](args)
        except FileNotFoundError as error:  # its data is absent: say so in the file, measure the rest
            print(f"\n== {name}: skipped: {error}")
            section_runs[name] = {**run, "skipped": str(error)}
            continue
        section_machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(f"\n== {name}: {section_rows[0]['task'] if section_rows else ''}")
        _print_rows(section_rows)
        rows += section_rows
        section_runs[name] = {**run, "machine": section_machine}
    order = list(SECTIONS)
    rows.sort(key=lambda row: order.index(row["section"]) if row.get("section") in order else len(order))
    write_results(
        args.output, benchmark="bench/augment.py", argv=None if argv is None else ["bench/augment.py", *argv],
        title="Augmentation: batched views against per-sample pipelines", kind="speed", machine=info,
        description="Views per second made by each domain's batched ``make_views`` (whole batch, one call), "
        "against torchvision's per-sample PIL transforms for images (same strengths and probabilities, both "
        "from decoded images, one thread each: per core is the fair comparison, since a per-sample pipeline "
        "scales over DataLoader workers and the batched one over intra-op threads).",
        seeds={"views": 0}, budget={"quick": bool(args.quick), "repeats": args.repeats, "warmup": 1,
                                    "wall_seconds": round(time.perf_counter() - started, 1)},
        settings={"image_batch": args.batch, "audio_batch": args.audio_batch, "text_batch": args.text_batch,
                  "target": "image: batched >= 3x per-sample per core"},
        notes=["Sections merged from earlier runs keep the machine they ran on: see section_runs."],
        comparisons=[{"multissl": "multissl_images_per_s", "peer": "torchvision_images_per_s", "better": "higher",
                      "peer_label": "torchvision per-sample PIL"}],
        key_columns=("section", "policy", "threads", "front_end", "step"),
        extra={"section_runs": section_runs}, rows=rows,
    )


if __name__ == "__main__":
    main()
