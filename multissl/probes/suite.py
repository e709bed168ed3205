"""Run named probes on an encoder + domain: what the probe command and the engine's end-of-run call.

``run_probes(["linear", "knn"], encoder, domain, train_data, test_data, options)`` extracts
features once per dataset (shared by every probe in the call) and returns a list of
:class:`~multissl.probes.report.ProbeResult`. Probe names:

=============  ==============================================================================
linear         logistic-regression probe, weight decay chosen on a split of train
knn            weighted kNN (k = ``ks``, T = ``temperature``)
fraction       the linear probe trained on class-balanced ``label_fractions`` of train
finetune       encoder unfrozen + linear head, ``epochs`` passes (on a copy: later probes still
               see the frozen encoder)
health         effective rank, uniformity, embedding std of the test features; a 2-D map PNG
frames         frame-level linear probe; batches must carry "frame_labels" aligned to frames
sts            cosine Spearman x 100 on STS files (test_data.path: STS-B .csv, SICK .txt, or a
               SemEval ``STS.input.*.txt``)
senteval       SentEval transfer tasks ``tasks`` under test_data.path (SentEval's data root)
retrieval      image<->text recall@k on a pairs table (needs ``text_encoder``/``text_domain``)
zeroshot       zero-shot classification from prompt ``templates`` (needs the text side too)
=============  ==============================================================================

``options.layers``: None (``Features.pooled``), "weighted" (learned softmax over hidden layers for
trained probes; probes that train nothing reuse the weights the linear probe learned in the same
call, else the mean of layers), "mean", or a layer index (0 = embeddings). Layers are mean-pooled
per utterance/image/sentence (see :func:`multissl.probes.extract._pool_layer`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from multissl.features import Encoder
from multissl.options import OptionError, build
from multissl.probes.classification import class_balanced_subset, fine_tune, linear_probe
from multissl.probes.extract import ExtractedFeatures, class_names_of, embed_texts, extract_from_dataset
from multissl.probes.frames import combine_layers, frame_probe
from multissl.probes.health import effective_rank, embedding_std, save_embedding_map, uniformity
from multissl.probes.knn import knn_classify
from multissl.probes.report import ProbeResult
from multissl.probes.retrieval import DEFAULT_TEMPLATES, retrieval_recall, zero_shot_classifier, zero_shot_classify
from multissl.probes.text import (
    SENTEVAL_TASKS,
    SentencePairs,
    evaluate_senteval_task,
    evaluate_sts,
    read_semeval_sts,
    read_senteval_task,
    read_sick,
    read_stsb,
)
from multissl.views import ViewRequest

if TYPE_CHECKING:
    from multissl.domain import DataConfig, Domain

__all__ = ["PROBES", "ProbeOptions", "run_probes", "dataset_name"]

PROBES = ("linear", "knn", "fraction", "finetune", "health", "frames", "sts", "senteval", "retrieval", "zeroshot")


@dataclass
class ProbeOptions:
    """Settings of every probe (each reads the ones it needs). Unknown keys are errors."""

    batch_size: int = 64
    num_workers: int = 0
    seed: int = 0
    layers: str | int | None = None
    # linear / fraction / frames / senteval
    weight_decays: list[float] | None = None
    learning_rates: list[float] | None = None
    optimizer: str = "lbfgs"
    max_iter: int = 300
    validation_fraction: float = 0.2
    label_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1])
    # knn
    ks: list[int] = field(default_factory=lambda: [20, 200])
    temperature: float = 0.07
    # finetune
    epochs: int = 3
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    # health
    map_method: str = "pca"
    map_path: str | None = None
    # text
    tasks: list[str] = field(default_factory=lambda: ["MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC"])
    folds: int = 10
    text_role: str = "text"
    # cross-modal
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    class_names: list[str] | None = None
    group_column: str | None = None
    text_columns: dict[str, str] = field(default_factory=lambda: {"text": "text"})
    recall_ks: list[int] = field(default_factory=lambda: [1, 5, 10])

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> "ProbeOptions":
        """Checked like a recipe section: unknown keys (with close matches) and wrong types are errors."""
        try:
            return build(cls, dict(options or {}))
        except OptionError as error:
            raise ValueError(error.reason.replace("unknown key", "unknown probe option", 1)) from None

    def linear_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(optimizer=self.optimizer, max_iter=self.max_iter,
                                      validation_fraction=self.validation_fraction, seed=self.seed)
        if self.weight_decays is not None:
            kwargs["weight_decays"] = tuple(self.weight_decays)
        if self.learning_rates is not None:
            kwargs["learning_rates"] = tuple(self.learning_rates)
        return kwargs


def dataset_name(data: "DataConfig | None") -> str:
    """What tables call a dataset: a local path's file/folder name, or the Hub id (+ subset)."""
    if data is None:
        return "-"
    path = Path(data.path)
    name = path.name if path.exists() or "*" in data.path else data.path
    return f"{name}:{data.subset}" if data.subset else name


