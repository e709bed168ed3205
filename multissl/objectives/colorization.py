"""Colorization as classification over quantised colours, with class rebalancing.

Zhang, Isola, Efros 2016, "Colorful Image Colorization" (ECCV, section 2.1-2.3). The network sees
the lightness L of an image (the image domain's ``corrupted`` view, task "colorization": L shown as
a gray image, targets the raw CIE Lab a/b channels) and predicts, per pixel, a distribution over
the ab plane quantised into 10 x 10 bins:

    L -> encoder -> sequence [B, T, D] -> feature map [B, D, h, w] -> decoder -> logits [B, Q, H/s, W/s]
    target ab (area-downsampled to H/s) -> soft encoding Z: its 5 nearest bin centres,
                                           Gaussian weights (sigma 5), normalised
    loss = mean over pixels of  -v(q*) sum_q Z_q log softmax(logits)_q      (eq. 2)
    v(q) = normalised 1 / ((1 - lambda) p~(q) + lambda / Q)                  (eq. 3-4, lambda 0.5)

Why classification and not regression: the paper's point (section 2.1, Fig. 2) is that an L2
regression to ab averages the plausible colours of an object into a desaturated brown, while a
distribution keeps them apart; the rebalancing v keeps the desaturated, frequent bins from dominating
the loss. :func:`annealed_mean` turns the prediction back into ab (temperature 0.38, eq. 5).

Two deviations, for want of the paper's ImageNet constants, both documented where they act:
- The bins are the full grid of centres -110..110 in steps of 10 (Q = 23 x 23 = 529) instead of
  the 313 the paper keeps in the sRGB gamut: out-of-gamut bins never occur as targets, so the
  classifier learns to leave them alone; lambda / Q uses the number of bins seen so far.
- The prior p~ (the empirical ab distribution, smoothed by a Gaussian of sigma 5) is counted on
  the training data as it streams by: the nearest-bin histogram of every training batch is summed
  over processes into a persistent buffer ``ab_counts`` (so a resume and every rank agree), and the
  weights at each step come from all counts so far, the current batch included.
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

from multissl.distributed import all_reduce_sum, global_mean
from multissl.features import Encoder
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = [
    "Colorization",
    "ColorDecoder",
    "ab_bin_centres",
    "soft_encode",
    "rebalancing_weights",
    "annealed_mean",
    "AB_BIN_SIZE",
    "AB_LIMIT",
]

AB_BIN_SIZE = 10.0  #: side of a bin in the ab plane (Zhang et al.: 10)
AB_LIMIT = 110.0  #: bin centres run from -AB_LIMIT to AB_LIMIT on both axes
_GRID = int(round(2 * AB_LIMIT / AB_BIN_SIZE)) + 1  # 23 centres per axis
NUM_BINS = _GRID * _GRID


def ab_bin_centres(device: torch.device | None = None) -> Tensor:
    """Float[Q, 2]: the (a, b) centre of every bin, a-major: bin ``i * 23 + j`` is (a_i, b_j)."""
    axis = torch.arange(_GRID, dtype=torch.float32, device=device) * AB_BIN_SIZE - AB_LIMIT
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)


def soft_encode(ab: Tensor, neighbours: int = 5, sigma: float = 5.0) -> tuple[Tensor, Tensor]:
    """Zhang et al.'s soft encoding of ab values [B, 2, H, W] (section 2.1).

    Returns (bins Long[B, k, H, W], weights [B, k, H, W]): the ``k = neighbours`` nearest bin
    centres of each pixel, nearest first, and Gaussian weights ``exp(-d^2 / 2 sigma^2)`` normalised
    to sum to 1 over them. ab is first clamped onto the grid's extent (no sRGB colour lies outside
    it). The k nearest centres (k <= 5) then lie within two steps of the nearest one: a centre three
    steps away is >= 25 off on that axis, while even at a corner of the grid five centres of the
    5 x 5 block lie within 20. So 25 candidates per pixel are scored, never all Q.
    """
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"ab must be [B, 2, H, W], got {tuple(ab.shape)}")
    if not 1 <= neighbours <= 5:
        raise ValueError(f"neighbours must be in [1, 5] (the 5x5 block argument below), got {neighbours}")
    ab = ab.float().clamp(-AB_LIMIT, AB_LIMIT)
    nearest = ((ab + AB_LIMIT) / AB_BIN_SIZE).round().long()  # [B, 2, H, W]
    steps = torch.arange(-2, 3, device=ab.device)
    index = nearest[:, :, None] + steps[:, None, None]  # [B, 2, 5, H, W]: candidate a / b grid indices
    inside = (index >= 0) & (index < _GRID)
    index = index.clamp(0, _GRID - 1)  # candidates off the grid (near its rim) are never chosen
    axis_squared = (ab[:, :, None] - (index.float() * AB_BIN_SIZE - AB_LIMIT)).square()
    axis_squared = axis_squared.masked_fill(~inside, float("inf"))
    squared = (axis_squared[:, 0, :, None] + axis_squared[:, 1, None, :]).flatten(1, 2)  # [B, 25, H, W]
    squared, chosen = squared.topk(neighbours, dim=1, largest=False)  # sorted: nearest first
    bins = index[:, 0].gather(1, chosen // 5) * _GRID + index[:, 1].gather(1, chosen % 5)
    weights = torch.softmax(-squared / (2 * sigma**2), dim=1)  # = normalised Gaussian weights
    return bins, weights


def rebalancing_weights(counts: Tensor, mix: float = 0.5, sigma: float = 5.0) -> Tensor:
    """Zhang et al.'s class weights v [Q] from bin counts [Q] (eq. 3-4).

    ``p~`` = counts normalised and smoothed by a Gaussian of ``sigma`` (ab units) on the bin grid;
    ``v ~ 1 / ((1 - mix) p~ + mix / Q)`` with Q the number of bins ever counted (the in-gamut bins
    the paper keeps), scaled so that ``sum_q p~_q v_q = 1``. ``mix`` 1 gives v = 1 everywhere.
    """
    if counts.shape != (NUM_BINS,):
        raise ValueError(f"counts must be [{NUM_BINS}], got {tuple(counts.shape)}")
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix (lambda) must be in [0, 1], got {mix}")
    counts = counts.float()
    if counts.sum() <= 0:
        raise ValueError("no ab values counted yet: rebalancing weights need a prior")
    radius = max(1, math.ceil(3 * sigma / AB_BIN_SIZE))
    steps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=counts.device) * AB_BIN_SIZE
    kernel = torch.exp(-steps.square() / (2 * sigma**2))
    kernel = torch.outer(kernel, kernel) / kernel.sum().square()
    grid = (counts / counts.sum()).view(1, 1, _GRID, _GRID)
    smoothed = F.conv2d(grid, kernel[None, None], padding=radius).flatten()
    smoothed = smoothed / smoothed.sum()
    seen = (counts > 0).sum()
    weights = 1.0 / ((1 - mix) * smoothed + mix / seen)
    return weights / (smoothed * weights).sum()


def annealed_mean(logits: Tensor, temperature: float = 0.38) -> Tensor:
    """ab [B, 2, H, W] from bin logits [B, Q, H, W]: the mean of softmax(logits / T) over the bin
    centres (eq. 5; T = 0.38, between the mean's desaturation and the mode's patchiness)."""
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", probabilities, ab_bin_centres(logits.device))


class ColorDecoder(nn.Module):
    """Feature map [B, D, h, w] -> bin logits [B, Q, H_out, W_out] (3x3 conv, upsample, 3x3, 1x1)."""

    def __init__(self, in_dim: int, hidden_dim: int, num_bins: int = NUM_BINS) -> None:
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

    def __init__(self, encoder: Encoder, *, hidden_dim: int = 256, output_stride: int = 4,
                 rebalance_mix: float = 0.5, sigma: float = 5.0, neighbours: int = 5) -> None:
        """``rebalance_mix`` is the paper's lambda (1: no rebalancing); ``sigma`` (ab units) is used
        by the soft encoding and the prior's smoothing alike, as in the paper."""
        super().__init__()
        if output_stride < 1:
            raise ValueError(f"output_stride must be >= 1, got {output_stride}")
        if not 0.0 <= rebalance_mix <= 1.0:
            raise ValueError(f"rebalance_mix must be in [0, 1], got {rebalance_mix}")
        self.encoder = encoder
        self.decoder = ColorDecoder(encoder.dim, hidden_dim)
        self.output_stride, self.rebalance_mix = output_stride, rebalance_mix
        self.sigma, self.neighbours = sigma, neighbours
        self.register_buffer("ab_counts", torch.zeros(NUM_BINS))

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("corrupted", {"task": "colorization"}),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        targets = views["targets"]
        if targets.dim() != 4 or targets.shape[1] != 2:
            raise ValueError(f"colorization targets must be Lab a/b [B, 2, H, W], got {tuple(targets.shape)}")
        size = (targets.shape[-2] // self.output_stride, targets.shape[-1] // self.output_stride)
        logits = self.decoder(_feature_map(self.encoder(**views["inputs"]).sequence), size)
        ab = F.interpolate(targets.float(), size=size, mode="area") if size != tuple(targets.shape[-2:]) else targets
        bins, soft = soft_encode(ab, self.neighbours, self.sigma)
        nearest = bins[:, 0]
        if self.training:  # the prior counts training data only, summed over every process
            self.ab_counts += all_reduce_sum(torch.bincount(nearest.flatten(), minlength=NUM_BINS).float())
        pixel_weights = rebalancing_weights(self.ab_counts, self.rebalance_mix, self.sigma)[nearest]
        log_probabilities = F.log_softmax(logits.float(), dim=1)
        cross_entropy = -(soft * log_probabilities.gather(1, bins)).sum(dim=1)  # [B, h, w]
        loss = global_mean(pixel_weights * cross_entropy)
        with torch.no_grad():
            logs = {"bin_accuracy": (logits.argmax(dim=1) == nearest).float().mean(),
                    "ab_error": (annealed_mean(logits) - ab).abs().mean()}
        return ObjectiveOutput(loss=loss, logs=logs)
