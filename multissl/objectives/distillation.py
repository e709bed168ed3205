"""SimCLRv2 step 3: distil a fine-tuned teacher into a student on unlabeled data.

Chen, Kornblith, Swersky, Norouzi, Hinton 2020, "Big Self-Supervised Models are Strong
Semi-Supervised Learners" (arXiv:2006.10029, section 2, eq. 2). After self-supervised
pre-training (step 1) and fine-tuning on the few labels (step 2), the fine-tuned network labels
the unlabeled data and a student (smaller, or the same architecture: self-distillation) learns
to reproduce its class distribution:

    x -> teacher encoder -> pooled -> teacher head -> teacher logits      (frozen, eval mode)
    x -> student encoder -> pooled -> student head (linear) -> student logits
    loss = distillation(student logits, teacher logits, tau)
         = mean over the (global) batch of -sum_y P_T(y|x; tau) log P_S(y|x; tau)

Both networks see the same input (one ``augmented`` view, or the ``plain`` one with
``augment=False``; SimCLRv2 distils with the fine-tuning augmentations, crop and flip).

The teacher folder (written by :func:`multissl.teacher.save_teacher`: fine-tune with
``multissl.probes.fine_tune`` and save) holds the fine-tuned network and its linear classifier; the
teacher's weights are part of the objective's state (a checkpoint holds the teacher that taught it);
they never receive gradients and stay in eval mode (no dropout, batch norm on running statistics)
even when the engine calls ``train()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from multissl.features import Encoder
from multissl.losses import distillation
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.teacher import load_teacher
from multissl.views import ViewRequest

__all__ = ["Distillation"]


class Distillation(Objective):
    name = "distillation"

    def __init__(self, encoder: Encoder, *, teacher: str | None = None, temperature: float = 1.0,
                 augment: bool = True) -> None:
        """``teacher``: a folder written by :func:`multissl.teacher.save_teacher`; ``temperature``: tau of eq. 2;
        ``augment``: student and teacher see one augmented view (else the plain one)."""
        super().__init__()
        if teacher is None:
            raise ValueError("distillation needs options.teacher: a folder written by "
                             "multissl.teacher.save_teacher (fine-tuned encoder + linear head)")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.encoder = encoder
        self.teacher_encoder, self.teacher_head = load_teacher(teacher, encoder)
        self.head = nn.Linear(encoder.dim, self.teacher_head.out_features)
        self.temperature, self.augment = temperature, augment

    def train(self, mode: bool = True) -> "Distillation":
        super().train(mode)
        self.teacher_encoder.eval()  # the teacher labels; it never trains (no dropout, frozen BN)
        self.teacher_head.eval()
        return self

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("augmented", {"num_views": 1}) if self.augment else ViewRequest("plain"),)

    @torch.no_grad()
    def teacher_logits(self, inputs: dict[str, Tensor]) -> Tensor:
        """The teacher's class scores [B, C] (no gradient)."""
        pooled = self.teacher_encoder(**inputs).pooled
        if pooled.shape[-1] != self.teacher_head.in_features:
            raise ValueError(f"the teacher encoder makes {pooled.shape[-1]}-d features, its head takes "
                             f"{self.teacher_head.in_features}: the folder's encoder and head do not belong together")
        return self.teacher_head(pooled)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        inputs = views["views"][0] if self.augment else views["inputs"]
        teacher_logits = self.teacher_logits(inputs)
        student_logits = self.head(self.encoder(**inputs).pooled)
        loss = distillation(student_logits, teacher_logits, self.temperature)
        agreement = (student_logits.detach().argmax(dim=1) == teacher_logits.argmax(dim=1)).float().mean()
        return ObjectiveOutput(loss=loss, logs={"teacher_agreement": agreement},
                               embeddings=(student_logits, teacher_logits))
