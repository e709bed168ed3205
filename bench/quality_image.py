"""CIFAR-10 quality at an equal CPU budget: SimCLR, MoCo v2, BYOL, Barlow Twins and DINO through
multissl and through lightly, against the same encoder at random init and a linear model on raw pixels.

Protocol (one invocation runs every contender):

* Data: the 50,000 CIFAR-10 training images in ``../shared/data/image/cifar10/*.parquet``. A seeded,
  stratified 5,000 of them are held out for evaluation and never trained on; self-supervised training
  reads the other 45,000 (or a seeded subset, ``--train-images``), labels unused.
* Encoder: ONE architecture for every contender, built by the image domain
  (``domains.image.build_image_encoder``) with the same seed, so every contender starts from the
  same weights (checked at run time). Default ``resnet10-narrow``: the Hugging Face ``ResNetModel``
  with basic blocks, widths 32-64-128-256, one block per stage (1.2 M parameters, 256-d pooled);
  see ENCODERS for the others and why this one (it sees the most images per CPU second, and on a
  budget of a few minutes images seen is what a method learns from).
* Method settings: ``recipes/<method>-image.yaml`` (temperature, queue, momentum, heads, optimiser,
  learning rate with its linear batch scaling, weight decay, warm-up), with the bench overrides in
  BENCH_OVERRIDES (batch size, fp32, the heads sized for a 256-d encoder as lightly's CIFAR-10
  examples size them, no Gaussian blur at 32 px). lightly gets the SAME numbers.
* multissl contenders run the engine's step (``multissl.train.build_run`` on the recipe, the
  domain's collate in an in-process DataLoader, the domain's batched ``make_views`` seeded per step
  as the engine seeds it, the objective, backward, optimiser step, ``on_step_end``).
* lightly contenders are written as lightly's own benchmarks (``benchmarks/imagenet/resnet50``)
  write them: lightly's transforms per sample in an in-process DataLoader, lightly's heads and
  losses, ``update_momentum``, ``batch_shuffle``, ``get_weight_decay_parameters`` and lightly's
  LARS, on the same encoder.
* Budget: ``--budget-cpu-seconds`` of CPU time per trained contender (``time.process_time()`` of
  the worker process training it: torch on ``--threads`` threads, 1 by default, see THREADS; data
  decoding and augmentation in-process, ``num_workers=0``), checked between steps. Contenders run
  in ``--processes`` spawned worker processes (2: both libraries' runs of a method side by side,
  under the same machine load). Learning rate (warm-up + cosine) and EMA momentum follow the
  fraction of the budget spent, for both libraries. CPU and wall seconds, steps and images seen
  are recorded.
* Evaluation, the same code for every contender: the frozen encoder's pooled features
  (``multissl.probes.extract_from_dataset``, plain views) of a seeded, class-balanced labelled
  subset of the training images (``--probe-train-images``, default 10,000) and of the 5,000
  held-out images; ``multissl.probes.linear_probe`` (L2 penalty chosen on a validation split
  carved from the probe's train rows) and weighted kNN (k = 20, 200).

    python bench/quality_image.py                       # full run: ~43 min on the idle 2-core machine
    python bench/quality_image.py --quick               # smoke run: a few minutes
    python bench/quality_image.py --methods simclr byol --peers multissl lightly
"""

from __future__ import annotations

import argparse
import copy
import io
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, SHARED_DATA, describe_machine, machine_info, write_results  # noqa: E402
from bench._quality import (  # noqa: E402
    engine_step,
    forever,
    assert_same_start as same_start,
    CpuBudget,
    StepResult,
    budget_lr_scheduler,
    TrainingReport,
    budgeted_training,
    evaluate_frozen,
    fix_threads,
    held_out_split,
    labelled_subset,
    probe_rows,
)

DATA_GLOB = SHARED_DATA / "image" / "cifar10" / "*.parquet"
COLUMNS = {"image": "img", "label": "label"}
METHODS = ("simclr", "moco_v2", "byol", "barlow_twins", "dino")
PEERS = ("multissl", "lightly")
DISPLAY = {"simclr": "SimCLR", "moco_v2": "MoCo v2", "byol": "BYOL", "barlow_twins": "Barlow Twins", "dino": "DINO"}
MEASURED = ("multissl", "domains", "recipes", "bench/quality_image.py", "bench/_quality.py")
TASK = "CIFAR-10 held-out 5k"

