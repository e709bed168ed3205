"""Colorization as classification over quantised colours, with class rebalancing.

Zhang, Isola, Efros 2016, "Colorful Image Colorization" (ECCV, section 2.1-2.3). The network sees
the lightness L of an image and predicts, per pixel, a distribution over colour classes:

    L -> encoder -> sequence [B, T, D] -> feature map [B, D, h, w] -> decoder -> logits [B, Q, H/s, W/s]
    loss = mean over pixels of  -v(q*) sum_q Z_q log softmax(logits)_q      (eq. 2)
    v(q) = normalised 1 / ((1 - lambda) p~(q) + lambda / Q)                  (eq. 3-4, lambda 0.5)

The image domain's ``corrupted`` view (task "colorization") does the colour science: it shows the
encoder L as a gray image, quantises the ab plane into Q classes (10 x 10 bins) and soft-encodes
each target pixel at the output stride: ``targets`` Long[B, k, h, w] (its k nearest classes, nearest
first), ``target_weights`` [B, k, h, w] (Gaussian weights, sigma 5, summing to 1), ``values`` [B, 2,
h, w] (the ab values) and ``class_values`` [Q, 2] (each class's ab centre). This file knows only
"classes with coordinates".

Why classification and not regression: the paper's point (section 2.1, Fig. 2) is that an L2
regression to ab averages the plausible colours of an object into a desaturated brown, while a
distribution keeps them apart; the rebalancing v keeps the desaturated, frequent classes from
dominating the loss. :func:`annealed_mean` turns the prediction back into ab (temperature 0.38,
eq. 5).

Two deviations, for want of the paper's ImageNet constants, both documented where they act:
- The classes are the full grid of ab centres -110..110 in steps of 10 (Q = 23 x 23 = 529) instead
  of the 313 the paper keeps in the sRGB gamut: out-of-gamut classes never occur as targets, so the
  classifier learns to leave them alone; lambda / Q uses the number of classes seen so far.
- The prior p~ (the empirical class distribution, smoothed by a Gaussian of sigma 5 over the class
  coordinates) is counted on the training data as it streams by: the nearest-class histogram of
  every training batch is summed over processes into a persistent buffer ``ab_counts`` (so a resume
  and every rank agree), and the weights at each step come from all counts so far, the current
  batch included.
The decoder (3x3 conv, bilinear upsampling, 3x3 conv, 1x1 conv to Q) stands in for the paper's
conv8 block; ``output_stride`` 4 predicts at a quarter of the input resolution, as the paper.
Split-brain autoencoders (Zhang et al. 2017) are not implemented.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl.distributed import all_reduce_sum
from multissl.features import Encoder
from multissl.losses import soft_cross_entropy
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = ["Colorization", "ColorDecoder", "rebalancing_weights", "annealed_mean"]


def rebalancing_weights(counts: Tensor, class_values: Tensor, mix: float = 0.5, sigma: float = 5.0) -> Tensor:
    """Zhang et al.'s class weights v [Q] from class counts [Q] (eq. 3-4).

    ``p~`` = counts normalised and smoothed by a Gaussian of ``sigma`` over the class coordinates
    ``class_values`` [Q, P] (ab units for colours): ``p~_q ~ sum_r p_r exp(-|c_q - c_r|^2 / 2 sigma^2)``;
    ``v ~ 1 / ((1 - mix) p~ + mix / Q)`` with Q the number of classes ever counted (the in-gamut
    classes the paper keeps), scaled so that ``sum_q p~_q v_q = 1``. ``mix`` 1 gives v = 1 everywhere.
    """
    if counts.dim() != 1 or class_values.dim() != 2 or class_values.shape[0] != counts.shape[0]:
        raise ValueError(f"counts [Q] and class_values [Q, P] must agree, got {tuple(counts.shape)} and "
                         f"{tuple(class_values.shape)}")
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix (lambda) must be in [0, 1], got {mix}")
    counts = counts.float()
    if counts.sum() <= 0:
        raise ValueError("no ab values counted yet: rebalancing weights need a prior")
    centres = class_values.to(counts)
    kernel = torch.exp(-torch.cdist(centres, centres).square() / (2 * sigma**2))  # [Q, Q], symmetric
    smoothed = kernel @ (counts / counts.sum())
    smoothed = smoothed / smoothed.sum()
    seen = (counts > 0).sum()
    weights = 1.0 / ((1 - mix) * smoothed + mix / seen)
    return weights / (smoothed * weights).sum()


def annealed_mean(logits: Tensor, class_values: Tensor, temperature: float = 0.38) -> Tensor:
    """[B, P, H, W] from class logits [B, Q, H, W]: the mean of softmax(logits / T) over the class
    coordinates ``class_values`` [Q, P] (ab for colours; eq. 5, T = 0.38, between the mean's
    desaturation and the mode's patchiness)."""
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", probabilities, class_values.float())


class ColorDecoder(nn.Module):
    """Feature map [B, D, h, w] -> bin logits [B, Q, H_out, W_out] (3x3 conv, upsample, 3x3, 1x1)."""

    def __init__(self, in_dim: int, hidden_dim: int, num_bins: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_dim, hidden_dim, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(hidden_dim), nn.ReLU(inplace=True))
        self.refine = nn.Sequential(nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(hidden_dim), nn.ReLU(inplace=True),
                                    nn.Conv2d(hidden_dim, num_bins, 1))

    def forward(self, feature_map: Tensor, size: tuple[int, int]) -> Tensor:
        hidden = F.interpolate(self.reduce(feature_map), size=size, mode="bilinear", align_corners=False)
        return self.refine(hidden)


def _feature_map(sequence: Tensor | None) -> Tensor:
    """[B, T, D] patch/position features in row-major order -> [B, D, s, s] (square images)."""
    if sequence is None:
        raise ValueError("colorization decodes the encoder's sequence (feature map), but it returned none")
    batch, positions, dim = sequence.shape
    side = math.isqrt(positions)
    if side * side != positions:
        raise ValueError(f"encoder sequence of {positions} positions is not a square feature map")
    return sequence.transpose(1, 2).reshape(batch, dim, side, side)


class Colorization(Objective):
    name = "colorization"

    ab_counts: Tensor

    def __init__(self, encoder: Encoder, *, num_bins: int = 529, hidden_dim: int = 256, output_stride: int = 4,
                 rebalance_mix: float = 0.5, sigma: float = 5.0) -> None:
        """``num_bins``: the colour classes of the image domain's colorization view (23 x 23 ab
        bins); ``rebalance_mix`` is the paper's lambda (1: no rebalancing); ``sigma`` (ab units)
        smooths the prior, as the paper's (the view soft-encodes with the same 5)."""
        super().__init__()
        if output_stride < 1:
            raise ValueError(f"output_stride must be >= 1, got {output_stride}")
        if not 0.0 <= rebalance_mix <= 1.0:
            raise ValueError(f"rebalance_mix must be in [0, 1], got {rebalance_mix}")
        self.encoder = encoder
        self.decoder = ColorDecoder(encoder.dim, hidden_dim, num_bins)
        self.num_bins, self.output_stride, self.rebalance_mix, self.sigma = num_bins, output_stride, rebalance_mix, sigma
        self.register_buffer("ab_counts", torch.zeros(num_bins))

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("corrupted", {"task": "colorization", "output_stride": self.output_stride}),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        classes, weights, class_values = views["targets"], views["target_weights"], views["class_values"]
        if class_values.shape[0] != self.num_bins:
            raise ValueError(f"the colorization view has {class_values.shape[0]} colour classes, this objective was "
                             f"built for num_bins={self.num_bins}: set the objective option num_bins to match")
        logits = self.decoder(_feature_map(self.encoder(**views["inputs"]).sequence), tuple(classes.shape[-2:]))
        nearest = classes[:, 0]
        if self.training:  # the prior counts training data only, summed over every process
            self.ab_counts += all_reduce_sum(torch.bincount(nearest.flatten(), minlength=self.num_bins).float())
        pixel_weights = rebalancing_weights(self.ab_counts, class_values, self.rebalance_mix, self.sigma)[nearest]
        # the k-sparse soft encoding as a distribution over all classes, one row per pixel
        soft = torch.zeros_like(logits, dtype=torch.float32).scatter_(1, classes, weights.float())
        loss = soft_cross_entropy(_pixels_as_rows(logits), _pixels_as_rows(soft), weights=pixel_weights.flatten())
        with torch.no_grad():
            logs = {"bin_accuracy": (logits.argmax(dim=1) == nearest).float().mean(),
                    "ab_error": (annealed_mean(logits, class_values) - views["values"]).abs().mean()}
        return ObjectiveOutput(loss=loss, logs=logs)


def _pixels_as_rows(maps: Tensor) -> Tensor:
    """[B, Q, h, w] -> [B * h * w, Q]."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