class _Run:
    """One run_probes call: the inputs, and features extracted at most once per (data, kind)."""

    def __init__(self, encoder, domain, train_data, test_data, options, device, text_encoder, text_domain):
        self.encoder, self.domain = encoder, domain
        self.train_data, self.test_data = train_data, test_data
        self.options, self.device = options, device
        self.text_encoder, self.text_domain = text_encoder, text_domain
        self.cache: dict[tuple[str, bool], ExtractedFeatures] = {}
        self.learned_layer_weights: list[float] | None = None
        self.skipped: dict[str, int] = {}

    def data(self, which: str) -> "DataConfig":
        data = self.train_data if which == "train" else self.test_data
        if data is None:
            raise ValueError(f"this probe needs {which} data (pass {which}_data / --{'data' if which == 'train' else 'test-data'})")
        return data

    def features(self, which: str, sequences: bool = False) -> ExtractedFeatures:
        key = (which, sequences)
        if key not in self.cache:
            options = self.options
            dataset = self.domain.load(self.data(which))
            self.cache[key] = extract_from_dataset(
                self.encoder, self.domain, dataset, options.batch_size, options.num_workers, self.device,
                sequences=sequences, hidden_states=options.layers is not None, seed=options.seed,
            )
            self.skipped[which] = self.cache[key].skipped
        return self.cache[key]

    def labelled(self, which: str) -> tuple[Tensor, Tensor]:
        """(features, labels) for probes that train: see :meth:`representation`."""
        extracted = self.features(which)
        if extracted.labels is None:
            raise ValueError(f"the {which} data has no labels; map the label column (columns: label=...)")
        return self.representation(extracted, trainable=True), extracted.labels.to(self.device or "cpu")

    def representation(self, extracted: ExtractedFeatures, trainable: bool) -> Tensor:
        """[N, D] features, or [N, L, D] layer stacks for probes that learn the layer weights, on
        the run's device (probes fit there: GPU when the encoder ran on one)."""
        layers = self.options.layers
        if layers is None:
            features = extracted.pooled
        elif layers == "weighted":
            features = extracted.layers if trainable else combine_layers(extracted.layers, self.learned_layer_weights or "mean")
        else:
            features = combine_layers(extracted.layers, layers)
        return features.to(self.device or "cpu")

    def details(self, **extra: Any) -> dict[str, Any]:
        return {"skipped_samples": dict(self.skipped), "layers": self.options.layers, **extra}


# ----------------------------------------------------------------------------------------------
# one function per probe


def _linear(run: _Run) -> list[ProbeResult]:
    x_train, y_train = run.labelled("train")
    x_test, y_test = run.labelled("test")
    result = linear_probe(x_train, y_train, x_test, y_test, **run.options.linear_kwargs())
    if result.layer_weights is not None:
        run.learned_layer_weights = result.layer_weights
    return [ProbeResult("linear", dataset_name(run.test_data), "accuracy", result.accuracy, run.test_data.split,
                        run.details(**result.to_dict()))]


def _knn(run: _Run) -> list[ProbeResult]:
    train, test = run.features("train"), run.features("test")
    if train.labels is None or test.labels is None:
        raise ValueError("kNN needs labels on both train and test data (columns: label=...)")
    accuracies = knn_classify(run.representation(train, False), train.labels.to(run.device or "cpu"),
                              run.representation(test, False), test.labels, ks=run.options.ks,
                              temperature=run.options.temperature)
    return [ProbeResult(f"knn (k={k})", dataset_name(run.test_data), "accuracy", accuracy, run.test_data.split,
                        run.details(k=k, temperature=run.options.temperature, num_train=len(train.labels)))
            for k, accuracy in accuracies.items()]


