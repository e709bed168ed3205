"""Classification probes on frozen features: linear (logistic regression), label fractions, and
full fine-tuning.

Linear evaluation protocol (Zhang et al. 2016 "colorization as a proxy task"; Kolesnikov et al.
2019; SimCLR, Chen et al. 2020, Appendix B.5; CLIP, Radford et al. 2021, Appendix A.3): a
multinomial logistic regression trained on frozen features, its L2 penalty (and, with Adam, its
learning rate) chosen on a validation split carved from the TRAIN features, then refit on all train
features and scored once on the test features. Features are standardised with statistics of the
train features only (CLIP and SentEval do the same), which makes one weight-decay grid fit every
encoder.

Layer weighting (SUPERB, Yang et al. 2021; s3prl's ``Featurizer``): pass features [N, L, D] (one
slice per hidden layer) instead of [N, D] and the probe learns a softmax over the L layers jointly
with the head.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Standardizer",
    "LayerWeighting",
    "LinearClassifier",
    "LinearProbeResult",
    "train_linear_classifier",
    "carve_validation_split",
    "linear_probe",
    "class_balanced_subset",
    "FineTuneResult",
    "fine_tune",
]


# ----------------------------------------------------------------------------------------------
# small stateful parts


class Standardizer(nn.Module):
    """``(x - mean) / std`` per feature, statistics from the train features only.

    Works on [N, D] and on layer stacks [N, L, D] (statistics per layer and dimension, the role
    s3prl's per-layer ``layer_norm`` plays before the weighted sum). Constant features get std 1
    so they map to 0 instead of inf.
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @classmethod
    def fit(cls, features: Tensor) -> "Standardizer":
        mean = features.mean(dim=0)
        std = features.std(dim=0, unbiased=False)
        return cls(mean, torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, features: Tensor) -> Tensor:
        return (features - self.mean) / self.std


class LayerWeighting(nn.Module):
    """SUPERB's weighted sum of hidden layers: ``sum_l softmax(w)_l h_l``, [N, L, D] -> [N, D].

    ``w`` starts at zero (a plain average of the layers), as in s3prl's ``Featurizer``.
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    @property
    def weights(self) -> Tensor:
        return self.logits.softmax(dim=0)

    def forward(self, hidden: Tensor) -> Tensor:
        if hidden.dim() != 3 or hidden.shape[1] != self.logits.numel():
            raise ValueError(f"LayerWeighting over {self.logits.numel()} layers takes [N, L, D], got {tuple(hidden.shape)}")
        return torch.einsum("l,nld->nd", self.weights, hidden)


class LinearClassifier(nn.Module):
    """standardise -> (optional) layer weighting -> linear layer to class logits."""

    def __init__(self, standardizer: Standardizer, dim: int, num_classes: int, num_layers: int | None = None) -> None:
        super().__init__()
        self.standardizer = standardizer
        self.layer_weighting = LayerWeighting(num_layers) if num_layers is not None else None
        self.linear = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.linear.weight)  # zero start: logistic regression is convex, and this is deterministic
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        x = self.standardizer(features)
        if self.layer_weighting is not None:
            x = self.layer_weighting(x)
        return self.linear(x)

    @torch.no_grad()
    def predict(self, features: Tensor, chunk_size: int = 65536) -> Tensor:
        return torch.cat([self(chunk).argmax(dim=1) for chunk in features.split(chunk_size)])


# ----------------------------------------------------------------------------------------------
# checks and splits


def _check_features(features: Tensor, labels: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(features, Tensor) or features.dim() not in (2, 3):
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} features must be [N, D] or layer stacks [N, L, D], got {shape}")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"{name} labels must be [N] = [{features.shape[0]}], got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} labels must be integer class ids, got dtype {labels.dtype}")
    if features.shape[0] == 0:
        raise ValueError(f"{name} features are empty")
    if not torch.isfinite(features).all():
        bad = (~torch.isfinite(features)).flatten(1).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} features hold NaN/inf (rows {bad} ...)")
    if labels.min() < 0:
        raise ValueError(f"{name} labels must be >= 0, found {int(labels.min())}")
    return features.float(), labels.long()


def carve_validation_split(
    labels: Tensor, fraction: float = 0.2, seed: int = 0, groups: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Indices (train, validation) of a seeded validation split carved from the train set.

    Stratified: each class gives ``round(fraction * n_c)`` rows (one at least, when it has two
    or more) so rare classes stay in both parts. With ``groups`` [N] (utterance or speaker ids for
    frame probes) whole groups go to one side instead, because frames of one utterance are not
    independent samples.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    if groups is not None:
        unique_groups = torch.unique(groups)
        if len(unique_groups) < 2:
            raise ValueError("a grouped validation split needs at least 2 groups")
        shuffled = unique_groups[torch.randperm(len(unique_groups), generator=generator)]
        count = min(len(unique_groups) - 1, max(1, round(fraction * len(unique_groups))))
        is_validation = torch.isin(groups, shuffled[:count])
        return (~is_validation).nonzero().flatten(), is_validation.nonzero().flatten()
    validation = []
    for value in torch.unique(labels):
        rows = (labels == value).nonzero().flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        count = round(fraction * len(rows)) if len(rows) >= 2 else 0
        validation.append(rows[: max(count, 1 if len(rows) >= 2 else 0)])
    is_validation = torch.zeros(len(labels), dtype=torch.bool)
    is_validation[torch.cat(validation)] = True
    return (~is_validation).nonzero().flatten(), is_validation.nonzero().flatten()


def class_balanced_subset(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Indices of a seeded, class-balanced ``fraction`` of the rows (the 1% / 10% label regimes).

    Each class keeps ``max(1, round(fraction * n_c))`` rows, as the ImageNet 1%/10% subsets of
    SimCLR (Chen et al. 2020, §B.5) keep the class balance. Sorted indices.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    labels = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for value in torch.unique(labels):
        rows = (labels == value).nonzero().flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        chosen.append(rows[: max(1, round(fraction * len(rows)))])
    return torch.cat(chosen).sort().values


# ----------------------------------------------------------------------------------------------
# training one head


def train_linear_classifier(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    learning_rate: float,
    weight_decay: float,
    optimizer: str = "lbfgs",
    max_iter: int = 300,
    epochs: int = 100,
    batch_size: int | None = None,
    seed: int = 0,
) -> LinearClassifier:
    """Fit a :class:`LinearClassifier` on features [N, D] or [N, L, D] and labels [N].

    Objective: mean cross-entropy + ``weight_decay / 2 * ||W||^2`` (the bias and the layer
    weights are not penalised), the same coupled L2 penalty for both optimisers, so a chosen
    ``weight_decay`` means the same thing whichever fits it.

    ``optimizer``: "lbfgs" (full batch, strong-Wolfe line search, ``max_iter`` iterations;
    ``learning_rate`` is its initial step, 1 is right for it) or "adam" (``epochs`` passes in
    mini-batches of ``batch_size``, full batch when None, shuffled by a generator seeded with
    ``seed``). Deterministic for a given seed.
    """
    num_layers = features.shape[1] if features.dim() == 3 else None
    classifier = LinearClassifier(Standardizer.fit(features), features.shape[-1], num_classes, num_layers)
    classifier = classifier.to(features.device)

    def objective(x: Tensor, y: Tensor) -> Tensor:
        penalty = 0.5 * weight_decay * classifier.linear.weight.pow(2).sum()
        return F.cross_entropy(classifier(x), y) + penalty

    if optimizer == "lbfgs":
        lbfgs = torch.optim.LBFGS(
            classifier.parameters(), lr=learning_rate, max_iter=max_iter, history_size=10,
            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9,
        )

        def closure() -> Tensor:
            lbfgs.zero_grad()
            loss = objective(features, labels)
            loss.backward()
            return loss

        lbfgs.step(closure)
    elif optimizer == "adam":
        adam = torch.optim.Adam(classifier.parameters(), lr=learning_rate)
        generator = torch.Generator().manual_seed(seed)
        size = batch_size or len(labels)
        for _ in range(epochs):
            order = torch.randperm(len(labels), generator=generator).to(features.device)
            for rows in order.split(size):
                adam.zero_grad()
                objective(features[rows], labels[rows]).backward()
                adam.step()
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'lbfgs' or 'adam'")
    classifier.eval()
    return classifier


def _accuracy(classifier: LinearClassifier, features: Tensor, labels: Tensor) -> float:
    return float((classifier.predict(features) == labels).float().mean())


# ----------------------------------------------------------------------------------------------
# the protocol


#: default grids. CLIP sweeps the L2 strength over a log grid; 1e-6..1e-1 covers standardised
#: features from a collapsed encoder (needs strong penalty) to a good one (weak penalty).
DEFAULT_WEIGHT_DECAYS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_LEARNING_RATES = {"lbfgs": (1.0,), "adam": (1e-3, 1e-2, 1e-1)}


@dataclass
class LinearProbeResult:
    """accuracy on test (fraction in [0, 1]); the chosen hyper-parameters; validation accuracy
    of every setting ("lr=..., wd=..." -> accuracy); the refit classifier and its test predictions."""

    accuracy: float
    learning_rate: float
    weight_decay: float
    validation_scores: dict[str, float]
    validation_accuracy: float
    train_accuracy: float
    num_classes: int
    num_train: int
    num_test: int
    layer_weights: list[float] | None = None
    predictions: Tensor | None = field(default=None, repr=False)
    classifier: LinearClassifier | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the classifier and predictions)."""
        return {
            "accuracy": self.accuracy,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "validation_accuracy": self.validation_accuracy,
            "validation_scores": self.validation_scores,
            "train_accuracy": self.train_accuracy,
            "num_classes": self.num_classes,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "layer_weights": self.layer_weights,
        }


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int | None = None,
    validation: tuple[Tensor, Tensor] | None = None,
    validation_fraction: float = 0.2,
    groups: Tensor | None = None,
    learning_rates: Sequence[float] | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    optimizer: str = "lbfgs",
    max_iter: int = 300,
    epochs: int = 100,
    batch_size: int | None = None,
    seed: int = 0,
) -> LinearProbeResult:
    """Linear evaluation of frozen features (module docstring has the protocol and sources).

    train_features/test_features: [N, D], or [N, L, D] to learn a softmax over L layers too.
    train_labels/test_labels: [N] integer class ids. ``validation``: an explicit (features,
    labels) split (e.g. SST-2 dev) used instead of carving ``validation_fraction`` of train;
    ``groups`` [N_train] carves by group (see :func:`carve_validation_split`). Test data is never
    looked at before the final refit. Selection: best validation accuracy; ties go to the
    stronger weight decay, then to the smaller learning rate (the simpler model).
    """
    train_features, train_labels = _check_features(train_features, train_labels, "train")
    test_features, test_labels = _check_features(test_features, test_labels, "test")
    if train_features.shape[1:] != test_features.shape[1:]:
        raise ValueError(f"train features {tuple(train_features.shape)} and test features {tuple(test_features.shape)} differ in width")
    seen_max = int(max(train_labels.max(), test_labels.max()))
    num_classes = num_classes if num_classes is not None else seen_max + 1
    if seen_max >= num_classes:
        raise ValueError(f"labels go up to {seen_max} but num_classes is {num_classes}")
    learning_rates = tuple(learning_rates) if learning_rates is not None else DEFAULT_LEARNING_RATES.get(optimizer, (1.0,))
    fit = dict(optimizer=optimizer, max_iter=max_iter, epochs=epochs, batch_size=batch_size, seed=seed)

    if validation is not None:
        fit_features, fit_labels = train_features, train_labels
        validation_features, validation_labels = _check_features(*validation, "validation")
    else:
        fit_rows, validation_rows = carve_validation_split(train_labels.cpu(), validation_fraction, seed, groups)
        fit_rows, validation_rows = fit_rows.to(train_features.device), validation_rows.to(train_features.device)
        fit_features, fit_labels = train_features[fit_rows], train_labels[fit_rows]
        validation_features, validation_labels = train_features[validation_rows], train_labels[validation_rows]

    scores: dict[tuple[float, float], float] = {}
    for learning_rate, weight_decay in itertools.product(learning_rates, weight_decays):
        classifier = train_linear_classifier(fit_features, fit_labels, num_classes, learning_rate, weight_decay, **fit)
        scores[(learning_rate, weight_decay)] = _accuracy(classifier, validation_features, validation_labels)
    best_lr, best_wd = max(scores, key=lambda key: (scores[key], key[1], -key[0]))

    # Refit on every train row (the carved validation rows included), then score the test set once.
    classifier = train_linear_classifier(train_features, train_labels, num_classes, best_lr, best_wd, **fit)
    predictions = classifier.predict(test_features)
    layer_weights = (
        classifier.layer_weighting.weights.detach().cpu().tolist() if classifier.layer_weighting is not None else None
    )
    return LinearProbeResult(
        accuracy=float((predictions == test_labels).float().mean()),
        learning_rate=best_lr,
        weight_decay=best_wd,
        validation_scores={f"lr={lr:g}, wd={wd:g}": score for (lr, wd), score in scores.items()},
        validation_accuracy=scores[(best_lr, best_wd)],
        train_accuracy=_accuracy(classifier, train_features, train_labels),
        num_classes=num_classes,
        num_train=len(train_labels),
        num_test=len(test_labels),
        layer_weights=layer_weights,
        predictions=predictions,
        classifier=classifier,
    )


