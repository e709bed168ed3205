"""I-JEPA: the image joint-embedding predictive architecture (Assran et al. 2023, arXiv:2301.08243).

From one context block of an image, a predictor infers the representations of several target blocks
of the same image, as an EMA target encoder computes them from the whole image. No pixels are
reconstructed and no augmentation beyond a random crop is needed.

    masks (the image domain's multi-block masking): 4 target blocks of scale (0.15, 0.2) and
          aspect ratio (0.75, 1.5), one context block of scale (0.85, 1) with the targets removed
    h   = layer_norm(target_encoder(image)) at each target block    EMA of the encoder, no gradient
    s_x = encoder(context patches only)                              [B, K_ctx, D], by gradient
    z   = predictor(s_x, context positions, target block positions)  one pass per target block
    loss = latent_regression(z, h, beta=1, scale=1/D)                the reference's smooth_l1_loss(z, h)
    after optimiser step k: target encoder EMA, momentum linear from 0.996 to 1 over the run

The predictor is :class:`~multissl.modules.MaskTokenPredictor` (the reference's narrow ViT with fixed
2-D sine-cosine positions and one learned mask token); each target block is predicted from the same
context in its own pass, as the reference repeats the context per block. The view's crop follows the
reference (scale (0.3, 1), no flip, no colour augmentation).

Differences: the paper writes the loss as the L2 distance, the reference (followed here) as the
smooth L1 of threshold 1 averaged over every element; the stock ViT keeps its [CLS] token among the
context tokens (the reference's ViT has none); the reference's weight-decay schedule (0.04 -> 0.4)
is not reproduced (the engine keeps the recipe's fixed weight decay). Defaults are the reference's
ImageNet configs (``in1k_vith14_ep300.yaml``: a predictor of 12 blocks of width 384, min_keep 10).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from multissl.features import Encoder
from multissl.losses import latent_regression
from multissl.modules import MaskTokenPredictor, MomentumEncoder
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import NonNegativeInt, PositiveFloat, PositiveInt, Probability
from multissl.views import ViewRequest


class IJEPA(Objective):
    name = "ijepa"

    def __init__(
        self,
        encoder: Encoder,
        *,
        predictor_dim: PositiveInt = 384,
        predictor_depth: PositiveInt = 12,
        predictor_heads: PositiveInt = 12,
        momentum: Probability = 0.996,
        final_momentum: Probability = 1.0,
        num_targets: PositiveInt = 4,
        target_scale: tuple[Probability, Probability] = (0.15, 0.2),
        target_aspect_ratio: tuple[PositiveFloat, PositiveFloat] = (0.75, 1.5),
        context_scale: tuple[Probability, Probability] = (0.85, 1.0),
        min_keep: NonNegativeInt = 10,
        crop_scale: tuple[Probability, Probability] = (0.3, 1.0),
    ) -> None:
        super().__init__()
        geometry = encoder.geometry
        if geometry is None or geometry.patch_size is None:
            raise ValueError("I-JEPA needs a patch encoder that can run on the context block alone (a ViT): set "
                             "domains.<image domain>.encoder.architecture: vit")
        if momentum > final_momentum:
            raise ValueError(f"momentum {momentum} must not exceed final_momentum {final_momentum}")
        self.encoder = encoder
        self.target_encoder = MomentumEncoder(encoder, momentum, final_momentum, schedule="linear")
        self.predictor = MaskTokenPredictor(encoder.dim, encoder.dim, predictor_dim, predictor_depth, predictor_heads)
        self.masking = dict(masking="multiblock", num_targets=num_targets, target_scale=tuple(target_scale),
                            target_aspect_ratio=tuple(target_aspect_ratio), context_scale=tuple(context_scale),
                            min_keep=min_keep, crop_scale=tuple(crop_scale), flip=False)

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("masked", dict(self.masking)),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        inputs, target_index, grid = views["inputs"], views["target_index"], views["grid"]
        batch, blocks, block_size = target_index.shape
        with torch.no_grad():
            full = self.target_encoder(**views["clean"]).sequence
            full = F.layer_norm(full, full.shape[-1:])  # the reference normalises the target encoder's output
            dim = full.shape[-1]
            targets = full.gather(1, target_index.reshape(batch, -1, 1).expand(-1, -1, dim))
        context = self.encoder(**inputs).sequence  # the context block's tokens, in keep_index order
        context_index = inputs["keep_index"]
        predictions = self.predictor(
            context.repeat_interleave(blocks, dim=0), context_index.repeat_interleave(blocks, dim=0),
            target_index.reshape(batch * blocks, block_size), grid)
        loss = latent_regression(predictions.reshape(-1, dim), targets.reshape(-1, dim), beta=1.0, scale=1.0 / dim)
        logs = {"momentum": self.target_encoder.momentum.clone(),
                "context_fraction": torch.tensor(context_index.shape[1] / views["mask"].shape[1]),
                "target_fraction": views["mask"].float().mean()}
        pooled = (predictions.reshape(batch, -1, dim).mean(dim=1), targets.reshape(batch, -1, dim).mean(dim=1))
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=pooled)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.target_encoder.follow(self.encoder, step, total_steps)
