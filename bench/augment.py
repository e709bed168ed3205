"""Throughput of the batched view makers against per-sample pipelines, measured side by side.

    .venv/bin/python bench/augment.py                 # every section
    .venv/bin/python bench/augment.py --sections image --repeats 5

Each section is one function ``(args) -> dict`` registered in ``SECTIONS``; results are printed as a
table and merged into ``bench/results/augment.json`` (sections not run keep their last results),
each with the machine and commit it ran on. Timings on a shared machine are noisy: the load average at the start
of each section is recorded beside its numbers.

Image: SimCLR's two views of a batch of 256 CIFAR-10 images (32x32, from ../shared/data), by
``ImageDomain.make_views`` on the whole uint8 batch, against torchvision's PIL transforms applied
image by image (RandomResizedCrop, RandomHorizontalFlip, ColorJitter, RandomGrayscale,
GaussianBlur, RandomSolarize, ToTensor, Normalize) with the same strengths and probabilities.
Both start from decoded images (a uint8 tensor / PIL images). Per core is the fair comparison (a
per-sample pipeline scales over DataLoader workers, the batched one over intra-op threads), so both
run with one thread first; the batched path is also timed with every core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "augment.json"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    import torchvision

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


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


def _torchvision_pipeline(recipe, mean, std):
    """torchvision's per-sample PIL transforms with the strengths of one batched ViewRecipe."""
    from torchvision import transforms as T

    from domains.image.augment import blur_kernel_size

    return T.Compose([
        T.RandomResizedCrop(recipe.size, scale=recipe.crop_scale, ratio=recipe.crop_ratio),
        T.RandomHorizontalFlip(recipe.flip_probability),
        T.RandomApply([T.ColorJitter(recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue)],
                      p=recipe.jitter_probability),
        T.RandomGrayscale(recipe.grayscale_probability),
        T.RandomApply([T.GaussianBlur(blur_kernel_size(recipe.size, recipe.blur_kernel_fraction),
                                      sigma=recipe.blur_sigma)], p=recipe.blur_probability),
        T.RandomSolarize(threshold=round(255 * recipe.solarize_threshold), p=recipe.solarize_probability),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def bench_image(args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image

    from domains.base import DataConfig
    from domains.image import ImageConfig, ImageDomain
    from domains.image.views import view_recipes
    from multissl.views import ViewRequest

    shard = SHARED_DATA / "image" / "cifar10" / "train-00000-of-00004.parquet"
    if not shard.exists():
        return {"skipped": f"{shard} is absent"}
    domain = ImageDomain(ImageConfig(image_size=32, normalization="cifar10"))
    dataset = domain.load(DataConfig(path=str(shard), limit=args.batch))
    batch = domain.collate([dataset[i] for i in range(len(dataset))])
    images = batch["images"]
    pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    count = images.shape[0]
    all_threads = torch.get_num_threads()
    rows = []
    load = os.getloadavg()[0]
    for policy in ("simclr", "byol"):
        request = ViewRequest("augmented", {"num_views": 2, "policy": policy})
        recipes = view_recipes(domain.config, policy, 2, 0, 32)
        pipelines = [_torchvision_pipeline(r, domain.config.mean, domain.config.std) for r in recipes]
        generator = torch.Generator().manual_seed(0)

        def batched() -> None:
            domain.make_views({"images": images}, request, generator)

        def per_sample() -> None:
            for image in pil_images:
                torch.stack([pipeline(image) for pipeline in pipelines])

        for name, work, threads, repeats in (("batched (make_views)", batched, 1, args.repeats),
                                             ("per-sample torchvision PIL", per_sample, 1, max(1, args.repeats // 3)),
                                             ("batched (make_views)", batched, all_threads, args.repeats)):
            torch.set_num_threads(threads)
            seconds = _median_seconds(work, repeats)
            rows.append({"pipeline": name, "policy": policy, "threads": threads, "seconds_per_batch": seconds,
                         "images_per_second": count / seconds})
        torch.set_num_threads(all_threads)
    speedups = {}
    for policy in ("simclr", "byol"):
        per_core = {r["pipeline"]: r["images_per_second"] for r in rows if r["policy"] == policy and r["threads"] == 1}
        speedups[policy] = per_core["batched (make_views)"] / per_core["per-sample torchvision PIL"]
    return {
        "task": "two SimCLR-family views of 32x32 CIFAR-10 images (images/s counts source images)",
        "batch": count,
        "views": 2,
        "load_average_at_start": load,
        "rows": rows,
        "speedup_per_core": speedups,
        "target": "batched >= 3x per-sample per core",
    }


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {"image": bench_image}


def _print_table(name: str, result: dict[str, Any]) -> None:
    print(f"\n== {name}: {result.get('task', '')}")
    if "skipped" in result:
        print(f"skipped: {result['skipped']}")
        return
    print(f"{'pipeline':<30} {'policy':<8} {'threads':>7} {'ms/batch':>10} {'images/s':>10}")
    for row in result["rows"]:
        print(f"{row['pipeline']:<30} {row['policy']:<8} {row['threads']:>7} "
              f"{1000 * row['seconds_per_batch']:>10.1f} {row['images_per_second']:>10.0f}")
    for key, value in result.get("speedup_per_core", {}).items():
        print(f"speed-up per core ({key}): {value:.1f}x   (target: {result.get('target', '')})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9, help="timed repetitions (median reported)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    results: dict[str, Any] = json.loads(args.output.read_text()) if args.output.exists() else {}
    for name in args.sections:
        results[name] = {"machine": machine_info(), **SECTIONS[name](args)}
        _print_table(name, results[name])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
