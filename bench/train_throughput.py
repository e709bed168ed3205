"""SimCLR train-step throughput on CIFAR-10, three ways in one run, with the same model.

The model is what ``recipes/simclr-image.yaml`` builds with its encoder set to ResNet-18
(``domains.image.encoder: {architecture: resnet, size: small}``: Hugging Face ``ResNetModel``,
basic blocks 64-128-256-512, depths 2-2-2-2) on 32x32 images, SimCLR's 2-layer projection head
(512 -> 512 -> 128), ``nt_xent`` at temperature 0.5, LARS (lr 0.3 x batch / 256, weight decay
1e-6) and global batch norm, exactly as the recipe sets them. ResNet-18 rather than the recipe's
ConvNeXt-S: it is the encoder lightly's and solo-learn's CIFAR-10 SimCLR examples use, and a
CPU can run it. Images are CIFAR-10 training images from ``../shared/data/image/cifar10``.

* (a) ``floor``: encoder + head forward, ``nt_xent``, backward and optimiser step on two ready
  view tensors already on the device: no data loading, no augmentation. No training loop is faster.
* (b) ``multissl``: the engine's real step (``multissl.train``): rows from the recipe's dataset,
  ``MultiDomainCollate`` in the DataLoader, the batch moved to the device, the domain's batched
  ``make_views`` on the device seeded per step, the ``SSLModel`` under ``accelerator.autocast()``,
  the NaN guard, ``accelerator.backward``, step, schedule, ``zero_grad``, ``on_step_end``; objects
  built by ``multissl.train.build_run`` on the recipe. Logging and checkpointing are left out.
  fp32 and bf16 autocast.
* (c) ``lightly_style``: the loop lightly's examples run: ``lightly.transforms.SimCLRTransform``
  (torchvision PIL transforms, per sample, with the recipe's strengths: jitter 0.5, no blur) in a
  DataLoader with 0 and 2 workers, default collation, then the same encoder, head, loss and LARS.

Throughput is source images per second (each gives two views) over the timed steps of each run,
after untimed warm-up steps; each setting is rebuilt and run once per round, settings one after
the other (data-loader workers of one setting never overlap another's timing), and the images/s
of a setting is its total images over its total timed seconds across rounds.

    python bench/train_throughput.py            # batch 256, 2 warm-up + 5 timed steps, 3 rounds
    python bench/train_throughput.py --quick    # smoke run: batch 64, 1 + 3 steps, 1 round
    python bench/train_throughput.py --bf16 on  # bf16 autocast rows even where bf16 is emulated

bf16 autocast rows run by default only where bf16 matmuls are native (a CUDA GPU with bf16, or a
CPU on which oneDNN runs bf16: AVX512-BF16 / AMX). On other CPUs (AVX2) they are emulated and
tens of times slower than fp32, which says nothing about multissl.
"""

from __future__ import annotations

import argparse
import gc
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, SHARED_DATA, describe_machine, machine_info, write_results  # noqa: E402

RECIPE = ROOT / "recipes" / "simclr-image.yaml"
SHARD = SHARED_DATA / "image" / "cifar10" / "train-00000-of-00004.parquet"
#: the parquet file the settings read (``--data``): a CIFAR-10 shard, or a synthetic one of the
#: same layout where ../shared is absent (a GPU machine)
DATA = {"path": str(SHARD)}
#: encoders the bench can run (``--encoders``): the GPU-scale ResNet-18 of lightly's and
#: solo-learn's CIFAR examples, and the image domain's CPU presets (what a CPU user trains)
ENCODERS: dict[str, dict[str, str]] = {
    "resnet18": {"architecture": "resnet", "size": "small"},
    "regnet-cpu": {"architecture": "regnet", "size": "cpu"},
    "resnet-cpu": {"architecture": "resnet", "size": "cpu"},
    "regnet-small": {"architecture": "regnet", "size": "small"},
}
ENCODER = ENCODERS["resnet18"]
MEASURED = ("multissl", "domains", "recipes/simclr-image.yaml", "bench/train_throughput.py")
PEER_LABEL = "lightly-style loop (per-sample PIL transforms in the DataLoader)"


@dataclass(frozen=True)
class Setting:
    path: str  # "floor" | "multissl" | "lightly_style"
    precision: str  # "fp32" | "bf16"
    num_workers: int = 0
    encoder: str = "resnet18"
    channels_last: bool = False

    @property
    def name(self) -> str:
        layout = " channels_last" if self.channels_last else ""
        return f"{self.encoder} {self.path} {self.precision}{layout} workers={self.num_workers}"


