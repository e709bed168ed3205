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

**The teacher folder** (``teacher`` option), written by :func:`save_teacher`::

    config.json, model.safetensors (+ tokenizer/processor)  the teacher encoder's save_pretrained
    head.safetensors                                          {"weight": [C, D], "bias": [C]}
    teacher.json                                              {"format", "num_classes", "dim", "class_names"}

The teacher is read with the student's own model class (``from_pretrained``, safetensors, never
remote code) and wrapped like the student (a copy of the student's encoder wrapper around the
teacher's model), so it may be larger or smaller than the student but must be the same family
(ViT/ConvNeXt/ResNet, BERT/RoBERTa, wav2vec2) and share the student's wrapper settings (pooling,
audio front end): it must have been fine-tuned on the features this domain makes. No multissl
code is needed to build one: fine-tune (``multissl.probes.fine_tune``) and call
:func:`save_teacher`. The teacher's weights are part of the objective's state (a checkpoint holds
the teacher that taught it); they never receive gradients and stay in eval mode (no dropout,
batch norm on running statistics) even when the engine calls ``train()``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig

from multissl.features import Encoder
from multissl.losses import distillation
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = ["Distillation", "save_teacher", "load_teacher", "TEACHER_FORMAT"]

TEACHER_FORMAT = "multissl-distillation-teacher"
_META, _HEAD = "teacher.json", "head.safetensors"


def save_teacher(folder: str | Path, encoder: Encoder, head: nn.Linear,
                 class_names: Sequence[str] | None = None) -> Path:
    """Write a teacher folder (see the module doc): ``encoder.save_pretrained`` + the linear head."""
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise TypeError(f"the teacher head must be an nn.Linear with a bias, got {head!r}")
    if class_names is not None and len(class_names) != head.out_features:
        raise ValueError(f"{len(class_names)} class names for a head with {head.out_features} classes")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(str(folder))
    save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
              str(folder / _HEAD))
    meta = {"format": TEACHER_FORMAT, "num_classes": head.out_features, "dim": head.in_features,
            "class_names": list(class_names) if class_names is not None else None}
    (folder / _META).write_text(json.dumps(meta, indent=2))
    return folder


def load_teacher(folder: str | Path, like: Encoder) -> tuple[Encoder, nn.Linear]:
    """The frozen teacher encoder (wrapped like ``like``) and head from a :func:`save_teacher` folder."""
    folder = Path(folder)
    missing = [name for name in (_META, _HEAD, "config.json") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"teacher folder {folder} lacks {missing}; write it with save_teacher()")
    meta = json.loads((folder / _META).read_text())
    if meta.get("format") != TEACHER_FORMAT:
        raise ValueError(f"{folder / _META} is not a {TEACHER_FORMAT!r} file (format: {meta.get('format')!r})")
    head_state = load_file(str(folder / _HEAD))
    weight, bias = head_state.get("weight"), head_state.get("bias")
    if weight is None or bias is None or weight.dim() != 2 or bias.shape != weight.shape[:1]:
        raise ValueError(f"{folder / _HEAD} must hold weight [C, D] and bias [C], got "
                         f"{ {k: tuple(v.shape) for k, v in head_state.items()} }")
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": bias})

    model_class = type(like.model)
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    if config.model_type != like.model.config.model_type:
        raise ValueError(f"the teacher in {folder} is a {config.model_type!r} model, the student a "
                         f"{like.model.config.model_type!r} ({model_class.__name__}): the teacher must be the "
                         "student's family (any size)")
    # the student's model was built without a pooler where its family allows (no objective trains
    # one); the teacher's is built the same way, so every weight it has comes from the folder
    extra = {"add_pooling_layer": False} if getattr(like.model, "pooler", "none") is None else {}
    model, report = model_class.from_pretrained(str(folder), config=config, output_loading_info=True, **extra)
    problems = {key: sorted(map(str, report.get(key) or ()))
                for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()):
        raise ValueError(f"teacher weights in {folder} do not fit a {model_class.__name__}: "
                         f"{ {k: v[:5] for k, v in problems.items() if v} }")
    # a copy of the student's wrapper around the teacher's model (and the shared processor)
    memo: dict[int, Any] = {id(like.model): model}
    if like.processor is not None:
        memo[id(like.processor)] = like.processor
    teacher = copy.deepcopy(like, memo)
    teacher.dim = head.in_features
    for module in (teacher, head):
        module.requires_grad_(False)
        module.eval()
    return teacher, head


class Distillation(Objective):
    name = "distillation"

    def __init__(self, encoder: Encoder, *, teacher: str | None = None, temperature: float = 1.0,
                 augment: bool = True) -> None:
        """``teacher``: a folder written by :func:`save_teacher`; ``temperature``: tau of eq. 2;
        ``augment``: student and teacher see one augmented view (else the plain one)."""
        super().__init__()
        if teacher is None:
            raise ValueError("distillation needs options.teacher: a folder written by "
                             "multissl.objectives.distillation.save_teacher (fine-tuned encoder + linear head)")
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
