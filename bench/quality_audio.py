"""Audio SSL quality at an equal CPU budget: what a multissl encoder learns from spoken digits.

Contenders, all in one run, all evaluated by the same probe code on the same held-out data:

* ``multissl CPC`` (``recipes/cpc-audio.yaml``), ``multissl masked frames``
  (``recipes/masked_frames-audio.yaml``, wav2vec 2.0-style span masking regressing clean log-mel),
  ``multissl BYOL`` (``recipes/byol-audio.yaml``) and ``multissl data2vec``
  (``recipes/data2vec-audio.yaml``: masked spans regress an EMA teacher's top layers; ``--methods`` picks): the shipped recipes, with the data,
  the encoder and the sizes that depend on clip length scaled to FSDD (``Method.overrides``, recorded
  in the JSON as ``key=value`` strings: ``multissl train RECIPE <overrides>`` trains the same model),
  each trained self-supervised for the same ``--budget-cpu-seconds`` of process CPU time;
* ``random init``: the same encoder, same seed, untrained (every SSL run starts from these weights;
  the script checks it);
* ``MFCC``: 40 torchaudio MFCCs (25 ms / 10 ms frames, 40 mel bands), no learning.

Data (``../shared/data/audio``): FSDD (8 kHz, ``{digit}_{speaker}_{take}.wav``, 6 speakers x 10
digits x 50 takes). SSL training reads takes 5-49 without their labels (the training rows hold
only audio: the file-name pattern of the training data extracts the take and nothing else). The
probes train on the same takes 5-49 with their labels and are scored once on takes 0-4, FSDD's
standard test split: speaker ID (6 classes) and digit ID (10 classes) from utterance features
(``Features.pooled`` of the last layer, and SUPERB's learned weighted sum of layers; MFCC: mean
and standard deviation of the frames). Frame-level phone classification on the two LibriSpeech
utterances that have phone labels (41 classes, 100 labels/s, mapped onto the encoder's 20 ms
frames by the audio domain): train on one utterance, test on the other, then the reverse; the
mean of the two test accuracies is reported (MFCC frames, mean/variance normalised per utterance,
are averaged onto the same encoder frames, so every contender is scored on the same frames).

Probe: ``multissl.probes.linear_probe`` (multinomial logistic regression on standardised
features, L2 penalty chosen on a validation split carved from the probe's train rows; for the
phone probe, from one-second blocks of the training utterance) and ``multissl.probes.frame_probe``.

Budget (``bench/_quality.py``: ``CpuBudget``, ``budgeted_training``): ``time.process_time()`` of
this process, torch at ``--threads`` threads (1 by default: on this shared machine a 2-thread
wav2vec2 step burned 2.6x the CPU seconds of a 1-thread step, measured, OpenMP workers spinning
while they wait for a core, so CPU seconds would buy less training the busier the machine is).
Data loading runs in-process (``num_workers=0``), so decoding and the batched views are inside
the budget. The clock is read between steps; a run stops at the first step that finds its budget
spent. The training step is the engine's (``multissl.train``: ``SSLModel.make_views``,
``optimisation_step``, ``on_step_end``); the learning rate (the recipe's warm-up fraction, then
cosine) and BYOL's EMA schedule follow the fraction of the budget spent, since the number of
steps is not known in advance.

    python bench/quality_audio.py                         # full run (~40 min on an idle 2-core machine)
    python bench/quality_audio.py --quick                 # smoke run, a few minutes
    python bench/quality_audio.py --methods cpc masked_frames byol --budget-cpu-seconds 600

No peer library is a contender (``S3PRL_NOTE``); the baselines are the comparison.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, SHARED_DATA, QualityRow, describe_machine, machine_info, write_results  # noqa: E402
from bench._quality import (  # noqa: E402
    CpuBudget, TrainingReport, assert_same_start, budget_lr_scheduler, budgeted_training, engine_step, fix_threads, forever,
)

FSDD = SHARED_DATA / "audio" / "fsdd" / "recordings"
PHONE_LABELS = SHARED_DATA / "audio" / "librispeech_mini" / "phone_labels.txt"
#: probes read digit and speaker from the file name; SSL training reads only the take (to select rows)
FSDD_PATTERN = r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav$"
FSDD_TAKE_ONLY_PATTERN = r"_(?P<take>\d+)\.wav$"
TRAIN_TAKES = (5, 49)  # inclusive: SSL training and the probes' train rows
TEST_TAKES = (0, 4)  # inclusive: FSDD's standard test split, scored once
SAMPLE_RATE = 8000  # FSDD's own rate; LibriSpeech is resampled down to it at collation
#: 25 ms windows every 10 ms at 8 kHz, 40 mel bands, 40 coefficients (MFCC baseline, masked targets)
SPECTROGRAM = {"n_fft": 200, "hop_length": 80, "n_mels": 40, "n_mfcc": 40}
#: wav2vec2 presets stride 320 samples (20 ms at 16 kHz); at 8 kHz that is 40 ms, too coarse for
#: 80 ms phones, so the convolution strides are changed to give 160 (20 ms again)
ENCODER_OVERRIDES = {"tiny": {"conv_stride": [5, 4, 8]}, "cpu": {"conv_stride": [5, 4, 8]},
                     "small": {"conv_dim": [256] * 6, "conv_kernel": [10, 3, 3, 3, 3, 2],
                               "conv_stride": [5, 2, 2, 2, 2, 2], "num_feat_extract_layers": 6}}
PHONE_VALIDATION_BLOCK_SECONDS = 1.0
S3PRL_NOTE = (
    "No peer library is a contender. s3prl, the field's reference for audio SSL and the SUPERB probes, is not in "
    "the bench extra and was not installed (`pip install --dry-run s3prl` does resolve s3prl 0.4.18 against this "
    "torch, so it is installable). It has no method that trains this wav2vec2 encoder: its pretraining recipes "
    "(APC, VQ-APC, NPC, Mockingjay, TERA, Audio ALBERT) train their own models through their own runner, and its "
    "CPC, wav2vec 2.0 and HuBERT upstreams load released checkpoints by download (no network here). The baselines "
    "(the same encoder at random init, MFCC) are the comparison.")
MEASURED = ("multissl", "domains", "recipes", "bench/quality_audio.py", "bench/_quality.py")


# ------------------------------------------------------------------------------------------ splits


def take_range(takes: tuple[int, int]) -> str:
    """The audio domain's ``where`` range for inclusive take bounds: (5, 49) -> "5..49"."""
    low, high = takes
    if not 0 <= low <= high:
        raise ValueError(f"take range must be 0 <= low <= high, got {takes}")
    return f"{low}..{high}"


