"""Frame geometry: which samples a frame sees, and moving per-frame values between frame rates.

A strided stack of 1-D windows (a wav2vec 2.0 conv feature encoder, an STFT with Kaldi framing,
phone alignments at 100 frames/s) has frame ``j`` covering samples ``[j * stride, j * stride +
receptive_field)`` of the clip, and ``floor((L - k) / s) + 1`` frames per layer for an input of
``L`` (no padding, as ``Wav2Vec2Model._get_feat_extract_output_lengths``). Frames are compared by
their centres ``j * stride + (receptive_field - 1) / 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FrameGeometry", "map_frame_labels", "pool_frames", "lengths_to_mask", "IGNORE_INDEX"]

#: label of frames without one (padding), as torch's cross_entropy ignores it
IGNORE_INDEX = -100


def lengths_to_mask(lengths: Tensor, size: int) -> Tensor:
    """Bool[B, size], True on the first ``lengths[b]`` positions of row b."""
    return torch.arange(size, device=lengths.device) < lengths[:, None]


@dataclass(frozen=True)
class FrameGeometry:
    """A stack of unpadded strided windows: ``kernels[i]``, ``strides[i]`` in samples of layer i's input."""

    kernels: tuple[int, ...]
    strides: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.kernels) != len(self.strides) or not self.kernels:
            raise ValueError(f"FrameGeometry needs one stride per kernel, got {self.kernels} and {self.strides}")

    @classmethod
    def window(cls, window: int, hop: int) -> "FrameGeometry":
        """One analysis window (STFT, Kaldi fbank, alignment frames): ``window`` samples every ``hop``."""
        return cls((int(window),), (int(hop),))

    @property
    def stride(self) -> int:
        """Samples between consecutive frames."""
        return math.prod(self.strides)

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees."""
        field, jump = 1, 1
        for kernel, stride in zip(self.kernels, self.strides):
            field += (kernel - 1) * jump
            jump *= stride
        return field

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Frames for inputs of ``lengths`` samples (Long[B]); 0 when shorter than one frame."""
        frames = lengths.long()
        for kernel, stride in zip(self.kernels, self.strides):
            frames = torch.div(frames - kernel, stride, rounding_mode="floor") + 1
            frames = frames.clamp_min(0)
        return frames

    def centers(self, num_frames: int, device: torch.device | None = None) -> Tensor:
        """Float[num_frames]: centre of each frame, in samples."""
        return torch.arange(num_frames, device=device, dtype=torch.float32) * self.stride + (self.receptive_field - 1) / 2


def _nearest_source_frame(source: FrameGeometry, target: FrameGeometry, num_source: int, num_target: int, device) -> Tensor:
    centers = target.centers(num_target, device)
    index = torch.round((centers - (source.receptive_field - 1) / 2) / source.stride).long()
    return index.clamp(0, max(num_source - 1, 0))


def map_frame_labels(labels: Tensor, source: FrameGeometry, target: FrameGeometry, num_target_frames: int) -> Tensor:
    """Per-frame class labels at another frame rate: each target frame takes the label of the
    source frame whose centre is nearest to its own.

    labels:  Long[B, S] at the source rate, ``IGNORE_INDEX`` (-100) past each clip's labelled frames.
    Returns Long[B, T] with T = ``num_target_frames``; target frames whose nearest source frame is
    unlabelled get -100. E.g. phone labels at 100 frames/s (``FrameGeometry.window(400, 160)`` at
    16 kHz) onto a wav2vec 2.0 encoder (``encoder.frame_geometry``, 50 frames/s) take every other
    label, offset by the encoder's larger window.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be [B, S], got shape {tuple(labels.shape)}")
    if labels.shape[1] == 0:
        return labels.new_full((labels.shape[0], num_target_frames), IGNORE_INDEX)
    index = _nearest_source_frame(source, target, labels.shape[1], num_target_frames, labels.device)
    return labels[:, index]


def pool_frames(
    values: Tensor, valid: Tensor, source: FrameGeometry, target: FrameGeometry, num_target_frames: int
) -> tuple[Tensor, Tensor]:
    """Average per-frame vectors onto a coarser (or finer) frame rate.

    values: [B, S, F] at the source rate; valid: Bool[B, S]. Target frame j averages the valid
    source frames whose centres lie within half a target stride of its centre; where there is none
    (a finer target) it takes the nearest source frame. Returns ([B, T, F], Bool[B, T] True where
    the average had at least one valid source frame).
    """
    num_source = values.shape[1]
    source_centers = source.centers(num_source, values.device)
    target_centers = target.centers(num_target_frames, values.device)
    distance = (source_centers[None, :] - target_centers[:, None]).abs()
    weights = (distance < target.stride / 2) | ((distance == target.stride / 2) & (source_centers[None, :] > target_centers[:, None]))
    nearest = _nearest_source_frame(source, target, num_source, num_target_frames, values.device)
    empty = ~weights.any(dim=1)
    weights[empty, nearest[empty]] = True
    weights = weights.to(values.dtype)  # [T, S], shared by the batch; validity enters per sample
    valid = valid.to(values.dtype)
    counts = valid @ weights.T  # [B, T]
    pooled = torch.matmul(weights, values * valid[..., None]) / counts.clamp_min(1.0)[..., None]
    return pooled, counts > 0
