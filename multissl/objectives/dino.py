"""DINO: self-distillation with no labels (Caron et al. 2021, arXiv:2104.14294).

A student network matches the output distribution of a teacher, an exponential moving average of
the student, across crops of one sample; no negatives. Collapse is avoided by centring the
teacher's logits (a running mean over the global batch) and sharpening them (a low temperature).

    crops: 2 global views, then ``local_views`` smaller ones (multi-crop; the image domain makes them)
    s_v = head(encoder(v))                 student, every crop, [B, K], by gradient
    t_g = EMA copy of (encoder, head)      teacher, the 2 global crops only, no gradient
    loss = dino(s, t, c, tau_s, tau_t)     H(softmax((t_g - c) / tau_t), softmax(s_v / tau_s)),
                                           averaged over every pair v != g (Algorithm 1)
    c <- m c + (1 - m) mean_batch(t)       after the loss, over the global batch (m = 0.9)
    after optimiser step k: teacher EMA with momentum 0.996 -> 1 (cosine)

The head is :class:`~multissl.modules.DINOHead` (3-layer MLP, L2-normalised bottleneck,
weight-normalised prototypes). ``tau_t`` warms up linearly from ``warmup_teacher_temperature`` over
``teacher_temperature_warmup_steps`` (the reference: per epoch); the last layer gets no gradient for
the first ``freeze_last_layer_steps`` (the reference: one epoch). Defaults are the reference
``main_dino.py``'s: 65,536 prototypes, tau_s 0.1, tau_t 0.04 without warm-up (its README's ViT-S run
warms 0.04 -> 0.07 over 30 epochs), centre momentum 0.9, teacher momentum 0.996; 8 local crops
there, ``local_views`` 0 here, since only the image domain makes them.

Not here: the reference's weight-decay schedule (0.04 -> 0.4; the engine keeps the recipe's
weight decay fixed) and its drop path in the student (an encoder option).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from multissl.features import Encoder, encode_views
from multissl.losses import dino
from multissl.modules import DINOHead, MomentumEncoder, ProjectedEncoder, TeacherCentering, warmup_temperature
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import NonNegativeInt, PositiveFloat, PositiveInt, Probability
from multissl.views import ViewRequest

GLOBAL_VIEWS = 2


class DINO(Objective):
    name = "dino"
    steps_done: Tensor

    def __init__(
        self,
        encoder: Encoder,
        *,
        out_dim: PositiveInt = 65536,
        hidden_dim: PositiveInt = 2048,
        bottleneck_dim: PositiveInt = 256,
        head_layers: PositiveInt = 3,
        head_batch_norm: bool = False,
        norm_last_layer: bool = True,
        student_temperature: PositiveFloat = 0.1,
        teacher_temperature: PositiveFloat = 0.04,
        warmup_teacher_temperature: PositiveFloat = 0.04,
        teacher_temperature_warmup_steps: NonNegativeInt = 0,
        center_momentum: Probability = 0.9,
        momentum: Probability = 0.996,
        final_momentum: Probability = 1.0,
        freeze_last_layer_steps: NonNegativeInt = 1251,
        local_views: NonNegativeInt = 0,
        policy: str | None = None,
    ) -> None:
        """``freeze_last_layer_steps`` 1251 is the reference's one epoch (ImageNet at batch 1024);
        ``policy``: the domain's augmentation policy (None: its default)."""
        super().__init__()
        if momentum > final_momentum:
            raise ValueError(f"momentum {momentum} must not exceed final_momentum {final_momentum}")
        head = DINOHead(encoder.dim, out_dim, hidden_dim, bottleneck_dim, head_layers, head_batch_norm, norm_last_layer)
        self.student = ProjectedEncoder(encoder, head)
        self.teacher = MomentumEncoder(self.student, momentum, final_momentum)
        self.centering = TeacherCentering(out_dim, center_momentum)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.student_temperature = student_temperature
        self.teacher_temperatures = (warmup_teacher_temperature, teacher_temperature, teacher_temperature_warmup_steps)
        self.freeze_last_layer_steps, self.local_views, self.policy = freeze_last_layer_steps, local_views, policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy, num_views=GLOBAL_VIEWS, local_views=self.local_views),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        crops = views["views"]
        if len(crops) != GLOBAL_VIEWS + self.local_views:
            raise ValueError(f"dino expects {GLOBAL_VIEWS} global + {self.local_views} local views, got {len(crops)}")
        # globals and locals each in one encoder call (their sizes differ), one head call for all
        pooled = [features.pooled for features in encode_views(self.student.encoder, crops)]
        gate = (self.steps_done >= self.freeze_last_layer_steps).float()
        student = self.student.head(torch.cat(pooled), last_layer_gate=gate).split([p.shape[0] for p in pooled])
        teacher = self.teacher(crops[:GLOBAL_VIEWS])
        start, end, warmup = self.teacher_temperatures
        temperature = warmup_temperature(self.steps_done, warmup, start, end)
        loss = dino(student, teacher, self.centering.center, self.student_temperature, temperature)
        self.centering.update(torch.cat(teacher))
        logs = {"teacher_temperature": temperature, "momentum": self.teacher.momentum.clone(),
                "last_layer_frozen": 1 - gate}
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(pooled[0], pooled[1]))

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.steps_done.fill_(step)
        self.teacher.follow(self.student, step, total_steps)