def fsdd_config(takes: tuple[int, int], labelled: bool, **options: Any):
    """AudioConfig reading the FSDD takes ``takes``; ``labelled`` adds digit (``label``) and speaker
    columns, otherwise rows hold audio only (what SSL training sees)."""
    from domains.audio.config import AudioConfig

    return AudioConfig(sample_rate=SAMPLE_RATE, max_seconds=None, **SPECTROGRAM,
                       filename_pattern=FSDD_PATTERN if labelled else FSDD_TAKE_ONLY_PATTERN,
                       where={"take": take_range(takes)}, **options)


def load_fsdd(takes: tuple[int, int], labelled: bool = True):
    """(AudioDomain, rows) of the FSDD ``takes`` as the probes read them (plain views, 8 kHz)."""
    from domains.audio import AudioDomain
    from multissl.domain import DataConfig

    domain = AudioDomain(fsdd_config(takes, labelled))
    return domain, domain.load(DataConfig(path=str(FSDD)))


def utterance_folds(num_utterances: int) -> list[tuple[list[int], list[int]]]:
    """Leave-one-utterance-out folds: [(train utterances, test utterance)], one per utterance.

    With two labelled utterances: train on 0, test on 1; then train on 1, test on 0. No frame of a
    test utterance is ever in its fold's training set.
    """
    if num_utterances < 2:
        raise ValueError(f"a held-out utterance needs at least 2 labelled utterances, got {num_utterances}")
    everything = list(range(num_utterances))
    return [([u for u in everything if u != held_out], [held_out]) for held_out in everything]