def _fraction(run: _Run) -> list[ProbeResult]:
    x_train, y_train = run.labelled("train")
    x_test, y_test = run.labelled("test")
    results = []
    for fraction in run.options.label_fractions:
        rows = class_balanced_subset(y_train.cpu(), fraction, run.options.seed).to(y_train.device)
        result = linear_probe(x_train[rows], y_train[rows], x_test, y_test,
                              num_classes=int(max(y_train.max(), y_test.max())) + 1, **run.options.linear_kwargs())
        results.append(ProbeResult(f"linear ({fraction:.0%} labels)", dataset_name(run.test_data), "accuracy",
                                   result.accuracy, run.test_data.split, run.details(label_fraction=fraction, **result.to_dict())))
    return results


def _finetune(run: _Run) -> list[ProbeResult]:
    options, domain = run.options, run.domain
    train_set = domain.load(run.data("train"))
    names = run.options.class_names or class_names_of(train_set)
    if names:
        num_classes = len(names)
    else:  # no ClassLabel column: one pass over the labels (collation only, no encoder)
        labels = [batch["labels"] for batch in _loader(domain, train_set, options) if batch.get("labels") is not None]
        if not labels:
            raise ValueError("finetune needs labels in the train data (columns: label=...)")
        num_classes = int(torch.cat(labels).max()) + 1
    encoder = copy.deepcopy(run.encoder)  # later probes in this call still see the frozen encoder

    def plain_inputs(batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        return domain.make_views(batch, ViewRequest("plain"), generator)["inputs"]

    result = fine_tune(encoder, plain_inputs, _loader(domain, train_set, options, shuffle=True), num_classes,
                       test_batches=_LoadWhenIterated(domain, run.data("test"), options), epochs=options.epochs,
                       learning_rate=options.learning_rate, head_learning_rate=options.head_learning_rate,
                       seed=options.seed, device=run.device)
    return [ProbeResult("finetune", dataset_name(run.test_data), "accuracy", result.accuracy, run.test_data.split,
                        run.details(epochs=options.epochs, learning_rate=options.learning_rate,
                                    epoch_losses=result.epoch_losses, skipped_during_finetune=result.skipped_samples))]


class _LoadWhenIterated:
    """Test batches loaded only when iterated: domains may keep per-load state (column mapping)
    that must not change while the train set is still being read."""

    def __init__(self, domain: "Domain", data: "DataConfig", options: ProbeOptions) -> None:
        self.domain, self.data, self.options = domain, data, options

    def __iter__(self):
        return iter(_loader(self.domain, self.domain.load(self.data), self.options))


def _loader(domain: "Domain", dataset: Any, options: ProbeOptions, shuffle: bool = False):
    generator = torch.Generator().manual_seed(options.seed)
    return torch.utils.data.DataLoader(dataset, batch_size=options.batch_size, shuffle=shuffle, generator=generator,
                                       num_workers=options.num_workers, collate_fn=domain.collate)


def _health(run: _Run) -> list[ProbeResult]:
    which = "test" if run.test_data is not None else "train"
    extracted = run.features(which)
    z = run.representation(extracted, trainable=False)
    data = run.data(which)
    values = {"effective_rank": effective_rank(z), "uniformity": uniformity(z) if len(z) > 1 else float("nan"),
              "embedding_std": float(embedding_std(z).mean())}
    details = run.details(ideal_embedding_std=z.shape[1] ** -0.5, dim=z.shape[1], samples=z.shape[0])
    if run.options.map_path:
        names = run.options.class_names or class_names_of(run.domain.load(data))
        details["map"] = str(save_embedding_map(z, extracted.labels, run.options.map_path, run.options.map_method, names))
    return [ProbeResult("health", dataset_name(data), metric, value, data.split, details) for metric, value in values.items()]


def _frames(run: _Run) -> list[ProbeResult]:
    train, test = run.features("train", sequences=True), run.features("test", sequences=True)
    for which, extracted in (("train", train), ("test", test)):
        if extracted.frame_labels is None:
            raise ValueError(f"the {which} batches carry no 'frame_labels'; the domain must align frame labels to the encoder's frames")
    layers = run.options.layers

    def frames(extracted: ExtractedFeatures) -> Tensor:
        if layers is None:
            return extracted.sequence
        return extracted.layers if layers == "weighted" else combine_layers(extracted.layers, layers)

    result = frame_probe(frames(train), train.frame_labels, train.mask, frames(test), test.frame_labels, test.mask,
                         **run.options.linear_kwargs())
    return [ProbeResult("frames", dataset_name(run.test_data), "frame_accuracy", result.accuracy, run.test_data.split,
                        run.details(**result.to_dict()))]


def _text_embedder(run: _Run):
    if run.options.layers is not None:
        raise ValueError("text probes use Features.pooled; layers must be None for sts/senteval")
    return lambda sentences: embed_texts(run.encoder, run.domain, sentences, run.options.batch_size,
                                         run.options.text_role, run.device)


def read_sts_file(path: str | Path) -> SentencePairs:
    """Pick the STS reader from the file name: SemEval ``STS.input.*`` (gold ``STS.gs.*`` beside it),
    SICK (``SICK*.txt``), else the STS Benchmark layout."""
    path = Path(path)
    if path.name.startswith("STS.input."):
        return read_semeval_sts(path, path.with_name(path.name.replace("STS.input.", "STS.gs.", 1)))
    if path.name.upper().startswith("SICK"):
        return read_sick(path)
    return read_stsb(path)


def _sts(run: _Run) -> list[ProbeResult]:
    data = run.data("test")
    paths = sorted(Path().glob(data.path)) if any(c in data.path for c in "*?[") else [Path(data.path)]
    embed = _text_embedder(run)
    results = []
    for path in paths:
        score = evaluate_sts(embed, read_sts_file(path))
        results.append(ProbeResult("sts", path.name, "spearman_x100", score.pop("spearman_x100"), data.split, score))
    return results


def _senteval(run: _Run) -> list[ProbeResult]:
    root = run.data("test").path
    embed = _text_embedder(run)
    results = []
    for name in run.options.tasks:
        task = read_senteval_task(root, name)
        scores = evaluate_senteval_task(embed, task, folds=run.options.folds, **run.options.linear_kwargs())
        split = "10-fold" if task.protocol == "cv10" else "test"
        for metric in ("accuracy_x100", "f1_x100"):
            if metric in scores:
                value = scores.pop(metric)
                results.append(ProbeResult(f"senteval {task.name}", task.name, metric, value, split, dict(scores)))
    return results


def _text_side(run: _Run) -> tuple[Encoder, "Domain"]:
    if run.text_encoder is None or run.text_domain is None:
        raise ValueError("this cross-modal probe needs text_encoder and text_domain (--text-encoder, --text-domain)")
    return run.text_encoder, run.text_domain


def _joint_space(encoder: Any, other: Any, features: Tensor) -> Tensor:
    """``features`` of ``encoder`` in the space a cross-modal objective trained (its
    ``joint_projection``), when both sides have one; pooled features as they are when neither
    has. One side alone would compare spaces that were never aligned: an error."""
    own, theirs = getattr(encoder, "joint_projection", None), getattr(other, "joint_projection", None)
    if (own is None) != (theirs is None):
        raise ValueError("only one of the two encoders carries a joint projection (joint_projection.safetensors "
                         "beside a CLIP-trained encoder): load both sides from the same cross-modal run")
    return features if own is None else encoder.to_joint_space(features)


def _retrieval(run: _Run) -> list[ProbeResult]:
    """One row per caption in the pairs table; rows sharing ``group_column`` show the same image.

    The image side reads the table with ``test_data.columns`` (e.g. image=image), the text side
    with ``options.text_columns`` (e.g. text=caption): each domain only knows its own roles.
    """
    text_encoder, text_domain = _text_side(run)
    data = run.data("test")
    group_column = run.options.group_column or data.columns.get("image")
    if group_column is None:
        raise ValueError("retrieval needs group_column (or columns: image=...) to know which captions share an image")
    import datasets

    raw = datasets.load_dataset(data.format or _format_of(data.path), data_files=data.path, split=data.split)
    if group_column not in raw.column_names:
        raise ValueError(f"retrieval: group column {group_column!r} not in {data.path} (columns: {raw.column_names})")
    keys = raw[group_column]

    def row_keys(dataset: Any) -> list[Any]:
        # domains keep each row's position in the split as "row_index" (rows may be limited or filtered)
        rows = dataset["row_index"] if "row_index" in dataset.column_names else range(len(dataset))
        return [keys[int(row)] for row in rows]

    image_rows = run.domain.load(data)
    first_row: dict[Any, int] = {}
    for position, key in enumerate(row_keys(image_rows)):
        first_row.setdefault(key, position)
    image_index = {key: i for i, key in enumerate(first_row)}
    text_data = dataclasses.replace(data, columns=dict(run.options.text_columns))
    text_rows = text_domain.load(text_data)
    caption_keys = row_keys(text_rows)
    missing = sorted({str(key) for key in caption_keys if key not in image_index})
    if missing:
        raise ValueError(f"retrieval: captions refer to images the image side did not load: {missing[:5]}")
    text_to_image = torch.tensor([image_index[key] for key in caption_keys])
    images = extract_from_dataset(run.encoder, run.domain, image_rows.select(list(first_row.values())),
                                  run.options.batch_size, run.options.num_workers, run.device)
    texts = extract_from_dataset(text_encoder, text_domain, text_rows, run.options.batch_size,
                                 run.options.num_workers, run.device)
    if images.skipped or texts.skipped:
        raise ValueError(f"retrieval cannot align pairs with skipped rows ({images.skipped} images, {texts.skipped} captions skipped)")
    recalls = retrieval_recall(_joint_space(run.encoder, text_encoder, images.pooled),
                               _joint_space(text_encoder, run.encoder, texts.pooled), text_to_image, ks=run.options.recall_ks)
    details = run.details(images=len(first_row), captions=len(caption_keys))
    return [ProbeResult("retrieval", dataset_name(data), metric, value, data.split, details) for metric, value in recalls.items()]


def _format_of(path: str) -> str:
    """The ``datasets`` builder for a local table from its extension (``data.format`` overrides)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"jsonl": "json", "": "csv"}.get(suffix, suffix)


def _zeroshot(run: _Run) -> list[ProbeResult]:
    text_encoder, text_domain = _text_side(run)
    data = run.data("test")
    test = run.features("test")
    if test.labels is None:
        raise ValueError("zero-shot classification needs labels in the test data (columns: label=...)")
    names = run.options.class_names or class_names_of(run.domain.load(data))
    if not names:
        raise ValueError("zero-shot classification needs class names: a ClassLabel column or options.class_names")
    embed = lambda prompts: _joint_space(text_encoder, run.encoder, embed_texts(
        text_encoder, text_domain, prompts, run.options.batch_size, run.options.text_role, run.device))
    classes = zero_shot_classifier(embed, names, run.options.templates)
    scores = zero_shot_classify(_joint_space(run.encoder, text_encoder, run.representation(test, False)), classes, test.labels)
    return [ProbeResult("zeroshot", dataset_name(data), metric, value, data.split,
                        run.details(templates=len(run.options.templates), classes=len(names)))
            for metric, value in scores.items()]


_PROBE_FUNCTIONS = {
    "linear": _linear, "knn": _knn, "fraction": _fraction, "finetune": _finetune, "health": _health,
    "frames": _frames, "sts": _sts, "senteval": _senteval, "retrieval": _retrieval, "zeroshot": _zeroshot,
}


def run_probes(
    probes: Sequence[str],
    encoder: Encoder,
    domain: "Domain",
    train_data: "DataConfig | None" = None,
    test_data: "DataConfig | None" = None,
    options: ProbeOptions | dict[str, Any] | None = None,
    *,
    device: torch.device | str | None = None,
    text_encoder: Encoder | None = None,
    text_domain: "Domain | None" = None,
) -> list[ProbeResult]:
    """Run ``probes`` (names from :data:`PROBES`, in order) and return their results.

    The encoder stays frozen (``finetune`` works on a copy). ``device`` defaults to the encoder's.
    """
    unknown = [name for name in probes if name not in _PROBE_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}; known: {list(PROBES)}")
    if not isinstance(options, ProbeOptions):
        options = ProbeOptions.from_dict(options)
    if options.layers not in (None, "weighted", "mean") and not isinstance(options.layers, int):
        raise ValueError(f"layers must be None, 'weighted', 'mean' or a layer index, got {options.layers!r}")
    unknown_tasks = [t for t in options.tasks if t.upper().replace("SST-2", "SST2") not in SENTEVAL_TASKS]
    if "senteval" in probes and unknown_tasks:
        raise ValueError(f"unknown SentEval task(s) {unknown_tasks}; known: {sorted(SENTEVAL_TASKS)}")
    run = _Run(encoder, domain, train_data, test_data, options, device, text_encoder, text_domain)
    results: list[ProbeResult] = []
    for name in probes:
        results.extend(_PROBE_FUNCTIONS[name](run))
    return results
