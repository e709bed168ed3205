"""data2vec: one self-distillation objective for speech, vision and language (Baevski et al. 2022,
arXiv:2202.03555), with data2vec 2.0's teacher reused where it fits (Baevski et al. 2022b, arXiv:2212.07525).

A student encoder sees a masked input and predicts, at the masked positions, the average of the top
K layer outputs of an EMA teacher that sees the unmasked input: contextualised targets, the same
recipe on every domain whose ``masked`` view replaces masked positions in place.

    student: x_masked (audio: wav2vec2's masked_spec_embed over spans; text: BERT's [MASK];
             image: a ViT's mask token over random patches) -> sequence [B, T, D]
    teacher: EMA copy of the encoder on the clean input, in eval mode (no dropout), all layers
    y = data2vec_targets(top K teacher layers, layer_norm, final_norm)      [B, T, D], no gradient
    loss = latent_regression(head(student[mask]), y[mask], beta, scale)     per masked position:
           scale * sum_d l(p - y), l squared (beta 0) or smooth L1 (beta > 0), mean over positions
    after optimiser step k: teacher EMA, momentum linear from ``momentum`` to ``final_momentum``
    over ``momentum_anneal_steps`` (the whole run when None), constant after

The head is data2vec's ``final_proj`` (a linear layer; text: ``head_layers: 2``, D -> 2D -> D with
GELU). Defaults are the reference's audio ones (``base_librispeech.yaml``: top 8 layers, instance norm
per layer, squared error scaled by 1/sqrt(D), momentum 0.999 -> 0.9999 over 30,000 steps); text
(``text/pretraining/base.yaml``: top 10, layer norm per layer, beta 4, scale 1, two-layer head,
0.999 -> 0.9999 over 300,000) and vision (``base_imagenet_d2v1.yaml``: top 6, layer norm of the
average, beta 2, 0.999 -> 0.9998 over the run) are set in their recipes.

Differences from the references: the targets are each block's output (the stock models' hidden
states), which is the vision code's default (``end_of_block_targets``); the audio and text code use
the feed-forward output before the block's last residual connection, which stock models do not
expose. The teacher copies the whole encoder (audio's reference shares the convolutional feature
encoder with the student and averages only the transformer). Instance norm skips padding (the
reference normalises over padded frames too). Vision masks random patches (the reference: BEiT
blocks); text masks single tokens with the domain's replacement rates (the reference: spans of 4,
all [MASK]). Of data2vec 2.0 only the shared teacher is used: not its several masked copies per
sample, nor its visible-only student with a convolutional decoder. A ``top_k_layers`` larger than
the encoder averages all its layers (tiny test encoders).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from multissl.features import Encoder
from multissl.losses import data2vec_targets, latent_regression
from multissl.modules import MomentumEncoder
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import NonNegativeFloat, PositiveFloat, PositiveInt, Probability
from multissl.views import ViewRequest

Normalization = Literal["instance", "layer", "none"]


class Data2Vec(Objective):
    name = "data2vec"

    def __init__(
        self,
        encoder: Encoder,
        *,
        top_k_layers: PositiveInt = 8,
        layer_norm: Normalization = "instance",
        final_norm: Normalization = "none",
        loss_beta: NonNegativeFloat = 0.0,
        loss_scale: PositiveFloat | None = None,
        head_layers: Literal[1, 2] = 1,
        momentum: Probability = 0.999,
        final_momentum: Probability = 0.9999,
        momentum_anneal_steps: PositiveInt | None = 30000,
        mask_ratio: Probability | None = None,
    ) -> None:
        """``mask_ratio`` None leaves it to the domain (its ``mask_ratio``; audio spans: ``mask_span``)."""
        super().__init__()
        if encoder.geometry is not None and encoder.geometry.patch_size is None:
            raise ValueError("data2vec on images needs a ViT with a mask token: set domains.<image domain>.encoder."
                             "architecture: vit and options.vit_mask_token: true")
        self.encoder = encoder
        self.teacher = MomentumEncoder(encoder, momentum, final_momentum, schedule="linear",
                                       anneal_steps=momentum_anneal_steps)
        dim = encoder.dim
        self.head = nn.Linear(dim, dim) if head_layers == 1 else nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.top_k_layers, self.layer_norm, self.final_norm = top_k_layers, layer_norm, final_norm
        self.loss_beta, self.loss_scale, self.mask_ratio = loss_beta, loss_scale, mask_ratio

    def view_requests(self) -> tuple[ViewRequest, ...]:
        options: dict[str, Any] = {"mask_token": True}
        if self.mask_ratio is not None:
            options["mask_ratio"] = self.mask_ratio
        return (ViewRequest("masked", options),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        mask = views["mask"]
        student = self.encoder(**views["inputs"]).sequence
        self.teacher.eval()  # the reference's ema.model.eval(): targets without dropout
        teacher = self.teacher(**views["clean"], output_hidden_states=True)
        layers = teacher.hidden_states[1:][-self.top_k_layers:]  # [0] is the embeddings
        targets = data2vec_targets(layers, teacher.mask, self.layer_norm, self.final_norm)
        prediction = self.head(student[mask])
        loss = latent_regression(prediction, targets[mask], self.loss_beta, self.loss_scale)
        logs = {"momentum": self.teacher.momentum.clone(), "masked_fraction": mask.float().mean(),
                "target_std": targets[mask].std(dim=0).mean(), "prediction_std": prediction.detach().std(dim=0).mean()}
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(prediction, targets[mask]))

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.teacher.follow(self.encoder, step, total_steps)
