"""Fine-tuned networks as teachers (SimCLRv2, Chen et al. 2020b, section 2): the encoder, the
first layers of its projection head where fine-tuning started from the middle of the head, and a
linear classifier, written as a folder and read back exactly.

**The teacher folder**, written by :func:`save_teacher`::

    config.json, model.safetensors (+ tokenizer/processor)  the encoder's save_pretrained
    projection_head.safetensors, projection_head.json         the head layers the classifier sits on
                                                              (only for a :class:`HeadedEncoder`)
    head.safetensors                                          {"weight": [C, D], "bias": [C]}
    teacher.json                                              {"format", "num_classes", "dim", "encoder_dim",
                                                               "class_names"}

The teacher is read with the student's own model class (``from_pretrained``, safetensors, never
remote code) and wrapped like the student (a copy of the student's encoder wrapper around the
teacher's model), so it may be larger or smaller than the student but must be the same family
(ViT/ConvNeXt/ResNet, BERT/RoBERTa, wav2vec2) and share the student's wrapper settings (pooling,
audio front end). A folder whose head layers were not saved, or whose classifier does not fit the
features it would read, is refused: the teacher's logits after the round trip equal the fine-tuned
network's, or loading fails.
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

from multissl.features import Encoder, Features
from multissl.modules import ProjectionHead

__all__ = ["HeadedEncoder", "save_teacher", "load_teacher", "TEACHER_FORMAT"]

_PROJECTION_WEIGHTS, _PROJECTION_META = "projection_head.safetensors", "projection_head.json"


class HeadedEncoder(Encoder):
    """An encoder whose pooled features pass through the first ``up_to`` layers of a projection
    head (SimCLRv2's fine-tuning network: the encoder and the head's first layer), sharing the
    head's weights: ``pooled`` [B, dim] with dim the width after layer ``up_to``.

    ``save_pretrained`` writes the encoder as ``transformers`` does plus those head layers
    (``projection_head.safetensors`` and the head's shape in ``projection_head.json``), so
    :func:`load_teacher` rebuilds exactly this network.
    """

    def __init__(self, encoder: Encoder, head: ProjectionHead, up_to: int) -> None:
        super().__init__()
        head._check_up_to(up_to)
        self.encoder, self.head, self.up_to = encoder, head, up_to
        self.dim = head.hidden_dim if up_to < head.num_layers else head.out_dim
        self.processor, self.pooling, self.geometry = encoder.processor, encoder.pooling, encoder.geometry

    @property
    def model(self) -> nn.Module:  # type: ignore[override]  # the wrapped encoder's; registered once
        return self.encoder.model

    def forward(self, **inputs: Tensor) -> Features:
        features = self.encoder(**inputs)
        return Features(pooled=self.head(features.pooled, up_to=self.up_to), sequence=features.sequence,
                        mask=features.mask, hidden_states=features.hidden_states)

    def save_pretrained(self, folder: str, **kwargs: Any) -> None:
        self.encoder.save_pretrained(folder, **kwargs)
        layers = {key: value.detach().cpu().contiguous() for key, value in self.head.state_dict().items()
                  if int(key.split(".")[1]) < self.up_to}
        save_file(layers, str(Path(folder) / _PROJECTION_WEIGHTS))
        (Path(folder) / _PROJECTION_META).write_text(json.dumps({**self.head.shape(), "up_to": self.up_to}, indent=2))


def _load_projection(folder: Path, encoder: Encoder) -> Encoder:
    """``encoder`` behind the head layers saved in ``folder``, or ``encoder`` when there are none."""
    if not (folder / _PROJECTION_META).is_file():
        return encoder
    meta = json.loads((folder / _PROJECTION_META).read_text())
    up_to = int(meta.pop("up_to"))
    head = ProjectionHead(**meta)
    state = load_file(str(folder / _PROJECTION_WEIGHTS))
    expected = {k for k in head.state_dict() if int(k.split(".")[1]) < up_to}
    if set(state) != expected:
        raise ValueError(f"{folder / _PROJECTION_WEIGHTS} holds {sorted(state)}, a {up_to}-layer head of "
                         f"{meta} needs {sorted(expected)}")
    head.load_state_dict(state, strict=False)
    return HeadedEncoder(encoder, head, up_to)


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
    encoder.save_pretrained(str(folder))  # a HeadedEncoder also writes its head layers
    save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
              str(folder / _HEAD))
    backbone = encoder.encoder if isinstance(encoder, HeadedEncoder) else encoder
    meta = {"format": TEACHER_FORMAT, "num_classes": head.out_features, "dim": head.in_features,
            "encoder_dim": backbone.dim,
            "class_names": list(class_names) if class_names is not None else None}
    (folder / _META).write_text(json.dumps(meta, indent=2))
    return folder


def load_teacher(folder: str | Path, like: Encoder) -> tuple[Encoder, nn.Linear]:
    """The frozen teacher network (wrapped like ``like``, behind its saved projection-head layers
    when it has them) and classifier from a :func:`save_teacher` folder."""
    folder = Path(folder)
    missing = [name for name in (_META, _HEAD, "config.json") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"teacher folder {folder} lacks {missing}; write it with save_teacher()")
    meta = json.loads((folder / _META).read_text())
    if meta.get("format") != TEACHER_FORMAT:
        raise ValueError(f"{folder / _META} is not a {TEACHER_FORMAT!r} file (format: {meta.get('format')!r})")
    if "encoder_dim" not in meta:
        raise ValueError(f"{folder / _META} predates the exact teacher format (no encoder_dim: a network "
                         "fine-tuned from the middle of its head lost those layers); save it again with save_teacher")
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
    backbone = copy.deepcopy(like, memo)
    backbone.dim = int(meta["encoder_dim"])  # the teacher's width, which may differ from the student's
    teacher = _load_projection(folder, backbone)
    if teacher.dim != head.in_features:
        raise ValueError(f"the classifier in {folder / _HEAD} reads {head.in_features}-d features, the network "
                         f"saved in {folder} makes {teacher.dim}-d ones: the folder's parts do not belong together "
                         "(a network fine-tuned from the middle of a projection head must be saved with it)")
    for module in (teacher, head):
        module.requires_grad_(False)
        module.eval()
    return teacher, head
