"""MAE: masked autoencoders are scalable vision learners (He et al. 2022, arXiv:2111.06377).

    image -> patches; 75% masked at random per image (the domain's ``masked`` view)
    ViT encoder on the visible patches only (``keep_index``: masked patches never enter it)
    light decoder: visible tokens -> decoder width, a shared learned mask token at every masked
        position, its own fixed 2-D sine-cosine positions, a few transformer blocks, a linear
        layer to the p*p*C pixels of every patch
    loss = masked_reconstruction(pred, targets, mask, normalize_target=True): per-patch MSE on the
        masked patches, each target patch normalised by its own mean and variance (norm_pix_loss)

Shapes: targets [B, T, p*p*C], mask Bool[B, T] (True = masked), keep_index Long[B, T_keep] (in the
inputs, read by the patch encoder), grid (rows, columns) with rows * columns = T, all from the view; p and C from ``encoder.geometry``. The
reference decoder also carries the encoder's CLS token as context; here ``Features.sequence``
(patch tokens only) feeds it. Defaults are the paper's ViT-L decoder (8 blocks, width 512, 16
heads); its ablation (table 1a) shows one block already works well for fine-tuning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from multissl.features import Encoder
from multissl.losses import masked_reconstruction
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules.positions import sincos_2d
from multissl.modules.predictor import pre_norm_transformer
from multissl.views import ViewRequest

__all__ = ["MAE", "MAEDecoder"]


class MAEDecoder(nn.Module):
    """Visible tokens [B, T_keep, in_dim] + keep_index -> pixel predictions for all T patches [B, T, out_dim]."""

    def __init__(self, in_dim: int, out_dim: int, dim: int = 512, depth: int = 8, heads: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = pre_norm_transformer(dim, depth, heads)
        self.norm = nn.LayerNorm(dim)
        self.predict = nn.Linear(dim, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)  # as the reference code

    def forward(self, visible: Tensor, keep_index: Tensor, grid: tuple[int, int]) -> Tensor:
        batch, _, _ = visible.shape
        num_patches = grid[0] * grid[1]
        tokens = self.embed(visible)
        dim = tokens.shape[-1]
        # every position starts as the mask token; visible tokens go back to where they came from
        full = self.mask_token.to(tokens.dtype).expand(batch, num_patches, dim)
        full = full.scatter(1, keep_index.unsqueeze(-1).expand(-1, -1, dim), tokens)
        full = full + sincos_2d(*grid, dim, device=tokens.device).to(tokens.dtype)
        return self.predict(self.norm(self.blocks(full)))


class MAE(Objective):
    name = "mae"

    def __init__(
        self,
        encoder: Encoder,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        geometry = encoder.geometry
        if geometry is None or geometry.patch_size is None:
            raise ValueError(
                "MAE needs a patch encoder that can run on the visible patches only (a ViT): set the recipe "
                "key domains.<image domain>.encoder.architecture: vit"
            )
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = geometry.patch_size
        self.decoder = MAEDecoder(encoder.dim, geometry.patch_size**2 * geometry.channels, decoder_dim,
                                  decoder_depth, decoder_heads)

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("masked", {"mask_ratio": self.mask_ratio}),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        inputs, mask, targets, grid = views["inputs"], views["mask"], views["targets"], views["grid"]
        keep_index = inputs["keep_index"]  # the visible patches: the encoder sees only these
        if grid[0] * grid[1] != targets.shape[1]:
            raise ValueError(f"targets hold {targets.shape[1]} patches, the {grid[0]}x{grid[1]} grid {grid[0] * grid[1]}")
        visible = self.encoder(**inputs).sequence
        prediction = self.decoder(visible, keep_index, grid)
        loss = masked_reconstruction(prediction, targets, mask, normalize_target=self.norm_pix_loss)
        return ObjectiveOutput(loss=loss, logs={"mask_ratio": mask.float().mean().detach()})
