"""Spectrogram front ends (torchaudio), computed on whole batches on the device.

Framing is Kaldi's (``center=False``): frame ``t`` is the window ``[t * hop, t * hop + n_fft)``,
so a clip of ``L`` valid samples has ``floor((L - n_fft) / hop) + 1`` frames that never see its
padding, and a row of a padded batch equals the same clip run alone. At 16 kHz with n_fft=400,
hop=160 these are exactly the 100 frames/s of LibriSpeech phone alignments.

``log_mel``: log(mel power + 1e-6), [B, T, n_mels]. ``mfcc``: DCT-II (ortho) of that log-mel,
[B, T, n_mfcc] (torchaudio ``MFCC(log_mels=True)``; its dB variant clamps to the batch maximum
minus ``top_db``, which would make a row depend on the others). :func:`with_deltas` appends first
and second deltas (HuBERT's 39-dimensional MFCC features with n_mfcc = 13).
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

from domains.audio.config import AudioConfig
from domains.audio.frames import FrameGeometry, lengths_to_mask

__all__ = ["SpectrogramFrontEnd", "LOG_OFFSET", "with_deltas"]

#: added to mel power before the log, as torchaudio's MFCC(log_mels=True) does
LOG_OFFSET = 1e-6


class SpectrogramFrontEnd(nn.Module):
    """waveforms [B, L] + lengths Long[B] -> (features [B, T, F], frame_lengths Long[B])."""

    def __init__(self, kind: str, config: AudioConfig) -> None:
        super().__init__()
        if kind not in ("log_mel", "mfcc"):
            raise ValueError(f"spectrogram front end must be 'log_mel' or 'mfcc', got {kind!r}")
        self.kind = kind
        mel_options = dict(n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels, center=False, power=2.0)
        if kind == "log_mel":
            self.transform = torchaudio.transforms.MelSpectrogram(sample_rate=config.sample_rate, **mel_options)
            self.num_bins = config.n_mels
        else:
            self.transform = torchaudio.transforms.MFCC(
                sample_rate=config.sample_rate, n_mfcc=config.n_mfcc, log_mels=True, melkwargs=mel_options
            )
            self.num_bins = config.n_mfcc
        self.geometry = FrameGeometry.window(config.n_fft, config.hop_length)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        frame_lengths = self.geometry.num_frames(lengths)
        if waveforms.shape[1] < self.geometry.receptive_field:  # shorter than one window: no frames at all
            return waveforms.new_zeros(waveforms.shape[0], 0, self.num_bins), frame_lengths
        # The STFT runs in float32: bf16/fp16 spectra lose the low-energy bands.
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            spectrum = self.transform.to(waveforms.device)(waveforms.float())
        if self.kind == "log_mel":
            spectrum = torch.log(spectrum + LOG_OFFSET)
        features = spectrum.transpose(1, 2) * lengths_to_mask(frame_lengths, spectrum.shape[-1])[..., None]
        return features.contiguous(), frame_lengths


def with_deltas(features: Tensor, frame_lengths: Tensor, window: int = 5) -> Tensor:
    """[B, T, F] -> [B, T, 3F]: the features, their deltas and their delta-deltas (Kaldi's
    ``add-deltas``: a ``window``-frame linear regression, ``torchaudio.functional.compute_deltas``,
    the second order being the regression applied twice). As Kaldi, a clip's first and last frames
    are repeated beyond its edges before either pass, so a row's values do not depend on how much
    its batch padded it; frames past the end are zero."""
    frames = features.shape[1]
    if frames == 0:
        return features.new_zeros(features.shape[0], 0, 3 * features.shape[2])
    margin = 2 * (window // 2)  # the second pass reads first deltas this far beyond either edge
    steps = torch.arange(-margin, frames + margin, device=features.device)
    last = (frame_lengths.to(features.device) - 1).clamp(0, frames - 1)
    edge = torch.minimum(steps.clamp_min(0)[None, :], last[:, None])
    repeated = features.gather(1, edge[..., None].expand(-1, -1, features.shape[2])).transpose(1, 2)  # [B, F, T']
    first = torchaudio.functional.compute_deltas(repeated, win_length=window)
    second = torchaudio.functional.compute_deltas(first, win_length=window)
    stacked = torch.cat([repeated, first, second], dim=1)[..., margin : margin + frames].transpose(1, 2)
    return stacked * lengths_to_mask(frame_lengths.to(features.device), frames)[..., None]
