"""What online evaluation costs: a real run of a shipped recipe through ``multissl.train.train``
at the default cadence, its evaluations' CPU seconds against the whole run's.

The run is ``recipes/simclr-image-cpu.yaml`` (SimCLR, the regnet "cpu" preset, batch 128, 5% of
CIFAR-10 held out and scored by online kNN) on the CIFAR-10 shards in ``../shared/data``, shortened
to ``--steps`` optimiser steps; the evaluation's cadence is the default, computed for that length
(``multissl.probes.online.default_every``: a tenth of the run, spaced further when embedding the
2,000 held-out rows would cost more than 3% of the training forward passes in between), with the
evaluations at step 0 and at the last step on top. The evaluations time themselves
(``RunResult.evaluation_cpu_seconds``: embedding, kNN, the curves PNG); the run is timed around
``train`` (process CPU seconds, data loading in-process). With ``--compare``, the same run without
evaluation (the same held-out rows left out of training) is timed too, and the difference is
reported beside the self-timed share.

    python bench/online_eval_cost.py                 # 600 steps (~8 CPU minutes)
    python bench/online_eval_cost.py --compare       # and the same run without evaluation
    python bench/online_eval_cost.py --steps 2400    # the recipe's full length
    python bench/online_eval_cost.py --device cuda --precision bf16 --data synthetic   # what bench/gpu.sh runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, SHARED_DATA, describe_machine, machine_info, write_results  # noqa: E402

RECIPE = "simclr-image-cpu"
CIFAR = SHARED_DATA / "image" / "cifar10" / "*.parquet"
MEASURED = ("multissl", "domains", "recipes/simclr-image-cpu.yaml", "bench/online_eval_cost.py")


def synthetic_cifar(folder: Path, rows: int, seed: int = 0) -> Path:
    """A parquet file shaped like the CIFAR-10 shards (``img`` PNG bytes, ``label``), random
    pixels: for measuring cost where the real data is absent (a GPU machine without ../shared)."""
    import io

    import datasets
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for index in range(rows):
        pixels = torch.randint(0, 256, (32, 32, 3), generator=generator, dtype=torch.uint8).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
        labels.append(index % 10)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    path = folder / "synthetic-cifar.parquet"
    datasets.Dataset.from_dict({"img": images, "label": labels}, features=features).to_parquet(str(path))
    return path


def one_run(data: str, steps: int, output_dir: Path, evaluation: bool, precision: str, batch: int | None,
            rows: int | None) -> dict[str, Any]:
    from multissl.train import read_recipe, train

    overrides = [f"data.path={data}", f"train.max_steps={steps}", f"train.precision={precision}",
                 "checkpoint.resume=null", f"checkpoint.every={10 * steps}", f"output_dir={output_dir}",
                 "logging.trackers=[]", "logging.progress_bar=false", "train.num_workers=0"]
    if batch is not None:
        overrides.append(f"train.batch_size={batch}")
    if rows is not None:
        overrides.append(f"evaluation.max_rows={rows}")
    if not evaluation:  # the same rows held out, evaluated only after the end (never, here)
        overrides.append(f"evaluation.every={10 * steps}")
    recipe = read_recipe(RECIPE, overrides)
    cpu, wall = time.process_time(), time.perf_counter()
    result = train(recipe, RECIPE)
    run_cpu, run_wall = time.process_time() - cpu, time.perf_counter() - wall
    records = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "online/knn_top1" in r]
    if not evaluation:  # the final-step evaluation of the "without" run is not part of it
        run_cpu -= result.evaluation_cpu_seconds
    return {"run_cpu_seconds": round(run_cpu, 2), "run_wall_seconds": round(run_wall, 2), "steps": result.steps,
            "evaluation_cpu_seconds": round(result.evaluation_cpu_seconds, 2) if evaluation else 0.0,
            "evaluations": len(evaluations) if evaluation else 0,
            "evaluated_steps": [r["step"] for r in evaluations] if evaluation else [],
            "knn_top1": [round(r["online/knn_top1"], 4) for r in evaluations] if evaluation else [],
            "evaluation_cpu_seconds_each": [round(r["online/cpu_seconds"], 3) for r in evaluations] if evaluation else []}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps of the run (the recipe's: 2400)")
    parser.add_argument("--compare", action="store_true", help="also time the same run without evaluation")
    parser.add_argument("--data", default=None, help="CIFAR-10 parquet glob (default ../shared/data), or 'synthetic'")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--batch", type=int, default=None, help="batch size (default the recipe's 128)")
    parser.add_argument("--rows", type=int, default=None, help="evaluated rows (default the recipe's 2,000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "online_eval_cost.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cpu":
        import os

        os.environ["ACCELERATE_USE_CPU"] = "true"  # the engine's Accelerator then stays on the CPU
    info = machine_info(MEASURED)
    print(describe_machine(info), flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="online-eval-cost-") as scratch:
        scratch_path = Path(scratch)
        if args.data == "synthetic" or (args.data is None and not any(CIFAR.parent.glob("*.parquet"))):
            data = str(synthetic_cifar(scratch_path, rows=max(4000, 2 * (args.rows or 2000))))
            source = "synthetic CIFAR-shaped parquet (random pixels): cost only, the kNN values mean nothing"
        else:
            data, source = args.data or str(CIFAR), "CIFAR-10 training shards"
        runs = {"with_evaluation": one_run(data, args.steps, scratch_path / "with", True, args.precision, args.batch,
                                           args.rows)}
        print(f"with evaluation: {runs['with_evaluation']}", flush=True)
        if args.compare:
            runs["without_evaluation"] = one_run(data, args.steps, scratch_path / "without", False, args.precision,
                                                 args.batch, args.rows)
            print(f"without evaluation: {runs['without_evaluation']}", flush=True)
    measured = runs["with_evaluation"]
    share = measured["evaluation_cpu_seconds"] / measured["run_cpu_seconds"]
    row = {"recipe": RECIPE, "steps": measured["steps"], "device": args.device, "precision": args.precision,
           "evaluations": measured["evaluations"], "run_cpu_seconds": measured["run_cpu_seconds"],
           "evaluation_cpu_seconds": measured["evaluation_cpu_seconds"],
           "evaluation_share": round(share, 4), "target_share": 0.05, "within_target": share <= 0.05}
    if args.compare:
        without = runs["without_evaluation"]["run_cpu_seconds"]
        row["run_without_evaluation_cpu_seconds"] = without
        row["difference_share"] = round((measured["run_cpu_seconds"] - without) / measured["run_cpu_seconds"], 4)
    print(f"online evaluation: {measured['evaluations']} evaluations, {measured['evaluation_cpu_seconds']:.1f} of "
          f"{measured['run_cpu_seconds']:.1f} CPU s = {share:.1%} of the run (target <= 5%)")
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    return write_results(
        args.output, benchmark="bench/online_eval_cost.py",
        argv=None if argv is None else ["bench/online_eval_cost.py", *argv],
        title="Online evaluation's cost at the default cadence (share of a real run)", kind="quality",
        description=("A shipped recipe (simclr-image-cpu) run through multissl.train.train for the given steps with "
                     "its online evaluation at the default cadence; the evaluations' own CPU seconds (embedding 2,000 "
                     "held-out rows, leave-one-out kNN, the curves PNG) as a share of the run's CPU seconds."),
        machine={**info, "device_name": device_name},
        seeds={"recipe": 0}, budget={"steps": args.steps, "wall_seconds": round(time.perf_counter() - started, 1)},
        settings={"recipe": RECIPE, "data": source, "device": args.device, "device_name": device_name,
                  "precision": args.precision, "threads": args.threads, "batch": args.batch or 128,
                  "rows": args.rows or 2000, "runs": runs},
        notes=["The default cadence is computed for the run's own length: a longer run evaluates the same number of "
               "times (a tenth of the run), so its share is smaller."],
        rows=[{"task": f"online evaluation at the default cadence, {RECIPE}, {measured['steps']} steps",
               "contender": "multissl", "metric": "evaluation_share_of_run_cpu", "value": row["evaluation_share"],
               "higher_is_better": False, "budget_seconds": None,
               "notes": ("within the target (<= 0.05)" if row["within_target"] else
                         "ABOVE the target (<= 0.05): a short run evaluates at step 0 and at its end on top of the "
                         "periodic evaluations, a fixed cost a longer run spreads thinner"),
               **{k: v for k, v in row.items() if k not in ("evaluation_share", "within_target")}}],
    )


if __name__ == "__main__":
    main()
