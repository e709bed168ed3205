"""Batched waveform and spectrogram augmentations with per-sample random parameters.

Every function takes a padded batch (waveforms [B, L] or features [B, T, F]) with the valid length
of each row, draws its parameters per row from the ``torch.Generator`` it is given (nothing else),
works on the batch's device without a Python loop over rows, and leaves padding at zero so the
lengths stay the attention mask.

Waveform augmentations follow COLA (Saeed et al. 2021: random crops of one clip as positives) and
the gain / noise / shift set of BYOL-A and wav2vec-style robustness work; SpecAugment is Park et
al. 2019 (time and frequency masks, here without time warping).
"""

from __future__ import annotations

import torch
from torch import Tensor

from domains.audio.frames import lengths_to_mask
from domains.audio.masking import uniform

__all__ = [
    "random_crop",
    "apply_gain",
    "add_noise_at_snr",
    "circular_time_shift",
    "spec_augment",
    "normalize_waveforms",
    "normalize_frames",
]


def _uniform_between(low: float, high: float, batch: int, generator: torch.Generator, device) -> Tensor:
    return low + (high - low) * uniform((batch,), generator, device)


def _windows(waveforms: Tensor, start: Tensor, length: int) -> Tensor:
    """Row b's samples [start[b], start[b] + length): one row gather from a strided view, no index matrix."""
    rows = torch.arange(waveforms.shape[0], device=waveforms.device)
    return waveforms.unfold(1, length, 1)[rows, start]


