"""Corrupt, encode, decode, compare with the clean image: denoising autoencoders and context encoders.

Both read the image domain's ``corrupted`` view ({"inputs", "targets": clean normalised pixels
[B, C, H, W], "mask": Bool, True where corrupted}) and share one decoder, :class:`ConvDecoder`,
from the encoder's last feature grid back to the image.

- :class:`DenoisingAutoencoder` (Vincent et al. 2008, ICML; 2010, JMLR "Stacked Denoising
  Autoencoders", sections 4.2-4.3): gaussian, masking or salt-and-pepper noise (the view's
  ``noise``); loss = masked_reconstruction(x_hat, x, mask, corrupted_weight=alpha,
  clean_weight=beta), the "emphasised" squared error, normalised by the total weight. Defaults
  alpha=1, beta=0.5: the paper's "double emphasis"; beta=alpha is the plain criterion. Under
  gaussian noise every element is corrupted, so beta has no effect.
- :class:`ContextEncoder` (Pathak et al. 2016, "Context Encoders: Feature Learning by Inpainting"):
  a central square, random blocks or a random region removed (filled with the mean, 0 after
  normalisation); loss = the normalised masked L2 on the removed pixels (eq. 1), plus optionally
  the adversarial term (eq. 2-3) with a tiny discriminator, weighted ``adversarial_weight`` (the
  paper: 0.001 against 0.999; off by default, as the paper's feature-learning results used L2).
  The discriminator judges whole images, the real one against the input with its hole filled by
  the prediction (the paper's judges the predicted centre; a whole image also serves random
  blocks and regions). The paper also up-weights a thin band around the hole (10x on 4-7 px);
  that is left out.

The decoder's shape (channels, image side, feature grid) comes from ``encoder.geometry``, which the
image domain sets. It reads ``Features.sequence`` (the last feature map), so a ConvNeXt's layer norm on its
pooled output gets no gradient: with ConvNeXt under DDP set ``train.find_unused_parameters``.
Image only: the audio domain makes no ``corrupted`` view, so the denoising autoencoder on log-mel
is left out.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl.distributed import global_mean
from multissl.features import Encoder
from multissl.losses import masked_reconstruction
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = ["ConvDecoder", "DenoisingAutoencoder", "ContextEncoder", "Discriminator"]


class ConvDecoder(nn.Module):
    """Features.sequence on a square grid [B, g*g, D] -> an image [B, C, H, W] (H = W = ``out_size``).

    Pathak et al.'s decoder: a channel-wise fully connected layer (each channel's g*g map fully
    connected to itself, so every output location sees the whole context; then a 1x1 convolution
    mixes channels), then up-convolutions (4x4, stride 2) with batch norm and ReLU, halving the
    width each time, until the grid reaches ``out_size`` (a last bilinear resize where the ratio is
    not a power of two), and a 3x3 convolution to C channels (no activation: targets are
    normalised pixels).
    """

    def __init__(self, in_dim: int, grid: int, out_channels: int, out_size: int, width: int = 256,
                 channel_wise_fc: bool = True) -> None:
        super().__init__()
        self.grid, self.out_size = grid, out_size
        cells = grid * grid
        # channel-wise weights [D, g*g, g*g]; initialised like a linear layer of g*g inputs
        self.channel_fc = nn.Parameter(torch.randn(in_dim, cells, cells) / math.sqrt(cells)) if channel_wise_fc else None
        self.mix = nn.Conv2d(in_dim, width, kernel_size=1)
        stages = []
        side, channels = grid, width
        while side < out_size:
            out = max(channels // 2, 16)
            stages += [nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            side, channels = side * 2, out
        self.upsample = nn.Sequential(*stages)
        self.output = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, sequence: Tensor) -> Tensor:
        batch, cells, dim = sequence.shape
        if cells != self.grid * self.grid:
            raise ValueError(f"the decoder was built for a {self.grid}x{self.grid} feature grid, got {cells} positions")
        if self.channel_fc is not None:
            sequence = torch.einsum("btd,dts->bsd", sequence, self.channel_fc.to(sequence.dtype))
        maps = sequence.transpose(1, 2).reshape(batch, dim, self.grid, self.grid)
        image = self.output(self.upsample(F.relu(self.mix(maps))))
        if image.shape[-1] != self.out_size:
            image = F.interpolate(image, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return image


class _Autoencoder(Objective):
    """Shared part: encoder + ConvDecoder on the corrupted view; subclasses choose the view and the loss."""

    def __init__(self, encoder: Encoder, *, decoder_width: int, channel_wise_fc: bool) -> None:
        super().__init__()
        geometry = encoder.geometry
        if geometry is None or geometry.grid[0] != geometry.grid[1] or geometry.size[0] != geometry.size[1]:
            raise ValueError(f"{self.name} decodes square images from a square feature grid, which this encoder "
                             f"does not declare (geometry {geometry}): use the image domain's encoders")
        self.encoder = encoder
        self.decoder = ConvDecoder(encoder.dim, geometry.grid[0], geometry.channels, geometry.size[0], decoder_width,
                                   channel_wise_fc)

    def reconstruct(self, views: dict[str, Any]) -> Tensor:
        prediction = self.decoder(self.encoder(**views["inputs"]).sequence)
        if prediction.shape != views["targets"].shape:
            raise ValueError(f"reconstruction {tuple(prediction.shape)} does not match the targets "
                             f"{tuple(views['targets'].shape)}: the images are not the size the encoder was built for")
        return prediction


class DenoisingAutoencoder(_Autoencoder):
    name = "denoising_autoencoder"

    def __init__(
        self,
        encoder: Encoder,
        *,
        noise: str | None = None,
        noise_std: float | None = None,
        noise_fraction: float | None = None,
        corrupted_weight: float = 1.0,
        clean_weight: float = 0.5,
        decoder_width: int = 256,
        channel_wise_fc: bool = False,
    ) -> None:
        """noise: "gaussian" | "masking" | "salt_and_pepper" with noise_std / noise_fraction (None: the
        image domain's settings); corrupted_weight / clean_weight: alpha / beta of the emphasised
        criterion; channel_wise_fc: Pathak's decoder layer (off: the corruption is local here)."""
        super().__init__(encoder, decoder_width=decoder_width, channel_wise_fc=channel_wise_fc)
        self.view_options = {"task": "denoising", **{k: v for k, v in (
            ("noise", noise), ("noise_std", noise_std), ("noise_fraction", noise_fraction)) if v is not None}}
        self.corrupted_weight, self.clean_weight = corrupted_weight, clean_weight

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("corrupted", dict(self.view_options)),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        prediction = self.reconstruct(views)
        loss = masked_reconstruction(prediction, views["targets"], views["mask"],
                                     corrupted_weight=self.corrupted_weight, clean_weight=self.clean_weight)
        return ObjectiveOutput(loss=loss, logs={"corrupted_fraction": views["mask"].float().mean().detach()})


class Discriminator(nn.Module):
    """A tiny image discriminator [B, C, H, W] -> logits [B]: strided convolutions with leaky ReLU
    (DCGAN's, without batch norm, so real and fake batches never share statistics), global average."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images).mean(dim=(1, 2, 3))


class ContextEncoder(_Autoencoder):
    name = "context_encoder"

    def __init__(
        self,
        encoder: Encoder,
        *,
        mask: str | None = None,
        area: float | None = None,
        adversarial_weight: float = 0.0,
        discriminator_width: int = 32,
        decoder_width: int = 256,
        channel_wise_fc: bool = True,
    ) -> None:
        """mask: "central" | "block" | "region" removing ``area`` of the image (None: the image
        domain's settings, central 1/4); adversarial_weight: lambda_adv (0: L2 only)."""
        super().__init__(encoder, decoder_width=decoder_width, channel_wise_fc=channel_wise_fc)
        self.view_options = {"task": "inpainting", **{k: v for k, v in (("mask", mask), ("area", area)) if v is not None}}
        self.adversarial_weight = adversarial_weight
        channels = self.decoder.output.out_channels
        self.discriminator = Discriminator(channels, discriminator_width) if adversarial_weight > 0 else None

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("corrupted", dict(self.view_options)),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        targets, removed = views["targets"], views["mask"]
        prediction = self.reconstruct(views)
        removed = removed.expand_as(prediction)  # [B, 1, H, W] region -> every channel
        reconstruction = masked_reconstruction(prediction, targets, removed)
        if self.discriminator is None:
            return ObjectiveOutput(loss=reconstruction, logs={"reconstruction": reconstruction.detach()})
        adversarial, discriminator = self.adversarial_terms(torch.where(removed, prediction, targets), targets)
        loss = reconstruction + self.adversarial_weight * adversarial + discriminator
        return ObjectiveOutput(loss=loss, logs={"reconstruction": reconstruction.detach(),
                                                "adversarial": adversarial.detach(),
                                                "discriminator": discriminator.detach()})

    def adversarial_terms(self, filled: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """(generator term, discriminator term) of eq. 2 in one loss the engine minimises.

        Generator: the non-saturating -log D(filled), through a copy of D's weights that carries
        no gradient, so this term trains only the encoder-decoder. Discriminator:
        -log D(real) - log(1 - D(filled)) on the filled image detached, so it trains only D.
        Both are means over the global batch.
        """
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        fooled = torch.func.functional_call(self.discriminator, frozen, (filled,))
        generator = global_mean(F.binary_cross_entropy_with_logits(fooled.float(), torch.ones_like(fooled.float()),
                                                                   reduction="none"))
        logits = self.discriminator(torch.cat([real, filled.detach()])).float()
        labels = torch.cat([torch.ones(real.shape[0]), torch.zeros(real.shape[0])]).to(logits)
        per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").view(2, -1).sum(dim=0)
        return generator, global_mean(per_row)