def load_bench_recipe(batch: int, precision: str, num_workers: int, rows: int, encoder: str = "resnet18",
                      channels_last: bool = False):
    from multissl.config import load_recipe

    spec = ENCODERS[encoder]
    overrides = [
        f"data.path={DATA['path']}", f"data.limit={rows}",
        f"domains.image.encoder.architecture={spec['architecture']}",
        f"domains.image.encoder.size={spec['size']}",
        f"train.batch_size={batch}", f"train.precision={precision}", f"train.num_workers={num_workers}",
        f"train.channels_last={str(channels_last).lower()}",
        "logging.trackers=[]", "logging.progress_bar=false",
    ]
    return load_recipe(RECIPE, overrides)


def _layout(model: torch.nn.Module, setting: "Setting") -> torch.nn.Module:
    return model.to(memory_format=torch.channels_last) if setting.channels_last else model


def _build(recipe, seed: int):
    """The run's domains, dataset and model as the engine builds them (global BN included)."""
    from accelerate.utils import set_seed

    from multissl.modules import convert_to_global_batchnorm
    from multissl.train import build_run

    set_seed(seed)
    domains, dataset, _, model = build_run(recipe)
    if recipe.train.global_batchnorm:
        convert_to_global_batchnorm(model)
    return domains, dataset, model


def _optimizer(recipe, model: torch.nn.Module):
    from multissl.optim import build_optimizer, parameter_groups
    from multissl.train import scaled_lr

    opt = recipe.optimizer
    return build_optimizer(opt.name, parameter_groups(model, opt.weight_decay), lr=scaled_lr(recipe, 1),
                           weight_decay=opt.weight_decay, momentum=opt.momentum, betas=opt.betas)


def _simclr_step(objective, optimizer, views: Tensor, precision: str, device: torch.device) -> Tensor:
    """One plain SimCLR step on ready [2B, C, H, W] views: encoder, head, nt_xent, backward, step."""
    from multissl.losses import nt_xent

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        pooled = objective.encoder(pixel_values=views).pooled
        z1, z2 = objective.head(pooled).chunk(2)
        loss = nt_xent(z1, z2, temperature=objective.temperature)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


# ---------------------------------------------------------------------------------------------- paths


def floor_steps(setting: Setting, batch: int, device: torch.device, seed: int) -> Iterator[Callable[[], Tensor]]:
    recipe = load_bench_recipe(batch, setting.precision, 0, batch, setting.encoder, setting.channels_last)
    _, _, model = _build(recipe, seed)
    objective = _layout(model.objectives["simclr"].to(device), setting).train()
    optimizer = _optimizer(recipe, model)
    side = recipe.domains["image"].options["image_size"]
    views = torch.randn(2 * batch, 3, side, side, generator=torch.Generator().manual_seed(seed)).to(device)
    if setting.channels_last:
        views = views.contiguous(memory_format=torch.channels_last)
    while True:
        yield lambda: _simclr_step(objective, optimizer, views, setting.precision, device)


