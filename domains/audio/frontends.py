"""Spectrogram front ends (torchaudio), computed on whole batches on the device.

Framing is Kaldi's (``center=False``): frame ``t`` is the window ``[t * hop, t * hop + n_fft)``,
so a clip of ``L`` valid samples has ``floor((L - n_fft) / hop) + 1`` frames that never see its
padding, and a row of a padded batch equals the same clip run alone. At 16 kHz with n_fft=400,
hop=160 these are exactly the 100 frames/s of LibriSpeech phone alignments.

``log_mel``: log(mel power + 1e-6), [B, T, n_mels]. ``mfcc``: DCT-II (ortho) of that log-mel,
[B, T, n_mfcc] (torchaudio ``MFCC(log_mels=True)``; its dB variant clamps to the batch maximum
minus ``top_db``, which would make a row depend on the others).
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

from domains.audio.config import AudioConfig
from domains.audio.frames import FrameGeometry, lengths_to_mask

__all__ = ["SpectrogramFrontEnd", "LOG_OFFSET"]

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
