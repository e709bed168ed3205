"""The audio domain: waveforms in, views for every audio method out, wav2vec2-family encoders.

Raw batch (``collate``, CPU)::

    {"waveforms": Float[B, L] mono at sample_rate, zero-padded to the longest clip,
     "lengths": Long[B] valid samples, "skipped": int, "skipped_samples": [skip record],
     "labels": Long[B], "speakers": Long[B]          (when the rows have label / speaker),
     "indices": Long[B]                              (each row's row_index: memory banks' sample ids),
     "frame_labels": Long[B, T]                     (aligned_frames data, see below)}

``frame_labels`` come aligned to the encoder's frames: T is the number of ``frame_geometry``
frames of the padded batch (what ``encoder(**plain_inputs)`` returns), each frame takes the label
of the 10 ms label frame whose centre is nearest to its own, and frames past a clip's valid
frames or labels are -100. Before an encoder is built (waveform front end, no ``frame_geometry``)
they stay at the label rate, 100 frames/s.

``Inputs`` (what ``encoder(**inputs)`` takes), by front end::

    waveform:        {"input_values": Float[B, L], "attention_mask": Long[B, L]}
    log_mel / mfcc:  {"input_features": Float[B, T, F], "attention_mask": Long[B, T]}

Views (``make_views``; every kind also carries "skipped" and, when present, "labels",
"speakers" and "indices"; "plain" and "masked" keep the whole clip, so they also carry "frame_labels")::

    plain      {"inputs"}                                   whole padded clips, deterministic
    augmented  {"views": [Inputs] * num_views}              crop, gain, noise, shift (+SpecAugment)
    masked     {"inputs" (+ "mask_time_indices"), "mask": Bool[B, T], "targets": Float[B, T, F],
                "clean": the same inputs without the mask (a teacher or labeler reads it: data2vec, HuBERT)}
    sequence   {"inputs", "valid": Bool[B, L], "frame_mask": Bool[B, T]}   one ordered crop per clip (CPC)

Options: augmented: ``num_views`` (2), ``crop_seconds``, ``policy`` ("default"; "simclr" and
"byol" mean the same, audio has one policy and the image-only blur/solarize asymmetry has no
audio counterpart; "dropout": ``num_views`` copies of one crop, for SimCSE-style dropout noise).
masked: ``mask_ratio``, ``mask_span``, ``targets`` (below), ``mask_token`` (true only: masked frames are
always replaced in place by the encoder's learned embedding). sequence: ``crop_seconds``, ``prediction_steps`` (an error
when the crops give too few frames to predict that far). Unknown options are errors.

``T`` is the encoder's frame count (``frame_geometry``, known once ``build_encoder`` ran). Masked
targets (option ``targets``), computed from the clean clip:

* None (default): the clip's log-mel frames (n_mels bands, normalised per clip and band over its
  valid frames), averaged onto the encoder's frames: regression targets in the spirit of data2vec /
  MAE-AST reconstruction. For spectrogram front ends the encoder frames are the spectrogram frames
  and the targets are the clean (unmasked) input features.
* "mfcc": HuBERT's first-iteration features (Hsu et al. 2021): n_mfcc MFCCs with their first and
  second deltas (Kaldi's 5-frame regression, a clip's last frame repeated past its end), 3 * n_mfcc
  values per frame, normalised per clip and value, averaged onto the encoder's frames.

"clean" holds the same encoder inputs without the mask (a labeler or teacher reading the clean
clip: HuBERT, data2vec).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from domains.audio.augment import (
    add_noise_at_snr,
    apply_gain,
    circular_time_shift,
    normalize_frames,
    normalize_waveforms,
    random_crop,
    spec_augment,
)
from domains.audio.config import AudioConfig
from domains.audio.encoders import AudioEncoder, build_audio_encoder
from domains.audio.frames import IGNORE_INDEX, FrameGeometry, lengths_to_mask, map_frame_labels, pool_frames
from domains.audio.frontends import SpectrogramFrontEnd, with_deltas
from domains.audio.loading import ROLES, ROW_INDEX, decode_clip, describe_audio, load_audio_rows
from domains.audio.masking import span_mask
from multissl.domain import BadSampleError, DataConfig, Domain, EncoderConfig, RawBatch, ViewRequest, Views, skip_record

__all__ = ["AudioDomain"]

_VIEW_OPTIONS = {
    "plain": set(),
    "augmented": {"num_views", "policy", "crop_seconds", "local_views"},
    "masked": {"mask_ratio", "mask_span", "targets", "mask_token"},
    "sequence": {"crop_seconds", "prediction_steps"},
}
_POLICIES = ("default", "simclr", "byol", "dropout")
#: frame-label tolerance: aligners and the 25 ms / 10 ms framing may disagree by a frame at the end
_LABEL_FRAME_SLACK = 2


class AudioDomain(Domain):
    """Audio: loading (folders, tables, Hub), collation, batched views on device, encoders.

    State set by the other calls (one domain serves one run):
      ``on_bad_sample``: the policy of the last ``load`` ("error" or "skip"), used by ``collate``.
      ``frame_geometry``: the encoder's frames (set by ``build_encoder``), used by the masked and
      sequence views and to align ``frame_labels`` in ``collate`` (build the encoder before the
      DataLoader starts its workers); assign it yourself to use them without building one here.
    """

    name = "audio"
    config_class = AudioConfig
    roles = ROLES
    view_kinds = ("plain", "augmented", "masked", "sequence")
    preprocessing_fields = ("sample_rate", "max_seconds", "normalize", "front_end", "n_fft", "hop_length", "n_mels",
                            "n_mfcc")

    def __init__(self, config: AudioConfig | None = None) -> None:
        super().__init__(config)
        config = self.config
        self.on_bad_sample = "error"
        self.spectrogram = None if config.front_end == "waveform" else SpectrogramFrontEnd(config.front_end, config)
        self.target_front_end = SpectrogramFrontEnd("log_mel", config)
        self.mfcc_front_end = SpectrogramFrontEnd("mfcc", config)
        #: 25 ms windows every 10 ms: the frames of phone alignments (100 frames/s)
        self.label_frame_geometry = FrameGeometry.window(round(0.025 * config.sample_rate), round(0.010 * config.sample_rate))
        self.frame_geometry: FrameGeometry | None = self.spectrogram.geometry if self.spectrogram is not None else None

    # ------------------------------------------------------------------ rows

    def load(self, data: DataConfig):
        if data.on_bad_sample not in ("error", "skip"):
            raise ValueError(f"DataConfig.on_bad_sample must be 'error' or 'skip', got {data.on_bad_sample!r}")
        self.on_bad_sample = data.on_bad_sample
        return load_audio_rows(data, self.config)

    def _class_id(self, row: dict[str, Any], role: str, name: str) -> int:
        value = row[role]
        if value is None:
            raise BadSampleError(f"{name}: has no {role} (null)", reason=f"missing {role}")
        if isinstance(value, str):
            names = self.config.class_names.get(role)
            if names is None:
                raise ValueError(f"{name}: {role} {value!r} is a string; load through AudioDomain.load or set AudioConfig.class_names[{role!r}]")
            if value not in names:
                raise BadSampleError(f"{name}: {role} {value!r} is not one of AudioConfig.class_names[{role!r}]", reason=f"unknown {role}")
            return names.index(value)
        return int(value)

    def collate(self, rows: list[dict[str, Any]]) -> RawBatch:
        """Decode, average channels, resample to ``sample_rate``, cut to ``max_seconds``, pad.

        A bad clip (unreadable, empty, NaN/inf, no audio column) raises :class:`BadSampleError`
        naming its row and file, or under ``on_bad_sample="skip"`` is dropped, counted in
        ``"skipped"`` and described (row, file, reason) in ``"skipped_samples"``.
        """
        config = self.config
        max_samples = config.seconds_to_samples(config.max_seconds) if config.max_seconds is not None else None
        waves: list[Tensor] = []
        kept: dict[str, list[Any]] = {"labels": [], "speakers": [], "frame_labels": [], "indices": []}
        records: list[dict[str, Any]] = []
        skipped = 0
        for index, row in enumerate(rows):
            try:
                if "audio" not in row:
                    raise BadSampleError(f"row {index} of the batch has no 'audio' column (it has {sorted(row)})", reason="missing audio")
                name = describe_audio(row["audio"])
                wave = decode_clip(row["audio"], config.sample_rate, max_samples)
                labels = self._class_id(row, "label", name) if "label" in row else None
                speaker = self._class_id(row, "speaker", name) if "speaker" in row else None
                frame_labels = self._frame_labels(row, name, wave, max_samples) if "frame_labels" in row else None
            except BadSampleError as error:
                where = f"row {row[ROW_INDEX]}" if ROW_INDEX in row else f"batch position {index}"
                if self.on_bad_sample != "skip":
                    raise BadSampleError(f"{where}: {error}", reason=error.reason) from error
                records.append(skip_record(f"{where} ({describe_audio(row.get('audio'))})", error))
                skipped += 1
                continue
            waves.append(wave)
            index_value = int(row[ROW_INDEX]) if ROW_INDEX in row else None
            for key, value in (("labels", labels), ("speakers", speaker), ("frame_labels", frame_labels),
                               ("indices", index_value)):
                if value is not None:
                    kept[key].append(value)

        lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
        waveforms = torch.zeros(len(waves), int(lengths.max()) if waves else 0)
        for row, wave in enumerate(waves):
            waveforms[row, : len(wave)] = wave
        batch: RawBatch = {"waveforms": waveforms, "lengths": lengths, "skipped": skipped, "skipped_samples": records}
        if rows and "label" in rows[0]:
            batch["labels"] = torch.tensor(kept["labels"], dtype=torch.long)
        if rows and "speaker" in rows[0]:
            batch["speakers"] = torch.tensor(kept["speakers"], dtype=torch.long)
        if rows and all(ROW_INDEX in row for row in rows):
            batch["indices"] = torch.tensor(kept["indices"], dtype=torch.long)
        if rows and "frame_labels" in rows[0]:
            batch["frame_labels"] = self._align_frame_labels(kept["frame_labels"], lengths, waveforms.shape[1])
        return batch

    def _align_frame_labels(self, labels: list[Tensor], lengths: Tensor, padded_length: int) -> Tensor:
        """Per-clip 10 ms labels -> Long[B, T] on ``frame_geometry`` frames (see module doc)."""
        width = max((len(f) for f in labels), default=0)
        at_label_rate = torch.full((len(labels), width), IGNORE_INDEX, dtype=torch.long)
        for row, clip_labels in enumerate(labels):
            at_label_rate[row, : len(clip_labels)] = clip_labels
        geometry = self.frame_geometry
        if geometry is None:
            return at_label_rate
        num_frames = int(geometry.num_frames(torch.tensor([padded_length]))[0])
        aligned = map_frame_labels(at_label_rate, self.label_frame_geometry, geometry, num_frames)
        return aligned.masked_fill(~lengths_to_mask(geometry.num_frames(lengths), num_frames), IGNORE_INDEX)

    def _frame_labels(self, row: dict[str, Any], name: str, wave: Tensor, max_samples: int | None) -> Tensor:
        labels = torch.as_tensor(row["frame_labels"], dtype=torch.long)
        frames = int(self.label_frame_geometry.num_frames(torch.tensor([len(wave)]))[0])
        was_cut = max_samples is not None and len(wave) == max_samples
        if len(labels) > frames + _LABEL_FRAME_SLACK and not was_cut or len(labels) < frames - _LABEL_FRAME_SLACK:
            raise BadSampleError(f"{name}: {len(labels)} frame labels for {frames} frames of 10 ms: not this clip's alignment",
                                 reason="frame labels do not fit the clip")
        return labels[:frames]

    # ------------------------------------------------------------------ views

    def make_views(self, batch: RawBatch, request: ViewRequest, generator: torch.Generator) -> Views:
        self.check_view_kind(request)
        request.checked_options("audio", dict.fromkeys(_VIEW_OPTIONS[request.kind]))
        waveforms, lengths = batch["waveforms"], batch["lengths"].to(batch["waveforms"].device)
        views = getattr(self, f"_{request.kind}_view")(waveforms, lengths, request.options, generator)
        for key in ("labels", "speakers", "indices") + (("frame_labels",) if request.kind in ("plain", "masked") else ()):
            if key in batch:
                views[key] = batch[key].to(waveforms.device)
        views["skipped"] = batch.get("skipped", 0)
        return views

    def inputs(self, waveforms: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Encoder inputs of clean clips; with a generator, spectrograms also get SpecAugment."""
        config = self.config
        if self.spectrogram is None:
            values = normalize_waveforms(waveforms, lengths) if config.normalize else waveforms * lengths_to_mask(lengths, waveforms.shape[1])
            return {"input_values": values, "attention_mask": lengths_to_mask(lengths, waveforms.shape[1]).long()}
        features, frame_lengths = self.spectrogram(waveforms, lengths)
        if config.normalize:
            features = normalize_frames(features, frame_lengths)
        if generator is not None:
            features = spec_augment(
                features, frame_lengths, config.time_masks, config.time_mask_frames, config.freq_masks, config.freq_mask_bins, generator
            )
        return {"input_features": features, "attention_mask": lengths_to_mask(frame_lengths, features.shape[1]).long()}

    def _plain_view(self, waveforms: Tensor, lengths: Tensor, options: dict, generator: torch.Generator) -> Views:
        return {"inputs": self.inputs(waveforms, lengths)}

    def _augmented_view(self, waveforms: Tensor, lengths: Tensor, options: dict, generator: torch.Generator) -> Views:
        config = self.config
        num_views = int(options.get("num_views", 2))
        policy = options.get("policy", "default")
        if policy not in _POLICIES:
            raise ValueError(f"audio augmented view: unknown policy {policy!r}; known: {list(_POLICIES)}")
        if options.get("local_views"):
            raise ValueError("audio augmented view: multi-crop local_views are not supported")
        crop_length = config.seconds_to_samples(float(options.get("crop_seconds", config.crop_seconds)))
        if policy == "dropout":  # SimCSE: identical copies, the encoder's dropout makes them differ
            crops, crop_lengths = random_crop(waveforms, lengths, crop_length, generator)
            inputs = self.inputs(crops, crop_lengths)
            return {"views": [dict(inputs) for _ in range(num_views)]}
        views = []
        for _ in range(num_views):  # a loop over views; every op inside is batched over rows
            crops, crop_lengths = random_crop(waveforms, lengths, crop_length, generator)
            crops = apply_gain(crops, config.gain_db, generator)
            crops = add_noise_at_snr(crops, crop_lengths, config.noise_snr_db, generator)
            crops = circular_time_shift(crops, crop_lengths, round(config.time_shift_seconds * config.sample_rate), generator)
            views.append(self.inputs(crops, crop_lengths, generator))
        return {"views": views}

    def _encoder_frames(self, lengths: Tensor, padded_length: int) -> tuple[FrameGeometry, int, Tensor]:
        """(encoder frame geometry in samples, frames of the padded batch, valid frames per row)."""
        if self.frame_geometry is None:
            raise ValueError(
                "this view needs the encoder's frame rate: call AudioDomain.build_encoder(...) first "
                "(or set domain.frame_geometry)"
            )
        geometry = self.frame_geometry
        total = int(geometry.num_frames(torch.tensor([padded_length]))[0])
        return geometry, total, geometry.num_frames(lengths)

    def _masked_view(self, waveforms: Tensor, lengths: Tensor, options: dict, generator: torch.Generator) -> Views:
        config = self.config
        mask_ratio = float(options.get("mask_ratio", config.mask_ratio))
        mask_span = int(options.get("mask_span", config.mask_span))
        if not 0.0 < mask_ratio < 1.0 or mask_span < 1:
            raise ValueError(f"masked view: mask_ratio must lie in (0, 1) and mask_span >= 1, got {mask_ratio}, {mask_span}")
        target_kind = options.get("targets")
        if target_kind not in (None, "mfcc"):
            raise ValueError(f"masked view: targets must be None (log-mel or the input features) or 'mfcc', "
                             f"got {target_kind!r}")
        if options.get("mask_token", True) is not True:
            raise ValueError("audio masked view: masked frames are always replaced in place (the encoder's "
                             "masked_spec_embed), so mask_token can only be true")
        geometry, num_frames, valid_frames = self._encoder_frames(lengths, waveforms.shape[1])
        inputs = self.inputs(waveforms, lengths)
        if self.spectrogram is not None and target_kind is None:
            targets = inputs["input_features"].clone()
            has_target = inputs["attention_mask"].bool()
        else:
            front_end = self.target_front_end if target_kind is None else self.mfcc_front_end
            frames, frame_lengths = front_end(waveforms, lengths)
            if target_kind == "mfcc":
                frames = with_deltas(frames, frame_lengths)
            frames = normalize_frames(frames, frame_lengths)
            valid = lengths_to_mask(frame_lengths, frames.shape[1])
            targets, has_target = pool_frames(frames, valid, front_end.geometry, geometry, num_frames)
        mask = span_mask(valid_frames, num_frames, mask_ratio, mask_span, generator) & has_target
        clean = dict(inputs)
        inputs["mask_time_indices"] = mask
        return {"inputs": inputs, "mask": mask, "targets": targets, "clean": clean}

    def _sequence_view(self, waveforms: Tensor, lengths: Tensor, options: dict, generator: torch.Generator) -> Views:
        crop_length = self.config.seconds_to_samples(float(options.get("crop_seconds", self.config.sequence_seconds)))
        crops, crop_lengths = random_crop(waveforms, lengths, crop_length, generator)
        _, num_frames, valid_frames = self._encoder_frames(crop_lengths, crop_length)
        steps = options.get("prediction_steps")
        if steps is not None and num_frames <= int(steps):
            raise ValueError(
                f"sequence view: crops of {crop_length} samples give {num_frames} encoder frames, "
                f"too few to predict {steps} steps ahead; raise crop_seconds"
            )
        inputs = self.inputs(crops, crop_lengths)
        return {"inputs": inputs, "valid": inputs["attention_mask"].bool(),
                "frame_mask": lengths_to_mask(valid_frames, num_frames)}

    # ------------------------------------------------------------------ encoders

    def build_encoder(self, config: EncoderConfig) -> AudioEncoder:
        """A wav2vec2 (waveform front end) or w2v-bert (spectrogram front ends) encoder; see encoders."""
        spectrogram = self.spectrogram
        encoder = build_audio_encoder(
            config,
            sample_rate=self.config.sample_rate,
            normalize=self.config.normalize,
            front_end=self.config.front_end,
            feature_size=spectrogram.num_bins if spectrogram is not None else 1,
            front_end_geometry=spectrogram.geometry if spectrogram is not None else None,
        )
        self.frame_geometry = encoder.frame_geometry
        return encoder