def frame_blocks(num_utterances: int, num_frames: int, block_frames: int) -> Tensor:
    """Long[N, T]: a group id per frame, one per ``block_frames`` consecutive frames of one utterance,
    so the probe's validation split holds out whole stretches of speech, not interleaved frames."""
    if block_frames < 1:
        raise ValueError(f"block_frames must be >= 1, got {block_frames}")
    blocks_per_utterance = -(-num_frames // block_frames)
    position = torch.arange(num_frames) // block_frames
    return torch.arange(num_utterances)[:, None] * blocks_per_utterance + position[None, :]


# ----------------------------------------------------------------------------------- SSL contenders


@dataclass(frozen=True)
class Method:
    """One SSL contender: a shipped recipe and the overrides that fit it to FSDD and a CPU budget."""

    contender: str
    recipe: str
    overrides: tuple[str, ...]
    why: str  # why these overrides (goes into the row notes)


def data_overrides(encoder_size: str) -> list[str]:
    """Overrides every SSL contender shares: FSDD takes 5-49 without labels, 8 kHz, the encoder."""
    encoder = dict(ENCODER_OVERRIDES[encoder_size])
    return [
        f"data.path={FSDD}", "data.subset=null", "data.split=train", "data.columns={audio: audio}",
        f"domains.audio.options.sample_rate={SAMPLE_RATE}", "domains.audio.options.max_seconds=null",
        *(f"domains.audio.options.{key}={value}" for key, value in SPECTROGRAM.items()),
        f"domains.audio.options.filename_pattern='{FSDD_TAKE_ONLY_PATTERN}'",
        f"domains.audio.options.where={{take: '{take_range(TRAIN_TAKES)}'}}",
        f"domains.audio.encoder.size={encoder_size}",
        f"domains.audio.encoder.overrides={encoder}".replace("'", ""),
        "train.precision=fp32", "train.num_workers=0",
    ]


METHODS: dict[str, Method] = {
    "cpc": Method(
        "multissl CPC", "recipes/cpc-audio.yaml",
        ("domains.audio.options.sequence_seconds=1.0", "objectives.0.options.segment_length=400",
         "objectives.0.options.prediction_steps=4", "train.batch_size=64", "optimizer.lr=1.0e-3"),
        "sequence crops of 1 s (whole FSDD clips: mean 0.44 s), 50 ms segments (400 samples, 2 encoder "
        "frames) predicted up to 4 segments (200 ms) ahead, lr 1e-3 for the tiny encoder and short budget",
    ),
    "masked_frames": Method(
        "multissl masked frames", "recipes/masked_frames-audio.yaml",
        ("objectives.0.options.target_dim=40", "domains.audio.options.mask_span=5",
         "train.batch_size=64", "optimizer.lr=1.0e-3"),
        "40 log-mel targets (8 kHz), 5-frame (100 ms) mask spans over 50% of frames (a 0.44 s clip has "
        "22 frames), batch 64, lr 1e-3 for the tiny encoder and short budget",
    ),
    "byol": Method(
        "multissl BYOL", "recipes/byol-audio.yaml",
        ("domains.audio.options.crop_seconds=0.3", "objectives.0.options.hidden_dim=1024",
         "train.batch_size=64", "optimizer.lr=1.0e-3"),
        "two 0.3 s crops of each clip (gain, noise, shift), heads 1024 -> 256 for the 64-d tiny encoder, "
        "batch 64, lr 1e-3",
    ),
    "data2vec": Method(
        "multissl data2vec", "recipes/data2vec-audio.yaml",
        ("domains.audio.options.mask_span=5", "objectives.0.options.top_k_layers=2",
         "objectives.0.options.momentum_anneal_steps=null", "train.batch_size=64", "optimizer.lr=1.0e-3"),
        "5-frame (100 ms) mask spans over 65% of the frames, the teacher's 2 layers (all of the tiny encoder's) "
        "instance-normalised and averaged, the EMA annealed 0.999 -> 0.9999 over the budget, batch 64, lr 1e-3",
    ),
}


def load_method_recipe(method: Method, encoder_size: str, seed: int, output_dir: str):
    """The method's recipe with its overrides; returns (Recipe, overrides without output_dir)."""
    from multissl.config import load_recipe

    overrides = [*data_overrides(encoder_size), *method.overrides, f"train.seed={seed}"]
    return load_recipe(ROOT / method.recipe, [*overrides, f"output_dir={output_dir}"]), overrides


@dataclass
class TrainedContender:
    """An SSL contender after its budget: the encoder (eval mode), the run, the overrides it used,
    and the epochs of the training rows that run saw."""

    encoder: Any
    report: TrainingReport
    overrides: list[str]
    epochs: float
    skipped_samples: int


def train_method(method: Method, encoder_size: str, budget: CpuBudget, seed: int, accelerator,
                 initial_state: dict[str, Tensor] | None = None, max_steps: int | None = None) -> TrainedContender:
    """Train one recipe for ``budget`` with the engine's own step.

    The pieces ``multissl.train.train`` runs, on the recipe's ``build_run``: a seeded shuffling
    DataLoader over ``MultiDomainCollate`` (in-process), ``view_generator`` + ``SSLModel.make_views``,
    ``optimisation_step`` (forward, NaN guard, backward, clipping, optimiser and schedule steps),
    then every objective's ``on_step_end`` (BYOL's EMA). Learning rate: the recipe's peak times
    :func:`bench._quality.progress_schedule` of the budget spent (the recipe's warm-up fraction, then
    cosine), as are the EMA schedules. ``initial_state``: the random-init encoder, checked equal to
    this run's starting encoder. Checkpointing, logging and the end-of-run probes are left out.
    """
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from multissl.modules import convert_to_global_batchnorm
    from multissl.optim import build_optimizer, parameter_groups
    from multissl.train import MultiDomainCollate, build_run, scaled_lr

    with tempfile.TemporaryDirectory(prefix="quality-audio-") as output_dir:
        recipe, overrides = load_method_recipe(method, encoder_size, seed, output_dir)
    tc, options = recipe.train, recipe.optimizer
    if not recipe.schedule.warmup < 1:
        raise ValueError(f"{method.recipe}: schedule.warmup={recipe.schedule.warmup} is a step count; a budgeted "
                         "run needs a fraction of the run")
    set_seed(seed)  # build_run builds the encoder first: the same weights as build_random_encoder(seed)
    domains, dataset, encoders, model = build_run(recipe)
    encoder = encoders["audio"]
    if initial_state is not None:
        assert_same_start(encoder.state_dict(), initial_state, method.contender, "the random-init weights")
    if tc.global_batchnorm:
        convert_to_global_batchnorm(model)
    optimizer = build_optimizer(options.name, parameter_groups(model, options.weight_decay), lr=scaled_lr(recipe, 1),
                                weight_decay=options.weight_decay, momentum=options.momentum, betas=options.betas)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = budget_lr_scheduler(optimizer, budget, recipe.schedule.warmup, recipe.schedule.final_lr_fraction)
    loader = DataLoader(dataset, batch_size=tc.batch_size, shuffle=True, drop_last=True, num_workers=0,
                        collate_fn=MultiDomainCollate(domains), generator=torch.Generator().manual_seed(seed))
    model.train()
    step, done = engine_step(accelerator, model, optimizer, scheduler, domains, forever(loader), seed, budget,
                             tc.batch_size, tc.grad_clip)
    report = budgeted_training(step, budget, max_steps=max_steps, name=method.contender, log_every=200)
    encoder.eval()
    return TrainedContender(encoder, report, overrides, report.samples / len(dataset), done["skipped"])


def build_random_encoder(encoder_size: str, seed: int):
    """The encoder every SSL run starts from: the recipes' wav2vec2 at ``encoder_size``, seeded as
    ``build_run`` seeds it (encoders are built first, right after ``set_seed``)."""
    from accelerate.utils import set_seed

    from domains.audio import AudioDomain
    from multissl.domain import EncoderConfig

    set_seed(seed)
    domain = AudioDomain(fsdd_config(TRAIN_TAKES, labelled=False))
    encoder = domain.build_encoder(EncoderConfig("wav2vec2", encoder_size, overrides=dict(ENCODER_OVERRIDES[encoder_size])))
    return encoder.eval()


# ------------------------------------------------------------------------------------------ features


@dataclass
class ClipFeatures:
    """Utterance features of one contender on one FSDD split: pooled [N, D], layers [N, L, D] or
    None, digit labels [N], speaker ids [N], and the mean and standard deviation of the last
    layer's frames [N, 2D] (the statistics the MFCC baseline is pooled with) or None."""

    pooled: Tensor
    layers: Tensor | None
    digits: Tensor
    speakers: Tensor
    mean_std: Tensor | None = None


def encoder_clip_features(encoder, domain, rows, batch_size: int = 64) -> ClipFeatures:
    from multissl.probes import extract_from_dataset

    domain.frame_geometry = encoder.frame_geometry
    extracted = extract_from_dataset(encoder, domain, rows, batch_size=batch_size, hidden_states=True, sequences=True)
    if extracted.skipped:
        raise ValueError(f"{extracted.skipped} FSDD clips were skipped as bad samples")
    # per-frame layers [N, T, L, D] -> each layer's mean over the clip's valid frames [N, L, D]
    weights = extracted.mask[:, :, None, None].to(extracted.layers.dtype)
    layers = (extracted.layers * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
    return ClipFeatures(extracted.pooled, layers, extracted.labels, _speakers(rows),
                        mean_std_pool(extracted.sequence, extracted.mask))


def _speakers(rows) -> Tensor:
    # the audio domain encodes speaker names as ids when it loads (sorted names of the whole
    # folder, before the take filter), so both splits share them
    return torch.as_tensor(rows["speaker"], dtype=torch.long)


def mfcc_frames(waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Any]:
    """40 MFCCs per 25 ms / 10 ms frame: ([B, T, 40], valid Bool[B, T], the frames' geometry)."""
    from domains.audio.config import AudioConfig
    from domains.audio.frames import lengths_to_mask
    from domains.audio.frontends import SpectrogramFrontEnd

    front_end = SpectrogramFrontEnd("mfcc", AudioConfig(sample_rate=SAMPLE_RATE, **SPECTROGRAM))
    features, frame_lengths = front_end(waveforms, lengths)
    return features, lengths_to_mask(frame_lengths, features.shape[1]), front_end.geometry


def mean_std_pool(frames: Tensor, valid: Tensor) -> Tensor:
    """[B, T, F] frames, Bool[B, T] -> [B, 2F]: mean and (population) standard deviation over each
    clip's valid frames. A clip needs at least one valid frame."""
    counts = valid.sum(dim=1, keepdim=True)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} clip(s) are shorter than one MFCC window")
    weights = valid[..., None].to(frames.dtype)
    mean = (frames * weights).sum(dim=1) / counts
    variance = ((frames - mean[:, None]) ** 2 * weights).sum(dim=1) / counts
    return torch.cat([mean, variance.sqrt()], dim=1)


def mfcc_clip_features(domain, rows, batch_size: int = 256) -> ClipFeatures:
    from torch.utils.data import DataLoader

    pooled, digits = [], []
    for batch in DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=domain.collate):
        if batch["skipped"]:
            raise ValueError(f"{batch['skipped']} FSDD clips were skipped as bad samples")
        frames, valid, _ = mfcc_frames(batch["waveforms"], batch["lengths"])
        pooled.append(mean_std_pool(frames, valid))
        digits.append(batch["labels"])
    return ClipFeatures(torch.cat(pooled), None, torch.cat(digits), _speakers(rows))


