"""iBOT and DINOv2's objective: DINO on the [CLS] token, masked patch-token self-distillation and
the KoLeo regulariser (Zhou et al. 2022, arXiv:2111.07832; Oquab et al. 2023, arXiv:2304.07193).

    crops: 2 global views, then ``local_views`` local ones; each global view's rows are masked with
           probability ``mask_probability``, ``round(r T)`` random patches, r ~ U(mask_ratio_range)
    student (ViT with a mask token): masked globals and clean locals -> [CLS] c_v, patch tokens p
    teacher (EMA of encoder and heads): clean globals -> [CLS] and patch tokens
    dino   = dino(head(c), head'(c'), c_cls, tau_s, tau_t)          every crop vs the other global
    patch  = ibot_patch(head(p[mask]), head'(p'[mask]), mask, c_patch, tau_s, tau_t)
             cross-entropy at the masked positions, per image mean, mean over the global crops' images
    koleo  = koleo(c_1) + koleo(c_2)                               on the student's global [CLS] features
    loss   = dino_weight dino + ibot_weight patch + koleo_weight koleo
    then both centres move towards the global batch's mean (cls: the teacher's global crops; patches:
    its masked positions); after each step the teacher follows by EMA (0.992 -> 1, cosine)

Defaults are DINOv2's ``ssl_default_config.yaml``: one head shared by [CLS] and patch tokens
(``separate_patch_head`` false; iBOT's code can give patch tokens a last layer of their own), 65,536
prototypes, tau_t 0.04 -> 0.07 over 30 epochs of 1250 steps, tau_s 0.1, weights 1, 1 and 0.1, masks on
half the rows with ratios in (0.1, 0.5), the last layer frozen for the first epoch. Plain iBOT is
``koleo_weight: 0`` (its teacher temperature for patches, 0.04 -> 0.07, equals the [CLS] one here).

Differences from the references: random patches instead of BEiT-style blocks; KoLeo's nearest
neighbours over the global batch (DINOv2: each GPU's); the patch centre is the mean over the
masked positions (DINOv2's; iBOT's is over all patches); centring, not Sinkhorn-Knopp (DINOv2's
default ``centering``). Not here: the weight-decay and layer-wise lr schedules of the references.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from multissl.features import Encoder, encode_views
from multissl.losses import dino, ibot_patch, koleo
from multissl.modules import DINOHead, MomentumEncoder, TeacherCentering, warmup_temperature
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability
from multissl.views import ViewRequest

GLOBAL_VIEWS = 2


class IBOT(Objective):
    name = "ibot"
    steps_done: Tensor

    def __init__(
        self,
        encoder: Encoder,
        *,
        out_dim: PositiveInt = 65536,
        hidden_dim: PositiveInt = 2048,
        bottleneck_dim: PositiveInt = 256,
        head_layers: PositiveInt = 3,
        separate_patch_head: bool = False,
        student_temperature: PositiveFloat = 0.1,
        teacher_temperature: PositiveFloat = 0.07,
        warmup_teacher_temperature: PositiveFloat = 0.04,
        teacher_temperature_warmup_steps: NonNegativeInt = 37500,
        center_momentum: Probability = 0.9,
        momentum: Probability = 0.992,
        final_momentum: Probability = 1.0,
        freeze_last_layer_steps: NonNegativeInt = 1250,
        dino_weight: NonNegativeFloat = 1.0,
        ibot_weight: NonNegativeFloat = 1.0,
        koleo_weight: NonNegativeFloat = 0.1,
        mask_probability: Probability = 0.5,
        mask_ratio_range: tuple[Probability, Probability] = (0.1, 0.5),
        local_views: NonNegativeInt = 0,
        policy: str | None = None,
    ) -> None:
        super().__init__()
        geometry = encoder.geometry
        if geometry is None or geometry.patch_size is None or encoder.pooling != "cls":
            raise ValueError("ibot needs a ViT with [CLS] pooling and a mask token: set domains.<image domain>."
                             "encoder.architecture: vit, encoder.pooling: cls and options.vit_mask_token: true")
        if momentum > final_momentum:
            raise ValueError(f"momentum {momentum} must not exceed final_momentum {final_momentum}")
        heads = {"head": DINOHead(encoder.dim, out_dim, hidden_dim, bottleneck_dim, head_layers)}
        if separate_patch_head:
            heads["patch_head"] = DINOHead(encoder.dim, out_dim, hidden_dim, bottleneck_dim, head_layers)
        self.student = nn.ModuleDict({"encoder": encoder, **heads})
        self.teacher = MomentumEncoder(self.student, momentum, final_momentum)
        self.cls_centering, self.patch_centering = TeacherCentering(out_dim, center_momentum), TeacherCentering(
            out_dim, center_momentum)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.temperatures = (student_temperature, warmup_teacher_temperature, teacher_temperature,
                             teacher_temperature_warmup_steps)
        self.weights = (dino_weight, ibot_weight, koleo_weight)
        self.freeze_last_layer_steps, self.local_views, self.policy = freeze_last_layer_steps, local_views, policy
        self.mask_options = {"mask_probability": mask_probability, "mask_ratio_range": tuple(mask_ratio_range)}

    def view_requests(self) -> tuple[ViewRequest, ...]:
        request = ViewRequest.augmented(self.policy, num_views=GLOBAL_VIEWS, local_views=self.local_views)
        request.options.update(self.mask_options)
        return (request,)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        crops, masks = views["views"], views["masks"]
        if len(crops) != GLOBAL_VIEWS + self.local_views:
            raise ValueError(f"ibot expects {GLOBAL_VIEWS} global + {self.local_views} local views, got {len(crops)}")
        gate = (self.steps_done >= self.freeze_last_layer_steps).float()
        student = encode_views(self.student["encoder"], views["masked_views"] + crops[GLOBAL_VIEWS:])
        cls = [features.pooled for features in student]
        student_cls = self.student["head"](torch.cat(cls), gate).split([c.shape[0] for c in cls])
        student_patches = self._patch_head(self.student)(
            torch.cat([f.sequence[m] for f, m in zip(student, masks)]), gate)
        with torch.no_grad():
            teacher = encode_views(self.teacher.module["encoder"], crops[:GLOBAL_VIEWS])
            teacher_cls = self.teacher.module["head"](torch.cat([f.pooled for f in teacher])).chunk(GLOBAL_VIEWS)
            teacher_patches = self._patch_head(self.teacher.module)(
                torch.cat([f.sequence[m] for f, m in zip(teacher, masks)]))
        tau_s, start, end, warmup = self.temperatures
        tau_t = warmup_temperature(self.steps_done, warmup, start, end)
        dino_weight, ibot_weight, koleo_weight = self.weights
        cls_loss = dino(student_cls, teacher_cls, self.cls_centering.center, tau_s, tau_t)
        patch_loss = ibot_patch(student_patches, teacher_patches, torch.cat(masks), self.patch_centering.center, tau_s,
                                tau_t)
        koleo_loss = sum(koleo(c) for c in cls[:GLOBAL_VIEWS])
        self.cls_centering.update(torch.cat(teacher_cls))
        self.patch_centering.update(teacher_patches)
        logs = {"dino_loss": cls_loss.detach(), "ibot_loss": patch_loss.detach(), "koleo_loss": koleo_loss.detach(),
                "teacher_temperature": tau_t, "momentum": self.teacher.momentum.clone(),
                "masked_fraction": torch.cat(masks).float().mean()}
        loss = dino_weight * cls_loss + ibot_weight * patch_loss + koleo_weight * koleo_loss
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(cls[0], cls[1]))

    @staticmethod
    def _patch_head(network: nn.ModuleDict) -> nn.Module:
        return network["patch_head"] if "patch_head" in network else network["head"]

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.steps_done.fill_(step)
        self.teacher.follow(self.student, step, total_steps)
