"""Typed settings of the audio domain (recipes fill them under ``domain.options``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["AudioConfig", "FRONT_ENDS"]

FRONT_ENDS = ("waveform", "log_mel", "mfcc")


@dataclass
class AudioConfig:
    """Everything the audio domain needs to turn rows into encoder inputs.

    Signal:
        sample_rate:      every clip is resampled to this rate (Hz) at collation.
        max_seconds:      collation keeps the first ``max_seconds`` of a clip (None: keep all).
        normalize:        zero mean, unit variance per clip over its valid samples (waveform front
                          end, exactly as ``Wav2Vec2FeatureExtractor(do_normalize=True)``), or per
                          mel/cepstral bin over its valid frames (spectrogram front ends). Note that
                          waveform normalisation undoes ``gain_db``: gain only matters when it is off.

    Front end (computed on whole batches on the device):
        front_end:        "waveform" (inputs ``input_values`` [B, L]), "log_mel" or "mfcc" (inputs
                          ``input_features`` [B, T, F]).
        n_fft, hop_length: analysis window and hop in samples (400/160 = 25 ms / 10 ms at 16 kHz,
                          Kaldi framing: frames lie wholly inside the clip, no centring).
        n_mels, n_mfcc:   mel bands; cepstral coefficients of the "mfcc" front end.

    Augmented views (one random draw per sample, from the engine's generator):
        crop_seconds:     length of each random crop (shorter clips are padded and masked).
        gain_db:          uniform gain range in dB.
        noise_snr_db:     uniform signal-to-noise range in dB of the additive white Gaussian noise.
        time_shift_seconds: largest circular shift (either way) of the crop's valid region.
        time_masks, time_mask_frames: SpecAugment time masks per view, each up to this many frames
                          wide (spectrogram front ends only; Park et al. 2019).
        freq_masks, freq_mask_bins:   SpecAugment frequency masks, each up to this many bins.

    Masked and sequence views:
        mask_ratio:       fraction of each clip's valid encoder frames to mask ("masked" view).
        mask_span:        frames per masked span (wav2vec 2.0 uses 10 frames = 200 ms).
        sequence_seconds: length of the ordered crops of the "sequence" view (CPC).

    Rows (applied by ``AudioDomain.load``, see ``domains.audio.loading``):
        filename_pattern: regex with named groups searched in each audio path (relative to a
                          folder root); each group becomes a column, all-digit values as ints.
                          FSDD: ``(?P<label>\\d)_(?P<speaker>[a-z]+)_(?P<take>\\d+)\\.wav$``.
        where:            keep rows whose columns match: {column: value | [values] | "lo..hi"}
                          ("lo..hi" is an inclusive integer range), e.g. {"take": "5..49"}.
        class_names:      role -> ordered class names for string labels ({"speaker": [...]});
                          without it string columns are encoded as the sorted unique values of
                          the loaded split (before ``where``), so splits taken with ``where`` from
                          one source share ids.
    """

    sample_rate: int = 16000
    max_seconds: float | None = 16.0
    normalize: bool = True

    front_end: Literal["waveform", "log_mel", "mfcc"] = "waveform"
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    n_mfcc: int = 40

    crop_seconds: float = 1.0
    gain_db: tuple[float, float] = (-6.0, 6.0)
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    time_shift_seconds: float = 0.1
    time_masks: int = 2
    time_mask_frames: int = 20
    freq_masks: int = 2
    freq_mask_bins: int = 10

    mask_ratio: float = 0.5
    mask_span: int = 10
    sequence_seconds: float = 2.0

    filename_pattern: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"AudioConfig.front_end must be one of {list(FRONT_ENDS)}, got {self.front_end!r}")
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc", "mask_span"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"AudioConfig.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("crop_seconds", "sequence_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AudioConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"AudioConfig.max_seconds must be positive or None, got {self.max_seconds!r}")
        for name in ("gain_db", "noise_snr_db"):
            low_high = tuple(float(v) for v in getattr(self, name))
            if len(low_high) != 2 or low_high[0] > low_high[1]:
                raise ValueError(f"AudioConfig.{name} must be a (low, high) pair with low <= high, got {getattr(self, name)!r}")
            setattr(self, name, low_high)
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"AudioConfig.mask_ratio must lie in (0, 1), got {self.mask_ratio!r}")
        if self.time_shift_seconds < 0:
            raise ValueError(f"AudioConfig.time_shift_seconds must be >= 0, got {self.time_shift_seconds!r}")
        for name in ("time_masks", "time_mask_frames", "freq_masks", "freq_mask_bins"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"AudioConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.filename_pattern is not None:
            try:
                compiled = re.compile(self.filename_pattern)
            except re.error as error:
                raise ValueError(f"AudioConfig.filename_pattern {self.filename_pattern!r} is not a regex: {error}") from None
            if not compiled.groupindex:
                raise ValueError(
                    f"AudioConfig.filename_pattern {self.filename_pattern!r} has no named group; "
                    "write (?P<label>...) for each column it should produce"
                )

    def seconds_to_samples(self, seconds: float) -> int:
        return max(1, round(seconds * self.sample_rate))