# ------------------------------------------------------------------------------------ phone frames


@dataclass
class PhoneFrames:
    """Frame features of the labelled LibriSpeech utterances on the encoder's frames:
    frames [N, T, D], layers [N, T, L, D] or None, labels Long[N, T] (-100 off the labels), mask Bool[N, T]."""

    frames: Tensor
    layers: Tensor | None
    labels: Tensor
    mask: Tensor


def load_phone_utterances(frame_geometry):
    """(AudioDomain, rows) of the LibriSpeech utterances with phone labels, at 8 kHz, labels mapped
    onto ``frame_geometry``."""
    import warnings

    from domains.audio import AudioDomain
    from domains.audio.config import AudioConfig
    from multissl.domain import DataConfig

    domain = AudioDomain(AudioConfig(sample_rate=SAMPLE_RATE, max_seconds=None, **SPECTROGRAM))
    domain.frame_geometry = frame_geometry
    with warnings.catch_warnings():  # the label file covers utterances whose audio is not shipped: expected
        warnings.filterwarnings("ignore", message=".*labelled utterances have no audio file.*")
        rows = domain.load(DataConfig(path=str(PHONE_LABELS), format="aligned_frames"))
    return domain, rows


def encoder_phone_frames(encoder, domain, rows) -> PhoneFrames:
    from multissl.probes import extract_from_dataset

    extracted = extract_from_dataset(encoder, domain, rows, batch_size=1, sequences=True, hidden_states=True)
    if extracted.frame_labels is None:
        raise ValueError("the LibriSpeech rows carry no frame labels")
    return PhoneFrames(extracted.sequence, extracted.layers, extracted.frame_labels, extracted.mask)


