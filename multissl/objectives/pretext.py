"""Classification pretext tasks: which transformation made these parts?

One design serves three papers. The domain cuts or turns each image into ``parts`` and draws a
label (the ``pretext`` view); every part goes through the same encoder (a siamese network), each
part's pooled features through a shared per-part layer, and the concatenation, in the order the
label refers to, through a classifier:

    parts[k] -> encoder f (shared) -> h_k [B, D] -> part layer (Linear + ReLU) -> g_k [B, P]
    cat(g_1 .. g_K) [B, K P] -> classifier MLP -> logits [B, C] -> cross-entropy with labels

- Rotation (Gidaris, Singh, Komodakis 2018, "Unsupervised Representation Learning by Predicting
  Image Rotations"): K = 1 part, C = 4 rotations; by default all four rotations of every image
  are in the batch, the paper's best setting (``all_rotations``).
- Jigsaw (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by Solving
  Jigsaw Puzzles"): K = 9 shuffled tiles, C = the size of the permutation set (the domain's
  ``pretext.jigsaw_permutations``, 100 by default; the paper's best is 1000). The part layer is
  the paper's per-tile fc6, the classifier its fc7 + fc8.
- Relative position (Doersch, Gupta, Efros 2015, "Unsupervised Visual Representation Learning by
  Context Prediction"): K = 2 patches (centre, neighbour), C = 8 neighbour positions; the part
  layer is the paper's per-patch fc6 ("late fusion"), the classifier fc7 + fc8.

The loss is the mean cross-entropy over the (global) batch. Shortcut guards (gaps and jitter
between tiles, per-tile normalisation) are the domain's job. Logs: ``accuracy`` of the batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl.distributed import global_mean
from multissl.features import Encoder
from multissl.modules import ProjectionHead
from multissl.features import encode_views
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = ["PretextClassification", "RotationPrediction", "JigsawPuzzle", "RelativePosition"]


class PretextClassification(Objective):
    """Shared machinery of the three tasks; subclasses fix ``task`` and the number of parts."""

    task: ClassVar[str]
    num_parts: ClassVar[int]

    def __init__(self, encoder: Encoder, num_classes: int, *, part_dim: int, hidden_dim: int,
                 view_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("part_dim", part_dim), ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.part_layer = nn.Sequential(nn.Linear(encoder.dim, part_dim), nn.ReLU(inplace=True))
        self.classifier = ProjectionHead(self.num_parts * part_dim, hidden_dim, num_classes, num_layers=2)
        self.view_options = {"task": self.task, **(view_options or {})}

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("pretext", dict(self.view_options)),)

    def logits(self, parts: list[dict[str, Tensor]]) -> Tensor:
        """Class scores [B, num_classes] of ``num_parts`` parts, each an Inputs dict of B rows."""
        if len(parts) != self.num_parts:
            raise ValueError(f"{self.name} classifies {self.num_parts} part(s) per example, the view has {len(parts)}")
        # all parts share one encoder call where their shapes agree (one pass, shared norm statistics)
        features = encode_views(self.encoder, parts)
        return self.classifier(torch.cat([self.part_layer(f.pooled) for f in features], dim=1))

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        if int(views["num_classes"]) != self.num_classes:
            raise ValueError(
                f"the domain's {self.task} view has {views['num_classes']} classes, this objective was built for "
                f"{self.num_classes}: {self._class_count_hint()}"
            )
        logits = self.logits(views["parts"])
        labels = views["labels"]
        loss = global_mean(F.cross_entropy(logits.float(), labels, reduction="none"))
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return ObjectiveOutput(loss=loss, logs={"accuracy": accuracy})

    def _class_count_hint(self) -> str:
        return "the class count is fixed by the task"


class RotationPrediction(PretextClassification):
    name = "rotation"
    task = "rotation"
    num_parts = 1

    def __init__(self, encoder: Encoder, *, all_rotations: bool = True, part_dim: int = 512,
                 hidden_dim: int = 512) -> None:
        """``all_rotations``: each batch holds all four rotations of every image (4 B rows)."""
        super().__init__(encoder, 4, part_dim=part_dim, hidden_dim=hidden_dim,
                         view_options={"all_rotations": all_rotations})


class JigsawPuzzle(PretextClassification):
    name = "jigsaw"
    task = "jigsaw"
    num_parts = 9

    def __init__(self, encoder: Encoder, *, num_permutations: int = 100, part_dim: int = 512,
                 hidden_dim: int = 4096) -> None:
        """``num_permutations`` must equal the image domain's ``pretext.jigsaw_permutations``.
        Widths are the paper's fc6 (512 per tile) and fc7 (4096)."""
        super().__init__(encoder, num_permutations, part_dim=part_dim, hidden_dim=hidden_dim)

    def _class_count_hint(self) -> str:
        return ("set this objective's num_permutations to the image domain's pretext.jigsaw_permutations "
                "(both choose the permutation set)")


class RelativePosition(PretextClassification):
    name = "relative_position"
    task = "relative_position"
    num_parts = 2

    def __init__(self, encoder: Encoder, *, part_dim: int = 512, hidden_dim: int = 4096) -> None:
        """``hidden_dim`` is Doersch et al.'s fc7 (4096); their per-patch fc6 is 4096 wide too,
        ``part_dim`` defaults to 512 (Noroozi's fc6) to keep the pair classifier small."""
        super().__init__(encoder, 8, part_dim=part_dim, hidden_dim=hidden_dim)