#: Threads. One torch thread per worker process, two processes side by side: measured here under
#: load ~5 on 2 cores (SimCLR step, batch 128, resnet10-narrow), 2 threads cost 2.6x (multissl) to
#: 3x (lightly) more CPU seconds per step than 1 thread (OpenMP threads spin while they wait for a
#: core), and were slower in wall time too; the linear probe cost 5x more. With one thread per
#: process, CPU seconds measure the work itself, and both cores are still used.
#:
#: Encoders (``domains.image`` encoder specs). All use the Hugging Face ResNet stem (7x7 stride 2 +
#: max-pool: a 32 px image is 8x8 after it), which makes them cheap enough for a CPU budget.
#: Measured here (multissl SimCLR steps, fp32, 1 thread, batch 128): resnet10-narrow 357, resnet10
#: 119, resnet18 60 source images per CPU second; with 2 threads and batch 256 a 4-stage ConvNeXt
#: (48..384, depths 1-1-3-1, stem stride 2) ran at 0.6x resnet10-narrow. A budget of a few minutes
#: buys resnet10-narrow ~4 epochs of CIFAR-10 and resnet18 under one: the narrow net learns most
#: per CPU second. A CIFAR stem (3x3, no max-pool) costs ~10x more per image.
#:
#: ``regnet-cpu`` is the image domain's small-image CPU preset (``domains/image/encoders.py``): a stock
#: ``RegNetModel`` with a 3x3 stride-2 stem, no max-pool and no downsampling in its first stage, so a
#: 32 px image is 16x16 there (4x the positions of the ResNet stem) at the same widths (32..256);
#: ~3x the CPU seconds per image of resnet10-narrow.
ENCODERS: dict[str, dict[str, Any]] = {
    "regnet-cpu": {"architecture": "regnet", "size": "cpu", "pooling": "mean", "overrides": {}},
    "resnet10-narrow": {"architecture": "resnet", "size": "small", "pooling": "mean",
                        "overrides": {"embedding_size": 32, "hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 1, 1]}},
    "resnet10": {"architecture": "resnet", "size": "small", "pooling": "mean",
                 "overrides": {"depths": [1, 1, 1, 1]}},
    "resnet18": {"architecture": "resnet", "size": "small", "pooling": "mean", "overrides": {}},
    "resnet-tiny": {"architecture": "resnet", "size": "tiny", "pooling": "mean", "overrides": {}},  # tests
}
DEFAULT_ENCODER = "resnet10-narrow"

#: Default budget: 10 trained contenders x 480 CPU s + evaluation (~EVAL_CPU_SECONDS per encoder) on
#: 2 worker processes is ~43 min of wall time on the idle 2-core machine.
FULL_BUDGET_CPU_SECONDS = 480.0
QUICK_BUDGET_CPU_SECONDS = 20.0
EVAL_CPU_SECONDS = 30.0

#: What the bench changes in each recipe (everything else comes from recipes/<method>-image.yaml).
#: No Gaussian blur for any method: at 32 px SimCLR's CIFAR-10 runs drop it (appendix B.9), and
#: the kernels of the two libraries differ there (multissl: 3 taps, 10% of the side; lightly: PIL's
#: radius = sigma), so keeping it would make the augmentations unequal. BYOL/Barlow keep BYOL's
#: asymmetric solarisation (0 / 0.2). The BYOL head width is lightly's CIFAR-10 example's (1024
#: for a ResNet-18), not the paper's 4096 for a ResNet-50.
BENCH_OVERRIDES: dict[str, dict[str, Any]] = {
    "simclr": {"augment": {"blur_probability": 0.0}, "objective": {}},
    "moco_v2": {"augment": {"blur_probability": 0.0}, "objective": {}},
    "byol": {"augment": {"blur_probability": 0.0, "byol_blur_probability": [0.0, 0.0]},
             "objective": {"hidden_dim": 1024}},
    "barlow_twins": {"augment": {"blur_probability": 0.0, "byol_blur_probability": [0.0, 0.0]}, "objective": {}},
    # DINO: lightly's CIFAR-10 head size (2,048 prototypes; hidden 1,024 for a 256-d encoder, as BYOL's);
    # main_dino.py's default teacher temperature (0.04, no warm-up) and no frozen last layer: a budget
    # of a few minutes is about one epoch, the reference's warm-up and freeze are counted in epochs
    "dino": {"augment": {"blur_probability": 0.0, "byol_blur_probability": [0.0, 0.0]},
             "objective": {"out_dim": 2048, "hidden_dim": 1024, "bottleneck_dim": 256, "teacher_temperature": 0.04,
                           "warmup_teacher_temperature": 0.04, "teacher_temperature_warmup_steps": 0,
                           "freeze_last_layer_steps": 0}},
}

#: Differences between the two implementations that the bench leaves as each library has them.
IMPLEMENTATION_NOTES = {
    "simclr": "lightly's SimCLRProjectionHead has batch norm on its output layer too (multissl: hidden layer only)",
    "moco_v2": ("multissl normalises the key batch in 8 shuffled sub-batches (shuffling BN on one process, as MoCo's "
                "single-GPU demo); lightly's batch_shuffle on one device only permutes rows (BN over the whole key batch); "
                "multissl also uses the other in-batch keys as negatives besides the queue (8 batches of keys)"),
    "byol": ("lightly runs the online network once per view (batch norm per view), multissl both views in one call; "
             "multissl's loss 2 - 2cos summed over both directions equals lightly's 2 * NegativeCosineSimilarity "
             "up to a constant"),
    "barlow_twins": "same projector and loss; lightly's projector's last layer has a bias too",
    "dino": ("lightly's example runs the student once per crop (batch norm per crop); multissl encodes the two "
             "globals in one call and the locals in another; same head, loss, centre and cosine momentum"),
}


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class BenchSettings:
    """Everything that fixes the numbers of one invocation (recorded in the results file)."""

    budget_cpu_seconds: float
    methods: tuple[str, ...] = METHODS
    peers: tuple[str, ...] = PEERS
    encoder: str = DEFAULT_ENCODER
    batch_size: int = 128
    threads: int = 1
    processes: int = 2
    seed: int = 0
    held_out: int = 5000
    train_images: int | None = None
    probe_train_images: int | None = 10_000
    eval_batch_size: int = 500
    curve_points: int = 10
    curve_bank_images: int = 5000
    recipe_overrides: tuple[str, ...] = ()
    baselines: bool = True
    quick: bool = False
    max_steps: int | None = None  # tests only
    data_limit: int | None = None  # tests only: read the first rows of the shards

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        if set(self.peers) - set(PEERS):
            raise ValueError(f"unknown peer(s) {sorted(set(self.peers) - set(PEERS))}; choose from {list(PEERS)}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose from {sorted(ENCODERS)}")
        if self.batch_size < 16 or self.batch_size % 8:
            raise ValueError(f"batch size must be a multiple of 8 and >= 16 (MoCo's 8 BN splits), got {self.batch_size}")


# ---------------------------------------------------------------------------------------------- data


@dataclass
class CifarData:
    """The loaded images (canonical columns: image bytes, label, row_index), their labels, and
    the row indices of each part: held out (evaluation), SSL training, the probe's labelled train."""

    rows: Any
    labels: Tensor
    held_out: Tensor
    train: Tensor
    probe_train: Tensor


def eval_domain():
    """The image domain every contender is evaluated through (plain views: CIFAR-10 normalisation)."""
    from domains.image import ImageConfig, ImageDomain

    return ImageDomain(ImageConfig(image_size=32, normalization="cifar10"))


def load_cifar(settings: BenchSettings, domain) -> CifarData:
    """Load the CIFAR-10 shards through the image domain and split them (seeded, stratified)."""
    from multissl.domain import DataConfig

    rows = domain.load(DataConfig(path=str(DATA_GLOB), columns=dict(COLUMNS), limit=settings.data_limit))
    labels = torch.as_tensor(rows["label"]).long()
    train_pool, held_out = held_out_split(labels, settings.held_out, settings.seed)
    train = labelled_subset(train_pool, labels, settings.train_images, settings.seed + 1)
    probe_train = labelled_subset(train_pool, labels, settings.probe_train_images, settings.seed + 2)
    return CifarData(rows, labels, held_out, train, probe_train)


# ------------------------------------------------------------------------------------------- recipes


def bench_recipe(method: str, settings: BenchSettings, output_dir: str):
    """``recipes/<method>-image.yaml`` with the bench's data, encoder, batch and BENCH_OVERRIDES."""
    from multissl.config import parse_recipe

    source = ROOT / "recipes" / f"{method}-image.yaml"
    data = yaml.safe_load(source.read_text())
    data["data"] = {"path": str(DATA_GLOB), "columns": dict(COLUMNS)}
    image = data["domains"]["image"]
    image["encoder"] = copy.deepcopy(ENCODERS[settings.encoder])
    image.setdefault("options", {}).setdefault("augment", {}).update(BENCH_OVERRIDES[method]["augment"])
    data["objectives"][0].setdefault("options", {}).update(BENCH_OVERRIDES[method]["objective"])
    if method == "moco_v2":  # the recipe's rule: keys at most 8 steps old (recipes/moco_v2-image.yaml)
        data["objectives"][0]["options"]["queue_size"] = 8 * settings.batch_size
    data["train"].update(batch_size=settings.batch_size, precision="fp32", num_workers=0, seed=settings.seed,
                         max_steps=1, epochs=None)
    data["logging"] = {"trackers": [], "progress_bar": False}
    data["checkpoint"] = {"resume": None}
    data["output_dir"] = output_dir
    if settings.recipe_overrides:  # --set: the same change for both libraries (they read this recipe)
        from multissl.config import apply_overrides

        apply_overrides(data, list(settings.recipe_overrides), str(source))
    return parse_recipe(data, source=f"{source.relative_to(ROOT)} + bench overrides")


def initial_encoder(settings: BenchSettings, image_config):
    """The encoder every contender starts from: built right after ``torch.manual_seed(seed)``."""
    from multissl.domain import EncoderConfig
    from domains.image import build_image_encoder

    torch.manual_seed(settings.seed)
    return build_image_encoder(EncoderConfig(**copy.deepcopy(ENCODERS[settings.encoder])), image_config)


def assert_same_start(encoder: nn.Module, reference: nn.Module, who: str) -> None:
    """Every contender must start from the reference encoder's weights (``bench._quality``)."""
    same_start(encoder.state_dict(), reference.state_dict(), f"{who} encoder")


# ---------------------------------------------------------------------------------------- contenders


@dataclass
class Trainer:
    """One contender ready to train: ``step(progress)`` for :func:`budgeted_training`, the encoder
    it trains (evaluated afterwards), and its counters, updated as it steps: ``data_cpu_seconds``,
    CPU seconds spent in its data path (decode + views)."""

    step: Callable[[float], StepResult]
    encoder: nn.Module
    counters: dict[str, float]


def multissl_trainer(method: str, settings: BenchSettings, data: CifarData, reference: nn.Module,
                     output_dir: str, clock: CpuBudget) -> Trainer:
    """The engine's step on ``recipes/<method>-image.yaml``: the public pieces ``multissl.train.train``
    calls (``build_run``, the prepared model/optimiser/loader, then ``bench._quality.engine_step``:
    ``view_generator``, ``SSLModel.make_views``, ``optimisation_step``, ``on_step_end``), with the budget's schedule."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    from multissl.modules import convert_to_global_batchnorm
    from multissl.optim import build_optimizer, parameter_groups
    from multissl.train import AlignedRows, MultiDomainCollate, build_run, scaled_lr

    recipe = bench_recipe(method, settings, output_dir)
    tc = recipe.train
    AcceleratorState._reset_state(reset_partial_state=True)  # one Accelerator per contender (a process singleton)
    accelerator = Accelerator(cpu=True, mixed_precision="no",
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    torch.manual_seed(settings.seed)  # build_run draws nothing before the encoder: same start as `reference`
    domains, _, encoders, model = build_run(recipe)
    encoder = encoders["image"]
    assert_same_start(encoder, reference, f"multissl {method}")
    if tc.global_batchnorm:
        convert_to_global_batchnorm(model)
    dataset = AlignedRows({"image": data.rows.select(data.train.tolist())})
    loader = DataLoader(dataset, batch_size=tc.batch_size, shuffle=True, drop_last=True, num_workers=0,
                        collate_fn=MultiDomainCollate(domains), generator=torch.Generator().manual_seed(tc.seed))
    opt = recipe.optimizer
    optimizer = build_optimizer(opt.name, parameter_groups(model, opt.weight_decay), lr=scaled_lr(recipe, 1),
                                weight_decay=opt.weight_decay, momentum=opt.momentum, betas=opt.betas)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = budget_lr_scheduler(optimizer, clock, recipe.schedule.warmup, recipe.schedule.final_lr_fraction)
    model.train()
    step, counters = engine_step(accelerator, model, optimizer, scheduler, domains, forever(loader), tc.seed, clock,
                                 tc.batch_size, tc.grad_clip)
    return Trainer(step, encoder, counters)


class PILViews(Dataset):
    """Training rows decoded with Pillow and put through a lightly transform, one sample at a time
    (what ``LightlyDataset`` / torchvision datasets do): returns (list of views, label)."""

    def __init__(self, rows: Any, transform: Callable[[Any], list[Tensor]]) -> None:
        self.rows, self.transform = rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[list[Tensor], int]:
        from PIL import Image

        row = self.rows[index]
        value = row["image"]
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        with Image.open(source) as image:
            return self.transform(image.convert("RGB")), int(row["label"])


def lightly_transform(method: str, image_config, local_views: int = 0) -> Callable[[Any], list[Tensor]]:
    """lightly's transform for ``method`` with the recipe's augmentation strengths (after overrides)."""
    from lightly.transforms import (
        BYOLTransform, BYOLView1Transform, BYOLView2Transform, DINOTransform, MoCoV2Transform, SimCLRTransform,
    )

    augment = image_config.augment
    strength = augment.jitter_strength
    common = dict(input_size=image_config.image_size, cj_prob=augment.jitter_probability, cj_strength=strength,
                  cj_bright=augment.brightness, cj_contrast=augment.contrast, cj_sat=augment.saturation,
                  cj_hue=augment.hue, min_scale=augment.crop_scale[0], random_gray_scale=augment.grayscale_probability,
                  sigmas=augment.blur_sigma, hf_prob=augment.flip_probability,
                  normalize={"mean": list(image_config.mean), "std": list(image_config.std)})
    if method == "simclr":
        return SimCLRTransform(gaussian_blur=augment.blur_probability, **common)
    if method == "moco_v2":
        return MoCoV2Transform(gaussian_blur=augment.blur_probability, **common)
    blur, solarize = augment.byol_blur_probability, augment.byol_solarize_probability
    if method == "dino":  # BYOL's two globals (view 2 solarised), locals with the configured probabilities
        if solarize[0] != 0 or augment.solarize_probability != 0:
            raise ValueError("lightly's DINOTransform solarises the second global view only")
        shared = {key: value for key, value in common.items() if key not in ("input_size", "min_scale")}
        return DINOTransform(global_crop_size=image_config.image_size, global_crop_scale=augment.crop_scale,
                             local_crop_size=image_config.local_size, local_crop_scale=augment.local_crop_scale,
                             n_local_views=local_views, gaussian_blur=(blur[0], blur[1], augment.blur_probability),
                             solarization_prob=solarize[1], **shared)
    return BYOLTransform(BYOLView1Transform(gaussian_blur=blur[0], solarization_prob=solarize[0], **common),
                         BYOLView2Transform(gaussian_blur=blur[1], solarization_prob=solarize[1], **common))


class LightlyMethod(nn.Module):
    """A method as lightly's benchmark modules write it: ``loss(views, progress)`` and the modules
    whose parameters the optimiser trains (``trained``)."""

    backbone: nn.Module

    def features(self, pixels: Tensor) -> Tensor:
        return self.backbone(pixel_values=pixels).pooled

    def trained(self) -> list[nn.Module]:
        raise NotImplementedError

    def loss(self, views: list[Tensor], progress: float) -> Tensor:
        raise NotImplementedError


class LightlySimCLR(LightlyMethod):
    def __init__(self, backbone: nn.Module, options: dict[str, Any]) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(backbone.dim, options.get("hidden_dim") or backbone.dim,
                                                    options["projection_dim"], num_layers=options.get("head_layers", 2))
        self.criterion = NTXentLoss(temperature=options["temperature"])

    def trained(self) -> list[nn.Module]:
        return [self.backbone, self.projection_head]

    def loss(self, views: list[Tensor], progress: float) -> Tensor:
        z0, z1 = self.projection_head(self.features(torch.cat(views))).chunk(2)
        return self.criterion(z0, z1)


class LightlyMoCoV2(LightlyMethod):
    def __init__(self, backbone: nn.Module, options: dict[str, Any]) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        if options.get("final_momentum") is not None:
            raise ValueError("the bench's lightly MoCo v2 keeps the momentum constant, as the recipe does")
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(backbone.dim, options.get("hidden_dim") or backbone.dim,
                                                  options["projection_dim"])
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.momentum = options["momentum"]
        self.criterion = NTXentLoss(temperature=options["temperature"],
                                    memory_bank_size=(options["queue_size"], options["projection_dim"]))

    def trained(self) -> list[nn.Module]:
        return [self.backbone, self.projection_head]

    def loss(self, views: list[Tensor], progress: float) -> Tensor:
        from lightly.models.utils import batch_shuffle, batch_unshuffle, update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m=self.momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=self.momentum)
        query = self.projection_head(self.features(views[0]))
        with torch.no_grad():
            shuffled, index = batch_shuffle(views[1])
            key = self.projection_head_momentum(self.backbone_momentum(pixel_values=shuffled).pooled)
            key = batch_unshuffle(key, index)
        return self.criterion(query, key)


class LightlyBYOL(LightlyMethod):
    def __init__(self, backbone: nn.Module, options: dict[str, Any]) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        hidden = options.get("hidden_dim", 4096)
        projection = options.get("projection_dim", 256)
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(backbone.dim, hidden, projection)
        self.prediction_head = BYOLPredictionHead(projection, options.get("predictor_hidden_dim") or hidden, projection)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.base_momentum = options.get("base_momentum", 0.996)
        self.final_momentum = options.get("final_momentum", 1.0)
        self.criterion = NegativeCosineSimilarity()

    def trained(self) -> list[nn.Module]:
        return [self.backbone, self.projection_head, self.prediction_head]

    def loss(self, views: list[Tensor], progress: float) -> Tensor:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        resolution = 1_000_000
        momentum = cosine_schedule(round(progress * resolution), resolution, self.base_momentum, self.final_momentum)
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
        with torch.no_grad():
            teacher = [self.projection_head_momentum(self.backbone_momentum(pixel_values=v).pooled) for v in views]
        student = [self.prediction_head(self.projection_head(self.features(v))) for v in views]
        return 2 * self.criterion(teacher[0], student[1]) + 2 * self.criterion(teacher[1], student[0])


class LightlyBarlowTwins(LightlyMethod):
    def __init__(self, backbone: nn.Module, options: dict[str, Any]) -> None:
        from lightly.loss import BarlowTwinsLoss
        from lightly.models.modules import BarlowTwinsProjectionHead

        super().__init__()
        if options.get("projector_layers", 3) != 3:
            raise ValueError("lightly's BarlowTwinsProjectionHead has 3 layers")
        projection = options.get("projection_dim", 8192)
        self.backbone = backbone
        self.projection_head = BarlowTwinsProjectionHead(backbone.dim, options.get("hidden_dim") or projection, projection)
        self.criterion = BarlowTwinsLoss(lambda_param=options.get("lambd", 5e-3))

    def trained(self) -> list[nn.Module]:
        return [self.backbone, self.projection_head]

    def loss(self, views: list[Tensor], progress: float) -> Tensor:
        z0, z1 = self.projection_head(self.features(torch.cat(views))).chunk(2)
        return self.criterion(z0, z1)


class LightlyDINO(LightlyMethod):
    """lightly's DINO example: DINOProjectionHead, DINOLoss (centre and sharpening), the teacher as a
    copy updated with ``update_momentum`` on a cosine schedule, the student on every crop."""

    def __init__(self, backbone: nn.Module, options: dict[str, Any]) -> None:
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        if options.get("teacher_temperature_warmup_steps", 0) or options.get("freeze_last_layer_steps", 1251):
            raise ValueError("the bench's lightly DINO has no temperature warm-up and no frozen last layer")
        self.backbone = backbone
        sizes = (backbone.dim, options["hidden_dim"], options["bottleneck_dim"], options["out_dim"])
        self.head = DINOProjectionHead(*sizes)
        self.teacher_backbone = copy.deepcopy(backbone)
        # lightly's example builds the teacher head anew (weight_norm modules refuse deepcopy); it starts
        # here from the student's weights, as the reference's teacher does
        self.teacher_head = DINOProjectionHead(*sizes)
        self.teacher_head.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.base_momentum = options.get("momentum", 0.996)
        self.final_momentum = options.get("final_momentum", 1.0)
        self.criterion = DINOLoss(output_dim=options["out_dim"], warmup_teacher_temp_epochs=0,
                                  teacher_temp=options["teacher_temperature"],
                                  student_temp=options.get("student_temperature", 0.1),
                                  center_momentum=options.get("center_momentum", 0.9))

    def trained(self) -> list[nn.Module]:
        return [self.backbone, self.head]

    def loss(self, views: list[Tensor], progress: float) -> Tensor:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        resolution = 1_000_000
        momentum = cosine_schedule(round(progress * resolution), resolution, self.base_momentum, self.final_momentum)
        update_momentum(self.backbone, self.teacher_backbone, m=momentum)
        update_momentum(self.head, self.teacher_head, m=momentum)
        with torch.no_grad():
            teacher = [self.teacher_head(self.teacher_backbone(pixel_values=v).pooled) for v in views[:2]]
        student = [self.head(self.features(v)) for v in views]
        return self.criterion(teacher, student)


LIGHTLY_METHODS: dict[str, type[LightlyMethod]] = {
    "simclr": LightlySimCLR, "moco_v2": LightlyMoCoV2, "byol": LightlyBYOL, "barlow_twins": LightlyBarlowTwins,
    "dino": LightlyDINO,
}


def lightly_trainer(method: str, settings: BenchSettings, data: CifarData, reference: nn.Module,
                    output_dir: str, clock: CpuBudget) -> Trainer:
    """lightly's way: per-sample transforms in the DataLoader, its heads, loss, LARS, same encoder."""
    from lightly.models.utils import get_weight_decay_parameters
    from lightly.utils.lars import LARS

    from domains.image import ImageConfig
    from multissl.train import scaled_lr

    recipe = bench_recipe(method, settings, output_dir)
    image_config = ImageConfig(**recipe.domains["image"].options)
    torch.manual_seed(settings.seed)
    backbone = initial_encoder(settings, image_config)
    assert_same_start(backbone, reference, f"lightly {method}")
    model = LIGHTLY_METHODS[method](backbone, dict(recipe.objectives[0].options))
    transform = lightly_transform(method, image_config, recipe.objectives[0].options.get("local_views", 0))
    loader = DataLoader(PILViews(data.rows.select(data.train.tolist()), transform), batch_size=settings.batch_size,
                        shuffle=True, drop_last=True, num_workers=0,
                        generator=torch.Generator().manual_seed(settings.seed))
    opt = recipe.optimizer
    params, params_no_weight_decay = get_weight_decay_parameters(model.trained())
    groups = [{"name": method, "params": params},
              {"name": f"{method}_no_weight_decay", "params": params_no_weight_decay, "weight_decay": 0.0}]
    lr = scaled_lr(recipe, 1)
    if opt.name == "lars":
        optimizer: torch.optim.Optimizer = LARS(groups, lr=lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    elif opt.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    elif opt.name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=opt.betas, weight_decay=opt.weight_decay)
    else:
        raise ValueError(f"the bench maps only lars, sgd and adamw recipes onto lightly, got {opt.name!r}")
    scheduler = budget_lr_scheduler(optimizer, clock, recipe.schedule.warmup, recipe.schedule.final_lr_fraction)
    batches = forever(loader)
    counters = {"data_cpu_seconds": 0.0}
    model.train()

    def step(progress: float) -> StepResult:
        started = time.process_time()
        views, _ = next(batches)
        counters["data_cpu_seconds"] += time.process_time() - started
        loss = model.loss(list(views), progress)
        loss.backward()
        if recipe.train.grad_clip is not None:  # as the engine clips (DINO's recipe: 3)
            torch.nn.utils.clip_grad_norm_([p for group in groups for p in group["params"]], recipe.train.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return StepResult(float(loss.detach()), settings.batch_size)

    return Trainer(step, backbone, counters)


# ---------------------------------------------------------------------------------------- evaluation


class PixelEncoder(nn.Module):
    """The raw-pixels baseline as an encoder: the plain view's normalised pixels, flattened."""

    dim = 3 * 32 * 32

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives it a device

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, pixel_values: Tensor, **_: Any):
        from multissl.features import Features

        return Features(pooled=pixel_values.flatten(1))


def evaluate(encoder: nn.Module, domain, data: CifarData, settings: BenchSettings):
    """Features of the probe's train rows and the held-out rows, then :func:`evaluate_frozen`."""
    from multissl.probes import extract_from_dataset

    def features(rows: Tensor):
        return extract_from_dataset(encoder, domain, data.rows.select(rows.tolist()), batch_size=settings.eval_batch_size,
                                    device="cpu", seed=settings.seed)

    train, test = features(data.probe_train), features(data.held_out)
    if train.skipped or test.skipped:
        raise RuntimeError(f"{train.skipped + test.skipped} evaluation images were skipped as bad samples")
    return evaluate_frozen(train.pooled, train.labels, test.pooled, test.labels, ks=(20, 200), seed=settings.seed)


class CurveProbe:
    """A learning curve's points: weighted kNN (k=20) top-1 of the encoder as it trains, on the
    held-out images, with ``curve_bank_images`` of the probe's labelled training images as the
    neighbours. The images are decoded and collated once; each point is one forward pass over
    them (eval mode, plain views) with the budget's clock paused."""

    def __init__(self, domain, data: CifarData, settings: BenchSettings) -> None:
        from multissl.probes.online import OnlineEvaluator  # noqa: F401  (the same plain-view forward)

        self.domain, self.settings = domain, settings
        bank = data.probe_train[: settings.curve_bank_images]
        self.bank = self._collate(data.rows.select(bank.tolist()))
        self.queries = self._collate(data.rows.select(data.held_out.tolist()))
        self.points: list[dict[str, float]] = []

    def _collate(self, rows) -> list[dict[str, Any]]:
        size = self.settings.eval_batch_size
        return [self.domain.collate([rows[i] for i in range(start, min(start + size, len(rows)))])
                for start in range(0, len(rows), size)]

    @torch.no_grad()
    def _features(self, encoder: nn.Module, batches) -> tuple[Tensor, Tensor]:
        from multissl.views import ViewRequest

        generator = torch.Generator().manual_seed(0)
        features, labels = [], []
        for batch in batches:
            views = self.domain.make_views(batch, ViewRequest("plain"), generator)
            features.append(encoder(**views["inputs"]).pooled.float())
            labels.append(batch["labels"])
        return torch.cat(features), torch.cat(labels)

    def __call__(self, encoder: nn.Module, cpu_seconds: float, steps: int) -> float:
        from multissl.probes import knn_classify

        was_training = encoder.training
        encoder.eval()
        with torch.random.fork_rng():
            bank = self._features(encoder, self.bank)
            queries = self._features(encoder, self.queries)
        encoder.train(was_training)
        accuracy = knn_classify(bank[0], bank[1], queries[0], queries[1], ks=(20,))[20]
        self.points.append({"cpu_seconds": round(cpu_seconds, 1), "steps": steps, "knn_top1": round(accuracy, 4)})
        return accuracy


def time_to_accuracy(points: list[dict[str, float]], target: float) -> float | None:
    """The CPU seconds at which a learning curve first reaches ``target`` (linear between its
    points), or None when it never does."""
    previous = None
    for point in points:
        if point["knn_top1"] >= target:
            if previous is None or point["knn_top1"] == previous["knn_top1"]:
                return point["cpu_seconds"]
            share = (target - previous["knn_top1"]) / (point["knn_top1"] - previous["knn_top1"])
            return previous["cpu_seconds"] + share * (point["cpu_seconds"] - previous["cpu_seconds"])
        previous = point
    return None


def time_to_accuracy_rows(curves: dict[str, list[dict[str, float]]], budget: float) -> list[dict[str, Any]]:
    """Per method run by both libraries: the fraction of lightly's budget multissl needs to reach
    lightly's final kNN accuracy (lower is better; the target is <= 0.6)."""
    from bench._common import QualityRow

    rows = []
    for method, display in DISPLAY.items():
        ours, theirs = curves.get(f"multissl {display}"), curves.get(f"lightly {display}")
        if not ours or not theirs:
            continue
        target = theirs[-1]["knn_top1"]
        reached = time_to_accuracy(ours, target)
        value = round(reached / theirs[-1]["cpu_seconds"], 3) if reached is not None else math.inf
        note = (f"lightly {display} ends at kNN-20 {target:.4f} after {theirs[-1]['cpu_seconds']:.0f} CPU s; multissl "
                + (f"reaches it after {reached:.0f} CPU s" if reached is not None else
                   f"never reaches it (best {max(p['knn_top1'] for p in ours):.4f})")
                + "; target <= 0.6 (kNN-20 learning curves with the clock paused at each point)")
        rows.append(QualityRow(f"{TASK}, CPU time to lightly's final kNN-20", f"multissl {display}",
                               "fraction_of_lightly_time", value, False, budget, note).as_row())
    return rows


def write_curves_png(curves: dict[str, list[dict[str, float]]], path: Path, title: str) -> Path | None:
    """kNN-20 accuracy against training CPU seconds, one line per contender (lightly dashed)."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    colours = {method: f"C{i}" for i, method in enumerate(DISPLAY.values())}
    for name, points in sorted(curves.items()):
        peer, method = name.split(" ", 1)
        axis.plot([p["cpu_seconds"] for p in points], [p["knn_top1"] for p in points], marker="o", markersize=3,
                  linestyle="-" if peer == "multissl" else "--", color=colours.get(method, "black"), label=name)
    axis.set_xlabel("training CPU seconds (one thread)")
    axis.set_ylabel("kNN-20 top-1, held-out 5k")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# ------------------------------------------------------------------------------------------- the run


def contenders(settings: BenchSettings) -> list[tuple[str, str]]:
    """(library, method) of every trained contender, methods interleaved so both libraries of a
    method run back to back (similar machine load)."""
    return [(peer, method) for method in settings.methods for peer in settings.peers]


def contender_name(peer: str, method: str) -> str:
    return f"{peer} {DISPLAY[method]}"


def training_note(report: TrainingReport, data_cpu: float, train_images: int) -> str:
    share = data_cpu / report.cpu_seconds if report.cpu_seconds else math.nan
    return (f"{report.steps} steps, {report.samples:,} images seen ({report.samples / train_images:.2f} epochs of "
            f"{train_images:,}), {report.samples_per_cpu_second:.0f} images per CPU second, data path (decode + views) "
            f"{share:.0%} of the CPU time; {report.cpu_seconds:.0f} CPU s / {report.wall_seconds:.0f} wall s; "
            f"loss {report.losses[0]:.3f} -> {report.losses[-1]:.3f}")


def losing_notes(rows: list[dict[str, Any]], training: dict[str, dict[str, Any]], held_out: int) -> None:
    """Append to each multissl row beaten by lightly's same method what was measured about both."""
    by_key = {(r["task"], r["contender"]): r for r in rows}
    standard_error = math.sqrt(0.25 / held_out)  # worst case p = 0.5, one contender's accuracy
    for row in rows:
        if not row["contender"].startswith("multissl "):
            continue
        method_name = row["contender"][len("multissl "):]
        peer = by_key.get((row["task"], f"lightly {method_name}"))
        if peer is None or row["value"] >= peer["value"]:
            continue
        method = next(m for m, d in DISPLAY.items() if d == method_name)
        ours, theirs = training[row["contender"]], training[peer["contender"]]
        gap = peer["value"] - row["value"]
        row["notes"] += (
            f" | multissl loses this row to lightly {method_name} by {gap * 100:.1f} points "
            f"({'within' if gap < 2 * math.sqrt(2) * standard_error else 'beyond'} two standard errors of the "
            f"difference of two {held_out:,}-image accuracies, {2 * math.sqrt(2) * standard_error * 100:.1f} points). "
            f"Measured: multissl {ours['steps']} steps / {ours['samples']:,} images, loss {ours['last_loss']:.3f}; "
            f"lightly {theirs['steps']} steps / {theirs['samples']:,} images, loss {theirs['last_loss']:.3f}. "
            f"Implementation differences: {IMPLEMENTATION_NOTES[method]}.")


def estimate_wall_minutes(settings: BenchSettings, eval_cpu_seconds: float = EVAL_CPU_SECONDS) -> float:
    """Rough wall minutes on an idle machine: every training budget plus the evaluations, spread
    over the worker processes (one core each)."""
    trained = len(contenders(settings))
    cpu = trained * settings.budget_cpu_seconds + (trained + 2) * eval_cpu_seconds
    parallel = max(1, min(settings.processes, os.cpu_count() or 1, trained + 1))
    return cpu / parallel / 60


@dataclass(frozen=True)
class Job:
    """One unit of work for a worker process: train and evaluate ``peer`` ``method``, or (peer
    "baselines") evaluate the random-init encoder and raw pixels."""

    peer: str
    method: str = ""

    @property
    def name(self) -> str:
        return "baselines" if self.peer == "baselines" else contender_name(self.peer, self.method)


def prepared(settings: BenchSettings):
    """What every job starts from: threads fixed, the evaluation domain, the split, the initial encoder."""
    fix_threads(settings.threads)
    domain = eval_domain()
    data = load_cifar(settings, domain)
    return domain, data, initial_encoder(settings, domain.config)


def run_job(settings: BenchSettings, job: Job) -> dict[str, Any]:
    """Run one job (in a worker process or in-process); returns its rows and training summary."""
    def say(message: str) -> None:
        print(f"[{job.name}] {message}", flush=True)

    domain, data, reference = prepared(settings)
    rows: list[dict[str, Any]] = []

    def evaluate_and_record(contender: str, encoder: nn.Module, budget_seconds: float | None, note: str) -> None:
        started = time.process_time()
        scores = evaluate(encoder, domain, data, settings)
        say(f"{contender}: linear {scores.linear_accuracy:.4f}, kNN-20 {scores.knn_accuracy[20]:.4f}, "
            f"kNN-200 {scores.knn_accuracy[200]:.4f} (evaluation {time.process_time() - started:.0f} CPU s)")
        rows.extend(probe_rows(TASK, contender, scores, budget_seconds, note))

    if job.peer == "baselines":
        evaluate_and_record("random init", reference, 0.0,
                            "the same encoder, untrained (the weights every contender starts from)")
        evaluate_and_record("raw pixels", PixelEncoder(), 0.0,
                            "normalised pixels, flattened: linear / kNN on 3,072-d inputs")
        return {"job": job.name, "rows": rows, "training": None}

    build = multissl_trainer if job.peer == "multissl" else lightly_trainer
    clock = CpuBudget(settings.budget_cpu_seconds)
    curve = CurveProbe(domain, data, settings) if settings.curve_points else None
    with tempfile.TemporaryDirectory(prefix="quality-image-") as scratch:
        trainer = build(job.method, settings, data, reference, scratch, clock)
        say(f"training for {settings.budget_cpu_seconds:g} CPU s")

        def point(cpu_seconds: float, steps: int) -> None:
            accuracy = curve(trainer.encoder, cpu_seconds, steps)
            say(f"curve: kNN-20 {accuracy:.4f} after {cpu_seconds:.0f} CPU s ({steps} steps)")

        marks = [i / settings.curve_points for i in range(settings.curve_points + 1)] if curve else []
        report = budgeted_training(trainer.step, clock, max_steps=settings.max_steps, name=job.name,
                                   log_every=100, printer=say, checkpoints=marks, on_checkpoint=point)
    note = training_note(report, trainer.counters["data_cpu_seconds"], len(data.train))
    say(note)
    evaluate_and_record(job.name, trainer.encoder, settings.budget_cpu_seconds, note)
    summary = report.summary()
    summary["data_cpu_seconds"] = round(trainer.counters["data_cpu_seconds"], 2)
    if curve is not None:
        summary["curve"] = curve.points
    return {"job": job.name, "rows": rows, "training": summary}


def jobs_of(settings: BenchSettings) -> list[Job]:
    """Both libraries' runs of a method one after the other, so that with two worker processes
    they train at the same time, under the same machine load; the baselines last."""
    return [Job(peer, method) for peer, method in contenders(settings)] + ([Job("baselines")] if settings.baselines else [])


def run(settings: BenchSettings, printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every job (``settings.processes`` worker processes, spawned, each on ``settings.threads``
    torch threads); returns the rows, per-contender training summaries and data counts."""
    domain, data, reference = prepared(settings)
    parameters = sum(p.numel() for p in reference.parameters())
    printer(f"data: {len(data.rows):,} images; held out {len(data.held_out):,}; SSL training on {len(data.train):,}; "
            f"probes fit on {len(data.probe_train):,} labelled training images")
    printer(f"encoder {settings.encoder}: {parameters / 1e6:.2f} M parameters, {reference.dim}-d pooled features")
    jobs = jobs_of(settings)
    if settings.processes == 1:
        results = [run_job(settings, job) for job in jobs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(settings.processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_job, settings, job) for job in jobs]  # taken in this order
            results = [future.result() for future in futures]
    rows = [row for result in results for row in result["rows"]]
    training = {result["job"]: result["training"] for result in results if result["training"] is not None}
    losing_notes(rows, training, len(data.held_out))
    curves = {name: summary["curve"] for name, summary in training.items() if summary.get("curve")}
    rows += time_to_accuracy_rows(curves, settings.budget_cpu_seconds)
    return {"rows": rows, "training": training, "encoder_parameters": parameters, "curves": curves,
            "counts": {"images": len(data.rows), "held_out": len(data.held_out), "ssl_train": len(data.train),
                       "probe_train": len(data.probe_train)}}


# ---------------------------------------------------------------------------------------------- main




def parse_settings(argv: list[str] | None) -> tuple[BenchSettings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-cpu-seconds", type=float, default=None,
                        help=f"CPU seconds of training per trained contender (default {FULL_BUDGET_CPU_SECONDS:g}; "
                             f"--quick {QUICK_BUDGET_CPU_SECONDS:g})")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: small budget, 5,000 training images, 2,000 probe-train images")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default=DEFAULT_ENCODER)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every worker process (see THREADS)")
    parser.add_argument("--processes", type=int, default=2,
                        help="worker processes running contenders side by side (default 2: one per core)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="SSL training images (seeded subset of the 45,000; default all, --quick 5,000)")
    parser.add_argument("--probe-train-images", type=int, default=None,
                        help="labelled training images the probes fit on (default 10,000, --quick 2,000; 0 = all)")
    parser.add_argument("--set", dest="recipe_overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides applied after the bench's own, for both libraries "
                             "(e.g. objectives.0.options.temperature=0.2)")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false",
                        help="leave out the random-init and raw-pixel rows (pilot runs)")
    parser.add_argument("--curve-points", type=int, default=10,
                        help="points of each contender's kNN learning curve (0: none); the clock pauses for each")
    parser.add_argument("--seed", type=int, default=0,
                        help="split, subsets and initial weights; tune settings with another seed than the reported 0")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "quality_image.json")
    args = parser.parse_args(argv)
    probe = args.probe_train_images if args.probe_train_images is not None else (2000 if args.quick else 10_000)
    settings = BenchSettings(
        budget_cpu_seconds=args.budget_cpu_seconds or (QUICK_BUDGET_CPU_SECONDS if args.quick else FULL_BUDGET_CPU_SECONDS),
        methods=tuple(args.methods), peers=tuple(args.peers), encoder=args.encoder, batch_size=args.batch_size,
        threads=args.threads, processes=args.processes, seed=args.seed,
        train_images=args.train_images if args.train_images is not None else (5000 if args.quick else None),
        probe_train_images=probe or None, quick=args.quick, curve_points=args.curve_points,
        recipe_overrides=tuple(args.recipe_overrides), baselines=args.baselines)
    return settings, args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    settings, args = parse_settings(argv)
    if not any(DATA_GLOB.parent.glob("*.parquet")):
        raise SystemExit(f"no CIFAR-10 parquet shards under {DATA_GLOB.parent}: this benchmark needs ../shared/data")
    started = time.perf_counter()
    info = machine_info(MEASURED)
    print(describe_machine(info))
    trained = len(contenders(settings))
    print(f"budget: {settings.budget_cpu_seconds:g} CPU s of training per contender ({trained} trained contenders, "
          f"{trained * settings.budget_cpu_seconds:g} CPU s in all, {settings.processes} worker process(es) of "
          f"{settings.threads} thread(s)); expected duration on an idle machine about "
          f"{estimate_wall_minutes(settings):.0f} min, more under load", flush=True)
    result = run(settings)
    import lightly

    wall = time.perf_counter() - started
    print(f"done in {wall / 60:.1f} min")
    curves_png = write_curves_png(result["curves"], args.output.with_name(args.output.stem + "_curves.png"),
                                  f"CIFAR-10 kNN-20 while training ({settings.encoder}, batch {settings.batch_size})")
    return write_results(
        args.output, benchmark="bench/quality_image.py",
        argv=None if argv is None else ["bench/quality_image.py", *argv],
        title="CIFAR-10 linear probe and kNN at an equal CPU budget: multissl against lightly, random init, raw pixels",
        kind="quality", machine=info,
        description=(
            "Self-supervised training on CIFAR-10 training images for the same CPU-seconds budget per contender "
            "(time.process_time of the training process: data decoding and augmentation in-process included), "
            "then the same evaluation for all: a linear probe (multissl.probes.linear_probe, L2 penalty chosen on a "
            "validation split of the probe's train rows) and weighted kNN (k=20, 200) on the frozen encoder's pooled "
            f"features, scored on {result['counts']['held_out']:,} held-out training images never trained on. "
            "multissl rows run the engine's step on recipes/<method>-image.yaml; lightly rows use lightly's "
            "transforms, heads, losses, momentum updates and LARS as its benchmarks do; both with the same encoder, "
            "initial weights, data, augmentation strengths, hyper-parameters and budget. Baselines: the encoder at "
            "its initial weights, and raw normalised pixels."),
        seeds={"split": settings.seed, "ssl_train_subset": settings.seed + 1, "probe_train_subset": settings.seed + 2,
               "encoder_init": settings.seed, "data_order": settings.seed, "multissl_views": "engine: (seed, step)",
               "lightly_views": "torch global RNG seeded with seed before each contender"},
        budget={"quick": settings.quick, "cpu_seconds_per_contender": settings.budget_cpu_seconds,
                "trained_contenders": trained, "threads_per_process": settings.threads,
                "processes": settings.processes, "wall_seconds": round(wall, 1)},
        settings={**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
                  "encoder_spec": ENCODERS[settings.encoder], "encoder_parameters": result["encoder_parameters"],
                  "bench_overrides": BENCH_OVERRIDES, "counts": result["counts"], "lightly": lightly.__version__,
                  "implementation_differences": IMPLEMENTATION_NOTES},
        notes=[
            "Budgets are CPU seconds of the training process; wall seconds depend on the machine's load (recorded).",
            "lr warm-up + cosine and BYOL's EMA momentum follow the fraction of the budget spent, for both libraries.",
            "Evaluated encoder: the one trained by gradient (MoCo's query encoder, BYOL's online encoder) for both "
            "libraries. lightly's own MoCo benchmark evaluates its momentum encoder instead.",
            "A 5,000-image accuracy has a standard error of up to 0.7 points; rows closer than ~2 points may swap "
            "with another seed.",
        ],
        extra={"training": result["training"],
               "curves_png": str(curves_png.relative_to(ROOT)) if curves_png is not None and curves_png.is_relative_to(ROOT)
               else (str(curves_png) if curves_png else None)},
        rows=result["rows"],
    )


if __name__ == "__main__":
    main()