def multissl_steps(setting: Setting, batch: int, rows: int, device: torch.device, seed: int
                   ) -> Iterator[Callable[[], Tensor]]:
    """The engine's step: the same public pieces ``multissl.train.train``'s loop calls."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    from multissl.optim import warmup_cosine_scheduler
    from multissl.train import MultiDomainCollate, move_to_device, optimisation_step, view_generator

    recipe = load_bench_recipe(batch, setting.precision, setting.num_workers, rows, setting.encoder,
                               setting.channels_last)
    tc = recipe.train
    # One Accelerator per setting: its state is a process-wide singleton fixed at creation.
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="no" if tc.precision == "fp32" else tc.precision,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    domains, dataset, model = _build(recipe, seed)
    model = _layout(model, setting)  # as the engine does with train.channels_last
    loader = DataLoader(dataset, batch_size=tc.batch_size, shuffle=True, drop_last=True, num_workers=tc.num_workers,
                        collate_fn=MultiDomainCollate(domains), generator=torch.Generator().manual_seed(tc.seed))
    optimizer = _optimizer(recipe, model)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total_steps = len(loader)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps, int(recipe.schedule.warmup * total_steps),
                                        final_lr_ratio=recipe.schedule.final_lr_fraction)
    unwrapped = accelerator.unwrap_model(model)
    model.train()
    batches = iter(loader)
    step = 0

    def one_step() -> Tensor:
        nonlocal step
        raw = move_to_device(next(batches), accelerator.device)
        generator = view_generator(accelerator.device, tc.seed, step, accelerator.process_index, 0)
        views = unwrapped.make_views(domains, raw, generator)
        loss, _, _ = optimisation_step(accelerator, model, optimizer, scheduler, views, step + 1, tc.grad_clip)
        step += 1
        for objective in unwrapped.objectives.values():
            objective.on_step_end(step, total_steps)
        return loss

    try:
        while True:
            yield one_step
    finally:
        del batches


class PILTwoViews(Dataset):
    """Rows of the recipe's dataset, each image decoded and put through a per-sample PIL transform
    (what lightly's ``LightlyDataset`` does with a file: ``Image.open(...).convert("RGB")``)."""

    def __init__(self, rows: Any, transform: Callable[[Any], list[Tensor]]) -> None:
        self.rows, self.transform = rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> list[Tensor]:
        value = self.rows[index]["image"]  # the stored file: {"bytes", "path"}, decoded here as lightly does
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        with Image.open(source) as image:
            return self.transform(image.convert("RGB"))


def lightly_transform(image_config) -> Callable[[Any], list[Tensor]]:
    """lightly's SimCLRTransform with the recipe's image augmentation strengths."""
    from lightly.transforms import SimCLRTransform

    augment = image_config.augment
    return SimCLRTransform(
        input_size=image_config.image_size, cj_prob=augment.jitter_probability, cj_strength=augment.jitter_strength,
        cj_bright=augment.brightness, cj_contrast=augment.contrast, cj_sat=augment.saturation, cj_hue=augment.hue,
        min_scale=augment.crop_scale[0], random_gray_scale=augment.grayscale_probability,
        gaussian_blur=augment.blur_probability, sigmas=augment.blur_sigma, hf_prob=augment.flip_probability,
        normalize={"mean": list(image_config.mean), "std": list(image_config.std)},
    )


def lightly_style_steps(setting: Setting, batch: int, rows: int, device: torch.device, seed: int
                        ) -> Iterator[Callable[[], Tensor]]:
    recipe = load_bench_recipe(batch, setting.precision, setting.num_workers, rows, setting.encoder,
                               setting.channels_last)
    domains, dataset, model = _build(recipe, seed)
    image_rows = dataset.datasets["image"]  # the same rows the engine reads (decoded by datasets)
    loader = DataLoader(PILTwoViews(image_rows, lightly_transform(domains["image"].config)), batch_size=batch,
                        shuffle=True, drop_last=True, num_workers=setting.num_workers,
                        generator=torch.Generator().manual_seed(seed))
    objective = _layout(model.objectives["simclr"].to(device), setting).train()
    optimizer = _optimizer(recipe, model)
    batches = iter(loader)

    def one_step() -> Tensor:
        first, second = next(batches)
        views = torch.cat([first, second]).to(device, non_blocking=True)
        if setting.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        return _simclr_step(objective, optimizer, views, setting.precision, device)

    try:
        while True:
            yield one_step
    finally:
        del batches


# ---------------------------------------------------------------------------------------------- timing


def run_setting(setting: Setting, batch: int, warmup: int, steps: int, device: torch.device, seed: int) -> dict:
    """Build one setting, run ``warmup`` untimed then ``steps`` timed steps; seconds of each step."""
    rows = batch * (warmup + steps)
    if setting.path == "floor":
        runner = floor_steps(setting, batch, device, seed)
    elif setting.path == "multissl":
        runner = multissl_steps(setting, batch, rows, device, seed)
    else:
        runner = lightly_style_steps(setting, batch, rows, device, seed)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds: list[float] = []
    losses: list[float] = []
    try:
        for index in range(warmup + steps):
            step = next(runner)
            synchronize()
            start = time.perf_counter()
            loss = step()
            losses.append(float(loss.detach()))  # the engine reads the loss every step too (a device sync)
            synchronize()
            if index >= warmup:
                seconds.append(time.perf_counter() - start)
    finally:
        runner.close()  # shuts the setting's DataLoader workers down before the next setting
        gc.collect()
    return {"seconds": seconds, "last_loss": losses[-1]}


SETTINGS = (
    Setting("floor", "fp32"),
    Setting("multissl", "fp32", 0),
    Setting("lightly_style", "fp32", 0),
    Setting("multissl", "fp32", 2),
    Setting("lightly_style", "fp32", 2),
    Setting("floor", "bf16"),
    Setting("multissl", "bf16", 0),
    Setting("lightly_style", "bf16", 0),
)


def settings_for(encoders: list[str], with_bf16: bool, channels_last: bool, workers: list[int]) -> list[Setting]:
    """Every setting of SETTINGS for each encoder, with the chosen layout and worker counts."""
    chosen = []
    for encoder in encoders:
        for base in SETTINGS:
            if base.precision == "bf16" and not with_bf16:
                continue
            if base.path != "floor" and base.num_workers not in workers:
                continue
            chosen.append(Setting(base.path, base.precision, base.num_workers, encoder, channels_last))
    return chosen

LOSS_NOTES = {
    2: ("With DataLoader workers on a CPU-only machine the lightly-style loop augments the next batches in "
        "worker processes while the main process trains, so its per-sample cost is hidden behind the step; "
        "multissl's views are made by the training process itself between steps (on a GPU they run on the "
        "accelerator, which is what the design targets), and on a CPU that device is the very cores the "
        "workers compete for. The engine's collate (decoding) does run in the workers."),
    0: ("With no workers both loops make their views in the training process. On a CPU the ResNet-18 step "
        "itself dominates (multissl_over_floor near 1), so the two data paths differ by a few percent of a step "
        "(bench/augment.py: batched views 7-9x faster per core than per-sample PIL transforms), less than the "
        "load noise of a shared machine: check the load average above before reading this row as a loss."),
}


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively here (else autocast emulates them, far slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True


def summarise(timings: dict[Setting, list[float]], batch: int) -> list[dict]:
    def rate(setting: Setting) -> float | None:
        seconds = timings.get(setting)
        return round(batch * len(seconds) / sum(seconds), 2) if seconds else None

    rows = []
    encoders = list(dict.fromkeys(s.encoder for s in timings))
    layouts = list(dict.fromkeys(s.channels_last for s in timings))
    for encoder, channels_last, (precision, workers) in (
            (e, c, pw) for e in encoders for c in layouts for pw in (("fp32", 0), ("fp32", 2), ("bf16", 0), ("bf16", 8))):
        def setting(path: str, p: str = precision, w: int = workers) -> Setting:
            return Setting(path, p, 0 if path == "floor" else w, encoder, channels_last)

        floor = rate(setting("floor"))
        ours = rate(setting("multissl"))
        theirs = rate(setting("lightly_style"))
        fp32 = rate(setting("multissl", "fp32"))
        if ours is None:
            continue
        rows.append({
            "encoder": encoder, "channels_last": channels_last,
            "precision": precision, "num_workers": workers, "batch": batch,
            "floor_images_per_s": floor, "multissl_images_per_s": ours, "lightly_style_images_per_s": theirs,
            "multissl_over_floor": round(ours / floor, 3) if floor else None,
            "lightly_style_over_floor": round(theirs / floor, 3) if floor and theirs else None,
            "multissl_over_lightly_style": round(ours / theirs, 3) if theirs else None,
            "multissl_over_multissl_fp32": round(ours / fp32, 3) if precision != "fp32" and fp32 else None,
            "notes": LOSS_NOTES.get(workers, LOSS_NOTES[2]) if theirs is not None and ours < theirs else "",
            "multissl_step_seconds_samples": [round(s, 4) for s in timings[setting("multissl")]],
        })
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 64, 1 warm-up + 3 timed steps, 1 round")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 256; quick 64)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per run (default 2; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 5; quick 3)")
    parser.add_argument("--rounds", type=int, default=None, help="runs of every setting (default 3; quick 1)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="bf16 autocast settings: auto runs them where bf16 is native (see above)")
    parser.add_argument("--encoders", nargs="+", choices=sorted(ENCODERS), default=["resnet18"],
                        help="encoders to measure (default resnet18, the peers' CIFAR-10 encoder)")
    parser.add_argument("--channels-last", action="store_true", help="model and inputs in channels-last layout")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader worker counts of the multissl and lightly-style rows (default 0 2)")
    parser.add_argument("--data", default=None,
                        help="a CIFAR-10-layout parquet file (default the ../shared/data shard), or 'synthetic': "
                             "random 32x32 PNGs in that layout (decode and views cost the same; for machines without ../shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "train_throughput.json")
    args = parser.parse_args(argv)
    if args.data == "synthetic":
        import tempfile

        from bench.online_eval_cost import synthetic_cifar

        DATA["path"] = str(synthetic_cifar(Path(tempfile.mkdtemp(prefix="train-throughput-")), rows=8192))
    elif args.data is not None:
        DATA["path"] = args.data
    if not Path(DATA["path"]).exists():
        raise SystemExit(f"{DATA['path']} is absent: this benchmark trains on CIFAR-10 from ../shared/data "
                         "(or pass --data synthetic)")
    batch = args.batch or (64 if args.quick else 256)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    steps = args.steps or (3 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 3)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and native_bf16(device))
    settings = settings_for(args.encoders, with_bf16, args.channels_last, args.workers)

    started = time.perf_counter()
    info = machine_info(MEASURED)
    print(describe_machine(info))
    print(f"SimCLR, {', '.join(args.encoders)} at 32x32, batch {batch}, {warmup} warm-up + {steps} timed steps, "
          f"{rounds} round(s), device {device}")
    timings: dict[Setting, list[float]] = {s: [] for s in settings}
    for round_index in range(rounds):
        for setting in settings:
            result = run_setting(setting, batch, warmup, steps, device, args.seed + round_index)
            timings[setting] += result["seconds"]
            per_step = sum(result["seconds"]) / len(result["seconds"])
            print(f"round {round_index + 1}  {setting.name:<34} {batch / per_step:>9.1f} images/s  "
                  f"({per_step * 1e3:.0f} ms/step, loss {result['last_loss']:.3f})", flush=True)
    rows = summarise(timings, batch)
    for row in rows:
        print(f"{row['encoder']} {row['precision']} workers={row['num_workers']}: (b)/(a) {row['multissl_over_floor']}, "
              f"(b)/(c) {row['multissl_over_lightly_style']}")
    import lightly

    write_results(
        args.output, benchmark="bench/train_throughput.py",
        argv=None if argv is None else ["bench/train_throughput.py", *argv],
        title="SimCLR train-step throughput: floor, multissl's engine path, lightly-style loop", kind="speed",
        machine=info,
        description="Source images per second of SimCLR training steps on 32x32 CIFAR-10 with the same ResNet-18, "
        "projection head, nt_xent and LARS: (a) floor = model step on ready tensors (no data path); (b) multissl = "
        "the engine's step (collate in the DataLoader, batched views on the device, objective, backward, step) "
        "built by multissl.train.build_run from recipes/simclr-image.yaml; (c) lightly-style = lightly's "
        "SimCLRTransform per sample in the DataLoader. multissl_over_floor near 1 means the data path costs "
        "little; multissl_over_lightly_style above 1 means multissl's loop is faster.",
        seeds={"model_and_data": args.seed, "per_round": "seed + round index"},
        budget={"quick": bool(args.quick), "batch": batch, "warmup_steps": warmup, "timed_steps": steps,
                "rounds": rounds, "wall_seconds": round(time.perf_counter() - started, 1)},
        settings={"data": DATA["path"] if args.data != "synthetic" else "synthetic CIFAR-layout parquet (random pixels)",
                  "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                  else "cpu", "bf16_rows": with_bf16, "recipe": "recipes/simclr-image.yaml",
                  "encoders": {name: ENCODERS[name] for name in args.encoders}, "channels_last": args.channels_last,
                  "encoder_note": "resnet18: HF ResNetModel, basic blocks 64-128-256-512 (its fixed 7x7 stride-2 stem + "
                  "max-pool); regnet-*: the image domain's small-image presets (3x3 stride-2 stem, no max-pool); "
                  "resnet-cpu: ResNet-10 narrow", "head": "2 layers, encoder width -> 128",
                  "loss": "nt_xent, temperature 0.5", "optimizer": "LARS lr 0.3 x batch/256, weight decay 1e-6",
                  "augmentation": "recipe: jitter strength 0.5, no blur; lightly SimCLRTransform with the same",
                  "lightly": lightly.__version__,
                  "per_setting": {s.name: {"images_per_s": round(batch * len(t) / sum(t), 2) if t else None,
                                           "timed_steps": len(t)} for s, t in timings.items()}},
        notes=[("bf16 autocast rows: the floor uses torch.autocast(bfloat16), multissl the engine's "
                "accelerator.autocast()." if with_bf16 else
                f"bf16 autocast rows left out: {device} has no native bf16 matmuls here (cpu capability "
                f"{torch.backends.cpu.get_cpu_capability()}), so autocast would emulate them; pass --bf16 on to "
                "measure anyway."),
               "Engine logging (every 20 steps) and checkpoints are not part of the timed step.",
               "On a loaded machine the settings run minutes apart see different loads; a multissl or lightly-style "
               "rate above the floor's (multissl_over_floor > 1) can only be such noise."],
        comparisons=[{"multissl": "multissl_images_per_s", "peer": "lightly_style_images_per_s", "better": "higher",
                      "peer_label": PEER_LABEL}],
        key_columns=("encoder", "channels_last", "precision", "num_workers"), rows=rows,
    )
    return rows


if __name__ == "__main__":
    main()