def mfcc_phone_frames(domain, rows, reference: PhoneFrames) -> PhoneFrames:
    """MFCC frames (per-utterance mean/variance normalised) averaged onto the encoder's frames,
    with the encoder contenders' labels and mask (``reference``)."""
    from domains.audio.augment import normalize_frames
    from domains.audio.frames import pool_frames

    batch = domain.collate(list(rows))
    frames, valid, geometry = mfcc_frames(batch["waveforms"], batch["lengths"])
    frames = normalize_frames(frames, valid.sum(dim=1))
    num_frames = reference.labels.shape[1]
    pooled, has_frame = pool_frames(frames, valid, geometry, domain.frame_geometry, num_frames)
    return PhoneFrames(pooled, None, reference.labels, reference.mask & has_frame)


def phone_accuracy(data: PhoneFrames, frame_stride: int, use_layers: bool, seed: int,
                   probe_options: dict[str, Any]) -> list[float]:
    """Test frame accuracy of each :func:`utterance_folds` fold (frame_probe, validation on blocks)."""
    from multissl.probes import frame_probe

    features = data.layers if use_layers else data.frames
    num_utterances, num_frames = data.labels.shape
    block = max(1, round(PHONE_VALIDATION_BLOCK_SECONDS * SAMPLE_RATE / frame_stride))
    blocks = frame_blocks(num_utterances, num_frames, block)
    num_classes = int(data.labels.max()) + 1
    accuracies = []
    for train, test in utterance_folds(num_utterances):
        keep = (data.labels[train] != -100) & data.mask[train]
        result = frame_probe(features[train], data.labels[train], data.mask[train],
                             features[test], data.labels[test], data.mask[test],
                             groups=blocks[train][keep], num_classes=num_classes, seed=seed, **probe_options)
        accuracies.append(result.accuracy)
    return accuracies


# -------------------------------------------------------------------------------------- evaluation

CLIP_TASKS = {"speakers": "FSDD speaker ID (6 speakers), linear probe, test takes 0-4",
              "digits": "FSDD digit ID (10 digits), linear probe, test takes 0-4"}
PHONE_TASK = "LibriSpeech frame phone classification (41 classes), linear probe, leave-one-utterance-out"
#: (metric, features): Features.pooled of the last layer, SUPERB's weighted layers, and the last
#: layer's frames pooled by mean and standard deviation as the MFCC baseline's frames are
CLIP_METRICS = (("top1_accuracy", "pooled"), ("top1_accuracy_weighted_layers", "layers"),
                ("top1_accuracy_mean_std_frames", "mean_std"))