def random_crop(waveforms: Tensor, lengths: Tensor, crop_length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Crop ``crop_length`` samples from each row's valid region, at a uniform random offset.

    Rows shorter than the crop keep all their samples, start at 0 and are zero-padded.
    Returns (crops [B, crop_length], new lengths Long[B] = min(lengths, crop_length)).
    """
    batch, length = waveforms.shape
    if length < crop_length:
        waveforms = torch.nn.functional.pad(waveforms, (0, crop_length - length))
    slack = (lengths - crop_length).clamp_min(0)
    start = (uniform((batch,), generator, waveforms.device) * (slack + 1)).long().minimum(slack)
    new_lengths = lengths.clamp_max(crop_length)
    crops = _windows(waveforms, start, crop_length)
    return crops * lengths_to_mask(new_lengths, crop_length), new_lengths


def apply_gain(waveforms: Tensor, gain_db: tuple[float, float], generator: torch.Generator) -> Tensor:
    """Multiply each row by 10^(g/20), g ~ U[gain_db] dB."""
    gain = _uniform_between(*gain_db, waveforms.shape[0], generator, waveforms.device)
    return waveforms * torch.pow(10.0, gain / 20.0).to(waveforms.dtype)[:, None]


def add_noise_at_snr(waveforms: Tensor, lengths: Tensor, snr_db: tuple[float, float], generator: torch.Generator) -> Tensor:
    """Add white Gaussian noise at SNR ~ U[snr_db] dB per row, measured over the row's valid samples.

    noise std = sqrt(P_signal / 10^(SNR/10)), P_signal = mean square of the valid samples (silent
    rows get no noise). Expects zero padding (as collation and the other functions leave it) and
    keeps it.
    """
    batch, length = waveforms.shape
    power = waveforms.square().sum(dim=1) / lengths.clamp_min(1).to(waveforms.dtype)
    snr = _uniform_between(*snr_db, batch, generator, waveforms.device).to(waveforms.dtype)
    noise_std = torch.sqrt(power / torch.pow(10.0, snr / 10.0))
    noise = torch.randn((batch, length), generator=generator, device=generator.device).to(waveforms)
    noise.mul_(noise_std[:, None]).mul_(lengths_to_mask(lengths, length))
    return noise.add_(waveforms)


def circular_time_shift(waveforms: Tensor, lengths: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Rotate each row's valid region by an integer shift ~ U{-max_shift..max_shift} samples.

    A rotation rather than a zero-filled shift: no content leaves the crop and the padding, hence
    the mask, does not move. Row b becomes x[(t - s) mod n_b] for t < n_b: with s in [0, n_b),
    positions t >= s read the window starting at -s, positions t < s the window starting at n_b - s.
    """
    batch, length = waveforms.shape
    if max_shift <= 0:
        return waveforms
    shift = torch.round((2 * uniform((batch,), generator, waveforms.device) - 1) * max_shift).long()
    shift = torch.remainder(shift, lengths.clamp_min(1))
    padded = torch.nn.functional.pad(waveforms, (length, length))  # window starts stay in range
    head = _windows(padded, length + lengths - shift, length)  # x[n - s + t], used where t < s
    tail = _windows(padded, length - shift, length)  # x[t - s], used where t >= s
    position = torch.arange(length, device=waveforms.device)
    rotated = torch.where(position < shift[:, None], head, tail)
    return rotated * lengths_to_mask(lengths, length)


def _random_bands(
    extent: Tensor, max_width: int, count: int, size: int, generator: torch.Generator, device
) -> Tensor:
    """Bool[B, size]: union of ``count`` bands per row, width ~ U{0..max_width}, inside [0, extent[b])."""
    batch = extent.shape[0]
    if count == 0 or max_width == 0:
        return torch.zeros(batch, size, dtype=torch.bool, device=device)
    width = (uniform((batch, count), generator, device) * (max_width + 1)).long().minimum(extent[:, None])
    start = (uniform((batch, count), generator, device) * (extent[:, None] - width + 1)).long()
    position = torch.arange(size, device=device)[None, None, :]
    inside = (position >= start[..., None]) & (position < (start + width)[..., None])
    return inside.any(dim=1)


def spec_augment(
    features: Tensor,
    frame_lengths: Tensor,
    time_masks: int,
    time_mask_frames: int,
    freq_masks: int,
    freq_mask_bins: int,
    generator: torch.Generator,
) -> Tensor:
    """SpecAugment time and frequency masking (Park et al. 2019), parameters drawn per row.

    features [B, T, F] (after normalisation, so the fill value 0 is each bin's mean). Time masks
    lie inside each row's valid frames; masked cells are set to 0.
    """
    batch, frames, bins = features.shape
    device = features.device
    time = _random_bands(frame_lengths, time_mask_frames, time_masks, frames, generator, device)
    freq = _random_bands(torch.full((batch,), bins, device=device), freq_mask_bins, freq_masks, bins, generator, device)
    drop = time[:, :, None] | freq[:, None, :]
    return features.masked_fill(drop, 0.0)


def normalize_waveforms(waveforms: Tensor, lengths: Tensor, eps: float = 1e-7) -> Tensor:
    """Zero mean, unit variance per row over its valid samples; padding set to 0.

    The formula of ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`` ((x - mean) / sqrt(var +
    1e-7), population variance), so the saved processor reproduces training inputs.
    """
    valid = lengths_to_mask(lengths, waveforms.shape[1]).to(waveforms.dtype)
    count = lengths.clamp_min(1).to(waveforms.dtype)[:, None]
    mean = (waveforms * valid).sum(dim=1, keepdim=True) / count
    variance = ((waveforms - mean).square() * valid).sum(dim=1, keepdim=True) / count
    return (waveforms - mean) / torch.sqrt(variance + eps) * valid


def normalize_frames(features: Tensor, frame_lengths: Tensor, eps: float = 1e-7) -> Tensor:
    """Zero mean, unit variance per row and bin over the row's valid frames: [B, T, F] -> [B, T, F]."""
    valid = lengths_to_mask(frame_lengths, features.shape[1]).to(features.dtype)[..., None]
    count = frame_lengths.clamp_min(1).to(features.dtype)[:, None, None]
    mean = (features * valid).sum(dim=1, keepdim=True) / count
    variance = ((features - mean).square() * valid).sum(dim=1, keepdim=True) / count
    return (features - mean) / torch.sqrt(variance + eps) * valid