# ----------------------------------------------------------------------------------------------
# full fine-tuning


@dataclass
class FineTuneResult:
    """Per-epoch mean training loss, test accuracy (when test batches were given), the head."""

    epoch_losses: list[float]
    accuracy: float | None
    head: nn.Linear = field(repr=False)
    skipped_samples: int = 0


def fine_tune(
    encoder: nn.Module,
    make_inputs: Callable[[dict[str, Any], torch.Generator], dict[str, Tensor]],
    train_batches: Iterable[dict[str, Any]],
    num_classes: int,
    *,
    test_batches: Iterable[dict[str, Any]] | None = None,
    epochs: int = 3,
    learning_rate: float = 1e-4,
    head_learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> FineTuneResult:
    """Fine-tune ``encoder`` (unfrozen, changed in place) with a linear head on its pooled features.

    The semi-supervised protocol of SimCLR (Chen et al. 2020, §B.5) kept simple: AdamW, constant
    small learning rate for the encoder and a larger one for the fresh head (zero-initialised),
    ``epochs`` passes, cross-entropy. ``train_batches`` is re-iterated each epoch (a DataLoader
    over ``domain.collate``); each batch carries "labels" [B]. ``make_inputs(batch, generator)``
    returns the encoder inputs, e.g. a domain's augmented or plain view:
    ``lambda b, g: domain.make_views(b, ViewRequest("plain"), g)["inputs"]``.
    Test accuracy uses ``make_inputs`` too, in eval mode without gradients (pass a callable that
    makes plain views if training used augmented ones).
    """
    from multissl.domain import move_to_device

    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    encoder.to(device)
    head = nn.Linear(encoder.dim, num_classes).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in encoder.parameters() if p.requires_grad], "lr": learning_rate},
            {"params": head.parameters(), "lr": head_learning_rate},
        ],
        weight_decay=weight_decay,
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    epoch_losses, skipped = [], 0
    for _ in range(epochs):
        encoder.train()
        total, count = 0.0, 0
        for batch in train_batches:
            skipped += int(batch.get("skipped", 0))
            batch = move_to_device(batch, device)
            if batch.get("labels") is None:
                raise ValueError("fine_tune: a training batch has no 'labels'; the dataset needs a label column")
            loss = F.cross_entropy(head(encoder(**make_inputs(batch, generator)).pooled), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(batch["labels"]), count + len(batch["labels"])
        epoch_losses.append(total / max(count, 1) if count else math.nan)

    accuracy = None
    if test_batches is not None:
        encoder.eval()
        correct, count = 0, 0
        with torch.no_grad():
            for batch in test_batches:
                skipped += int(batch.get("skipped", 0))
                batch = move_to_device(batch, device)
                predictions = head(encoder(**make_inputs(batch, generator)).pooled).argmax(dim=1)
                correct += int((predictions == batch["labels"]).sum())
                count += len(batch["labels"])
        accuracy = correct / count if count else math.nan
    return FineTuneResult(epoch_losses=epoch_losses, accuracy=accuracy, head=head, skipped_samples=skipped)