PHONE_METRICS = (("frame_accuracy", False), ("frame_accuracy_weighted_layers", True))


@dataclass
class Contender:
    """One contender's features on every evaluation set, and its training run (None: no training)."""

    name: str
    probe_train: ClipFeatures
    test: ClipFeatures
    phones: PhoneFrames
    trained: TrainedContender | None = None


def evaluate(contender: Contender, frame_stride: int, budget_seconds: float, seed: int,
             probe_options: dict[str, Any]) -> list[dict[str, Any]]:
    """Every probe row of one contender (the same probe code and held-out data for all)."""
    from multissl.probes import linear_probe

    trained = contender.trained
    report = trained.report if trained else None
    extra = {"train_steps": report.steps if report else None, "train_epochs": round(trained.epochs, 2) if trained else None,
             "train_cpu_seconds": round(report.cpu_seconds, 1) if report else None,
             "train_wall_seconds": round(report.wall_seconds, 1) if report else None}
    budget = budget_seconds if trained else 0.0
    rows = []
    train, test = contender.probe_train, contender.test
    for labels, task in CLIP_TASKS.items():
        for metric, features in CLIP_METRICS:
            if getattr(train, features) is None:
                continue
            x_train, x_test = getattr(train, features), getattr(test, features)
            result = linear_probe(x_train, getattr(train, labels), x_test, getattr(test, labels), seed=seed, **probe_options)
            rows.append({**QualityRow(task, contender.name, metric, round(result.accuracy, 4), True, budget).as_row(),
                         **extra, "probe_weight_decay": result.weight_decay})
    for metric, use_layers in PHONE_METRICS:
        if use_layers and contender.phones.layers is None:
            continue
        folds = phone_accuracy(contender.phones, frame_stride, use_layers, seed, probe_options)
        rows.append({**QualityRow(PHONE_TASK, contender.name, metric, round(sum(folds) / len(folds), 4), True, budget).as_row(),
                     **extra, "fold_accuracy_samples": [round(a, 4) for a in folds]})
    for row in rows:
        print(f"{row['contender']:<24} {row['metric']:<31} {row['value']:.4f}  {row['task']}", flush=True)
    return rows


def loss_trend(losses: Sequence[float]) -> tuple[float, float]:
    """Mean SSL loss over the last 10% of steps and over the 10% before them."""
    window = max(1, len(losses) // 10)
    last, before = losses[-window:], losses[-2 * window:-window] or losses[:window]
    return sum(before) / len(before), sum(last) / len(last)


def majority_frame_accuracy(data: PhoneFrames) -> list[float]:
    """Per fold: test accuracy of always answering the training utterance's most common phone."""
    accuracies = []
    for train, test in utterance_folds(data.labels.shape[0]):
        train_labels = data.labels[train][(data.labels[train] != -100) & data.mask[train]]
        test_labels = data.labels[test][(data.labels[test] != -100) & data.mask[test]]
        accuracies.append(float((test_labels == torch.mode(train_labels).values).float().mean()))
    return accuracies


def explain_losses(rows: list[dict[str, Any]], trained: dict[str, TrainedContender], phone_frames: int) -> None:
    """Give every multissl row that a baseline beats a note saying so and the measured reasons."""
    from bench._common import losing_rows

    fake = {"kind": "quality", "rows": rows}
    for loss in losing_rows(fake):
        row, contender = loss["row"], trained[loss["row"]["contender"]]
        run = contender.report
        before, last = loss_trend(run.losses)
        trend = (f"its SSL loss was still falling when the budget ran out ({before:.3f} -> {last:.3f} over the last "
                 f"two tenths of its {run.steps} steps)" if last < before else
                 f"its SSL loss had stopped falling ({before:.3f} -> {last:.3f} over the last two tenths of its {run.steps} steps)")
        if row["task"] == PHONE_TASK:
            reason = (f"two labelled utterances give {phone_frames} test frames over both folds, a standard error of "
                      f"about {100 * math.sqrt(0.2 * 0.8 / (phone_frames / 2)):.1f} points per fold at these accuracies, "
                      "so differences of this size are mostly noise; the encoder was trained on spoken digits only "
                      f"(FSDD), not read speech; {trend}")
        elif loss["peer"] == "MFCC":
            reason = ("the mean and standard deviation of MFCCs over a clip are a hand-designed summary of its "
                      "spectral envelope, which on FSDD's 6 speakers and 10 words already separates almost every "
                      f"class; the tiny encoder ({contender.encoder.dim}-d) saw {contender.epochs:.1f} epochs of FSDD "
                      f"in its budget; {trend}")
        else:
            reason = f"at this budget the objective has not yet moved the features past the random encoder's; {trend}"
        row["notes"] = (f"multissl loses this row to {loss['peer']} ({row['value']:.4f} vs {loss['theirs']:.4f}): "
                        + reason + ".")


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_BUDGET:.0f} CPU s per SSL contender, 100 probe iterations")
    parser.add_argument("--budget-cpu-seconds", type=float, default=None,
                        help=f"process CPU seconds of SSL training per contender (default {FULL_BUDGET:.0f}; quick {QUICK_BUDGET:.0f})")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=sorted(METHODS),
                        help=f"SSL contenders (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--encoder-size", default="tiny", choices=sorted(ENCODER_OVERRIDES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see the module doc)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="also stop SSL training after this many steps")
    parser.add_argument("--tune", action="store_true",
                        help="settings search: SSL and probes on takes 10-49, scored on takes 5-9; the reported test "
                             "takes 0-4 are never read (write elsewhere with --output)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "quality_audio.json")
    return parser.parse_args(argv)


FULL_BUDGET, QUICK_BUDGET = 480.0, 20.0
DESCRIPTION = (
    "Self-supervised training of one tiny wav2vec2 encoder (multissl's recipes, scaled to FSDD) on FSDD takes 5-49 "
    "without labels, each method for the same CPU budget from the same random weights; then linear probes "
    "(multissl.probes.linear_probe, L2 penalty chosen on a split of the probe's train rows) trained on takes 5-49 "
    "with their labels and scored once on takes 0-4: speaker ID and digit ID from utterance features (the last "
    "layer's mean over frames, and SUPERB's learned weighted sum of layers), and frame-level phone classification "
    "on the two phone-labelled LibriSpeech utterances (train on one, test on the other, both ways). Baselines in "
    "the same run: the encoder at random init, and 40 MFCCs (mean and standard deviation over the clip; per-frame "
    "for phones).")
DEFAULT_METHODS = ("cpc", "masked_frames", "byol", "data2vec")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from accelerate import Accelerator

    args = parse_args(argv)
    global TRAIN_TAKES, TEST_TAKES
    if args.tune:  # module-level splits: every function reads them
        TRAIN_TAKES, TEST_TAKES = (10, 49), (5, 9)
    budget = args.budget_cpu_seconds if args.budget_cpu_seconds is not None else (QUICK_BUDGET if args.quick else FULL_BUDGET)
    fix_threads(args.threads)
    machine = machine_info(MEASURED)
    print(describe_machine(machine), flush=True)
    started = time.perf_counter()
    probe_options: dict[str, Any] = {"max_iter": 100 if args.quick else 300}

    probe_train_domain, probe_train_rows = load_fsdd(TRAIN_TAKES)
    test_domain, test_rows = load_fsdd(TEST_TAKES)
    print(f"FSDD: {len(probe_train_rows)} probe-train clips (takes {take_range(TRAIN_TAKES)}), "
          f"{len(test_rows)} test clips (takes {take_range(TEST_TAKES)})", flush=True)

    random_encoder = build_random_encoder(args.encoder_size, args.seed)
    initial_state = {k: v.clone() for k, v in random_encoder.state_dict().items()}
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    trained: dict[str, TrainedContender] = {}
    for key in args.methods:
        method = METHODS[key]
        print(f"training {method.contender} for {budget:.0f} CPU s ...", flush=True)
        result = train_method(method, args.encoder_size, CpuBudget(budget), args.seed, accelerator, initial_state,
                              args.max_steps)
        trained[method.contender] = result
        run = result.report
        print(f"  {run.steps} steps ({result.epochs:.1f} epochs) in {run.cpu_seconds:.0f} CPU s / {run.wall_seconds:.0f} s "
              f"wall; loss {run.losses[0]:.3f} at the start, {loss_trend(run.losses)[1]:.3f} over the last tenth", flush=True)

    evaluation_started = time.process_time(), time.perf_counter()
    phone_domain, phone_rows = load_phone_utterances(random_encoder.frame_geometry)
    contenders = []
    encoders = {"random init": random_encoder, **{name: result.encoder for name, result in trained.items()}}
    for name, encoder in encoders.items():
        contenders.append(Contender(name, encoder_clip_features(encoder, probe_train_domain, probe_train_rows),
                                    encoder_clip_features(encoder, test_domain, test_rows),
                                    encoder_phone_frames(encoder, phone_domain, phone_rows), trained.get(name)))
    contenders.append(Contender("MFCC", mfcc_clip_features(probe_train_domain, probe_train_rows),
                                mfcc_clip_features(test_domain, test_rows),
                                mfcc_phone_frames(phone_domain, phone_rows, contenders[0].phones)))
    features_cpu = time.process_time() - evaluation_started[0]
    print(f"features of every contender: {features_cpu:.0f} CPU s", flush=True)
    rows = [row for contender in contenders
            for row in evaluate(contender, phone_domain.frame_geometry.stride, budget, args.seed, probe_options)]
    phones = contenders[0].phones
    phone_frames = int(((phones.labels != -100) & phones.mask).sum())
    explain_losses(rows, trained, phone_frames)
    evaluation_cpu = time.process_time() - evaluation_started[0]
    evaluation_wall = time.perf_counter() - evaluation_started[1]
    wall = time.perf_counter() - started
    print(f"evaluation {evaluation_cpu:.0f} CPU s / {evaluation_wall:.0f} s wall; whole run {wall:.0f} s wall", flush=True)

    majority = majority_frame_accuracy(phones)
    utterances = [Path(path).stem for path in phone_rows["audio"]]
    settings = {
        "encoder": {"architecture": "wav2vec2", "size": args.encoder_size, "overrides": ENCODER_OVERRIDES[args.encoder_size],
                    "dim": random_encoder.dim, "frame_stride_samples": random_encoder.frame_geometry.stride,
                    "receptive_field_samples": random_encoder.frame_geometry.receptive_field,
                    "parameters": sum(p.numel() for p in random_encoder.parameters())},
        "sample_rate": SAMPLE_RATE, "mfcc": {**SPECTROGRAM, "pooling": "mean and std over frames (clips); "
                                             "per-utterance normalised, averaged onto encoder frames (phones)"},
        "fsdd": {"ssl_train_takes": take_range(TRAIN_TAKES), "probe_train_takes": take_range(TRAIN_TAKES),
                 "test_takes": take_range(TEST_TAKES), "probe_train_clips": len(probe_train_rows), "test_clips": len(test_rows)},
        "phones": {"utterances": utterances, "labelled_encoder_frames": phone_frames,
                   "folds": "train on one utterance, test on the other, then the reverse; value = mean of the two",
                   "majority_class_fold_accuracy": [round(a, 4) for a in majority],
                   "validation": f"whole {PHONE_VALIDATION_BLOCK_SECONDS:g} s blocks of the training utterance"},
        "probe": {"function": "multissl.probes.linear_probe / frame_probe", "optimizer": "lbfgs", **probe_options,
                  "weight_decays": "multissl.probes.classification.DEFAULT_WEIGHT_DECAYS, chosen on 20% of the probe's train rows"},
        "methods": {METHODS[key].contender: {
            "recipe": METHODS[key].recipe, "why": METHODS[key].why,
            "overrides": [o.replace(str(SHARED_DATA), "../shared/data") for o in trained[METHODS[key].contender].overrides],
        } for key in args.methods},
        "overrides_note": "paths from the repository root; `multissl train RECIPE <overrides> output_dir=DIR` builds "
                          "the same run (trained there for steps, not for a CPU budget)",
        "runs": {name: {**result.report.summary(), "epochs": round(result.epochs, 3),
                        "last_tenth_loss": round(loss_trend(result.report.losses)[1], 4),
                        "skipped_samples": result.skipped_samples}
                 for name, result in trained.items()},
        "evaluation_cpu_seconds": round(evaluation_cpu, 1), "evaluation_wall_seconds": round(evaluation_wall, 1),
    }
    notes = [
        S3PRL_NOTE,
        f"Every SSL contender trains for the same {budget:g} s of process CPU time (time.process_time, torch at "
        f"{args.threads} thread(s), data loading in-process), starting from the random-init contender's weights.",
        "SSL training reads FSDD takes 5-49 only (no labels, no LibriSpeech audio): the phone probe measures transfer "
        "from spoken digits to read speech.",
        f"The phone probe has two labelled utterances ({', '.join(utterances)}), {phone_frames} labelled "
        f"encoder frames in all; always answering the training utterance's most common phone scores "
        f"{', '.join(f'{a:.3f}' for a in majority)} on the two folds (per-fold accuracies are in fold_accuracy_samples). "
        "Read the phone rows as a smoke signal, not a ranking.",
        "All audio at 8 kHz (FSDD's rate; LibriSpeech resampled down): the wav2vec2 convolution strides are changed "
        "so frames stay 20 ms (settings.encoder).",
    ]
    return write_results(
        args.output, benchmark="bench/quality_audio.py",
        title="Audio SSL at an equal CPU budget: FSDD speaker/digit and LibriSpeech phone probes",
        kind="quality", description=DESCRIPTION, machine=machine,
        seeds={"torch": args.seed, "probe_validation_split": args.seed, "data_order": args.seed},
        budget={"quick": args.quick, "cpu_seconds_per_contender": budget, "torch_threads": args.threads,
                "methods": len(args.methods), "wall_seconds": round(wall, 1)},
        rows=rows, settings=settings, notes=notes,
    )


if __name__ == "__main__":
    main()
