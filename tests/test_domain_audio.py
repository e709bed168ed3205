"""Audio domain: loading files laid out as ../shared/data (FSDD, LibriSpeech: the synthetic tree of
tests/fixture_data.py), decoding, collation, bad input, and the batched views.

Expected values come from independent computations in the tests (file names, soundfile headers,
numpy FFTs, per-sample torchaudio runs, loops over the formulas), never from running the code.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from domains.audio import AudioConfig, AudioDomain, FrameGeometry, map_frame_labels, read_frame_labels
from domains.audio.augment import add_noise_at_snr, apply_gain, circular_time_shift, normalize_waveforms, random_crop
from domains.audio.frontends import SpectrogramFrontEnd
from domains.audio.masking import span_mask
from multissl.domain import BadSampleError, DataConfig, EncoderConfig
from multissl.views import ViewRequest

FSDD_PATTERN = r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav$"
SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]


@pytest.fixture(scope="module")
def fsdd(data_root: Path) -> Path:
    return data_root / "audio" / "fsdd" / "recordings"


@pytest.fixture(scope="module")
def librispeech(data_root: Path) -> Path:
    return data_root / "audio" / "librispeech_mini"


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch_of(waves: list[np.ndarray | torch.Tensor]) -> dict:
    """A raw batch built by hand (padding with zeros), independent of collate."""
    waves = [torch.as_tensor(w, dtype=torch.float32) for w in waves]
    lengths = torch.tensor([len(w) for w in waves])
    padded = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        padded[i, : len(w)] = w
    return {"waveforms": padded, "lengths": lengths, "skipped": 0}


def sine(frequency: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


# ------------------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def fsdd_splits(fsdd: Path):
    """FSDD's standard split by take (test: takes 0-4), loaded through the domain from the folder."""
    train_domain = AudioDomain(AudioConfig(filename_pattern=FSDD_PATTERN, where={"take": "5..49"}))
    probe_domain = AudioDomain(AudioConfig(filename_pattern=FSDD_PATTERN, where={"take": list(range(5))}))
    return train_domain.load(DataConfig(path=str(fsdd))), probe_domain.load(DataConfig(path=str(fsdd)))


def test_fsdd_filename_labels_and_take_filter(fsdd_splits, fsdd: Path):
    train, probe = fsdd_splits
    files = sorted(os.listdir(fsdd))
    takes = [int(name.split("_")[2].split(".")[0]) for name in files]
    assert len(train) == sum(t >= 5 for t in takes) > 0
    assert len(probe) == sum(t < 5 for t in takes) == len(SPEAKERS) * 10 * 5
    assert set(train.column_names) == {"audio", "label", "speaker", "row_index"}
    # Speaker ids are the sorted names of the whole folder, identical in both splits.
    assert train.features["speaker"].names == probe.features["speaker"].names == SPEAKERS
    for row in list(probe.select(range(0, len(probe), 37))) + list(train.select(range(0, len(train), 41))):
        digit, speaker, _ = Path(row["audio"]).stem.split("_")
        assert row["label"] == int(digit)
        assert SPEAKERS[row["speaker"]] == speaker
    probe_takes = {int(Path(p).stem.split("_")[2]) for p in probe["audio"]}
    train_takes = {int(Path(p).stem.split("_")[2]) for p in train["audio"]}
    assert probe_takes == set(range(5)) and train_takes == set(takes) - set(range(5))


def test_split_slices_and_limit(fsdd: Path):
    domain = AudioDomain(AudioConfig(filename_pattern=FSDD_PATTERN))
    head = domain.load(DataConfig(path=str(fsdd), split="train[:10]"))
    assert head["audio"] == [str(fsdd / name) for name in sorted(os.listdir(fsdd))[:10]]
    assert len(domain.load(DataConfig(path=str(fsdd), split="train[:10%]"))) == len(os.listdir(fsdd)) // 10
    assert len(domain.load(DataConfig(path=str(fsdd), limit=7))) == 7
    with pytest.raises(ValueError, match="single 'train' split"):
        domain.load(DataConfig(path=str(fsdd), split="test"))


def test_load_errors_name_what_is_wrong(fsdd: Path, tmp_path: Path):
    # a mapping that does not fit a folder of files: the folder's audio column is read, and said
    assert AudioDomain().load(DataConfig(path=str(fsdd), columns={"audio": "file"}, limit=2)).num_rows == 2
    (tmp_path / "table.csv").write_text("name,digit\na.wav,1\n")
    with pytest.raises(ValueError, match=r"no audio column: 'file' is not among the columns \['name', 'digit'\]"):
        AudioDomain().load(DataConfig(path=str(tmp_path / "table.csv"), columns={"audio": "file"}))
    with pytest.raises(ValueError, match="unknown role"):
        AudioDomain().load(DataConfig(path=str(fsdd), columns={"image": "audio"}))
    with pytest.raises(ValueError, match="unknown column.*'take'"):
        AudioDomain(AudioConfig(where={"take": "0..4"})).load(DataConfig(path=str(fsdd)))
    with pytest.raises(ValueError, match="does not match filename_pattern"):
        AudioDomain(AudioConfig(filename_pattern=r"(?P<label>\d)_(?P<speaker>[A-Z]+)_")).load(DataConfig(path=str(fsdd)))
    with pytest.raises(FileNotFoundError, match="no audio files"):
        AudioDomain().load(DataConfig(path=str(tmp_path)))
    with pytest.raises(ValueError, match="named group"):
        AudioConfig(filename_pattern=r"\d_[a-z]+")


def test_tables_of_paths_bytes_and_audio_structs(fsdd: Path, tmp_path: Path):
    import datasets

    names = sorted(os.listdir(fsdd))[:6]
    digits = [int(n.split("_")[0]) for n in names]
    # csv with paths relative to the table's folder (a wav written next to it) and absolute ones
    local = tmp_path / "clips" / "tone.wav"
    local.parent.mkdir()
    soundfile.write(local, sine(440, 8000, 0.25), 8000)
    paths = ["clips/tone.wav"] + [str(fsdd / n) for n in names]
    (tmp_path / "rows.csv").write_text("file,digit\n" + "\n".join(f"{p},{d}" for p, d in zip(paths, [9] + digits)) + "\n")
    # parquet of raw bytes; parquet of HF Audio structs (decode=True in its metadata); json lines
    raw = [(fsdd / n).read_bytes() for n in names]
    datasets.Dataset.from_dict({"sound": raw, "digit": digits}).to_parquet(tmp_path / "bytes.parquet")
    structs = datasets.Dataset.from_dict({"audio": [{"bytes": b, "path": n} for b, n in zip(raw, names)], "label": digits})
    structs.cast_column("audio", datasets.Audio()).to_parquet(tmp_path / "structs.parquet")
    (tmp_path / "rows.jsonl").write_text("".join(f'{{"path": "{fsdd / n}", "who": "{n.split("_")[1]}"}}\n' for n in names))

    domain = AudioDomain(AudioConfig(sample_rate=8000))
    expected = [soundfile.read(fsdd / n, dtype="float32")[0] for n in names]
    from_csv = domain.load(DataConfig(path=str(tmp_path / "rows.csv"), columns={"audio": "file", "label": "digit"}))
    from_bytes = domain.load(DataConfig(path=str(tmp_path / "bytes.parquet"), columns={"audio": "sound", "label": "digit"}))
    from_structs = domain.load(DataConfig(path=str(tmp_path / "structs.parquet")))
    from_json = domain.load(DataConfig(path=str(tmp_path / "rows.jsonl"), columns={"audio": "path", "speaker": "who"}))
    for rows, offset in ((from_csv, 1), (from_bytes, 0), (from_structs, 0), (from_json, 0)):
        batch = domain.collate(list(rows)[offset:])
        for i, wave in enumerate(expected):
            assert batch["lengths"][i] == len(wave)
            torch.testing.assert_close(batch["waveforms"][i, : len(wave)], torch.from_numpy(wave))
    assert domain.collate([from_csv[0]])["lengths"].item() == 2000
    assert domain.collate(list(from_bytes))["labels"].tolist() == digits
    assert domain.collate(list(from_structs))["labels"].tolist() == digits
    assert from_json.features["speaker"].names == sorted({n.split("_")[1] for n in names})


def test_string_classes_use_configured_names(fsdd: Path):
    names = ["theo", "george", "jackson", "lucas", "nicolas", "yweweler"]  # deliberately unsorted
    domain = AudioDomain(AudioConfig(filename_pattern=FSDD_PATTERN, class_names={"speaker": names}))
    rows = domain.load(DataConfig(path=str(fsdd), split="train[:60]"))
    assert [names[s] for s in rows["speaker"]] == [Path(p).stem.split("_")[1] for p in rows["audio"]]


# ---------------------------------------------------------------------------- decoding / collate


def test_resampling_8k_to_16k_keeps_length_ratio_and_frequency(tmp_path: Path, fsdd: Path):
    path = tmp_path / "sine_8k.wav"
    soundfile.write(path, sine(440.0, 8000, 0.5), 8000, subtype="FLOAT")
    domain = AudioDomain(AudioConfig(sample_rate=16000))
    first = sorted(os.listdir(fsdd))[0]
    batch = domain.collate([{"audio": str(path)}, {"audio": str(fsdd / first)}])
    assert batch["lengths"].tolist() == [8000, 2 * soundfile.info(fsdd / first).frames]
    assert dominant_frequency(batch["waveforms"][0].numpy(), 16000) == pytest.approx(440.0, abs=2.0)
    assert batch["waveforms"][0].abs().max() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("rate", [11025, 44100])
def test_odd_rates_resample_to_the_target(tmp_path: Path, rate: int):
    path = tmp_path / f"sine_{rate}.wav"
    samples = sine(1000.0, rate, 0.3)
    soundfile.write(path, samples, rate)
    batch = AudioDomain(AudioConfig(sample_rate=16000)).collate([{"audio": str(path)}])
    assert abs(batch["lengths"].item() - len(samples) * 16000 / rate) < 1.0
    assert dominant_frequency(batch["waveforms"][0].numpy(), 16000) == pytest.approx(1000.0, abs=4.0)


def test_stereo_is_averaged_to_mono(tmp_path: Path):
    rng = np.random.default_rng(0)
    left, right = rng.uniform(-0.5, 0.5, 1600).astype(np.float32), rng.uniform(-0.5, 0.5, 1600).astype(np.float32)
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    batch = AudioDomain().collate([{"audio": str(tmp_path / "stereo.wav")}])
    torch.testing.assert_close(batch["waveforms"][0], torch.from_numpy((left + right) / 2))


def test_flac_and_max_seconds(librispeech: Path):
    flac = sorted(librispeech.rglob("*.flac"))[0]
    frames = soundfile.info(flac).frames
    full = AudioDomain(AudioConfig(max_seconds=None)).collate([{"audio": str(flac)}])
    cut = AudioDomain(AudioConfig(max_seconds=1.5)).collate([{"audio": str(flac)}])
    assert full["lengths"].item() == frames and cut["lengths"].item() == 24000
    torch.testing.assert_close(cut["waveforms"][0], full["waveforms"][0, :24000])


def test_padding_and_lengths(fsdd: Path):
    names = sorted(os.listdir(fsdd))[:4]
    batch = AudioDomain(AudioConfig(sample_rate=8000)).collate([{"audio": str(fsdd / n)} for n in names])
    lengths = [soundfile.info(fsdd / n).frames for n in names]
    assert batch["lengths"].tolist() == lengths and batch["waveforms"].shape == (4, max(lengths))
    for i, length in enumerate(lengths):
        assert torch.all(batch["waveforms"][i, length:] == 0)


@pytest.fixture
def bad_corpus(tmp_path: Path, fsdd: Path) -> dict[str, Path]:
    """One good clip and every kind of bad one, built here."""
    good = (fsdd / sorted(os.listdir(fsdd))[0]).read_bytes()
    files = {name: tmp_path / name for name in ("good.wav", "truncated_header.wav", "truncated_data.wav", "empty.wav", "nan.wav", "text.wav")}
    files["good.wav"].write_bytes(good)
    files["truncated_header.wav"].write_bytes(good[:20])
    files["truncated_data.wav"].write_bytes(good[: len(good) // 3])
    soundfile.write(files["empty.wav"], np.zeros(0, dtype=np.float32), 8000)
    soundfile.write(files["nan.wav"], np.array([0.1, np.nan, -0.1] * 200, dtype=np.float32), 8000, subtype="FLOAT")
    files["text.wav"].write_text("this is a text file, not audio\n" * 20)
    return files


@pytest.mark.parametrize(
    "name, problem",
    [
        ("truncated_header.wav", "cannot decode"),
        ("truncated_data.wav", "truncated"),
        ("empty.wav", "no samples"),
        ("nan.wav", "NaN"),
        ("text.wav", "cannot decode"),
        ("missing.wav", "not found"),
    ],
)
def test_bad_clip_error_names_file_and_problem(bad_corpus, name: str, problem: str):
    path = bad_corpus["good.wav"].parent / name
    domain = AudioDomain()
    with pytest.raises(BadSampleError, match=re.escape(str(path)) + ".*" + problem):
        domain.collate([{"audio": str(bad_corpus["good.wav"])}, {"audio": str(path)}])


def test_bad_bytes_and_missing_audio_column(bad_corpus):
    domain = AudioDomain()
    with pytest.raises(BadSampleError, match="audio bytes.*cannot decode"):
        domain.collate([{"audio": b"definitely not a wav file"}])
    with pytest.raises(BadSampleError, match="no 'audio' column"):
        domain.collate([{"sound": str(bad_corpus["good.wav"])}])
    with pytest.raises(BadSampleError, match="no audio"):
        domain.collate([{"audio": None}])


def test_skip_policy_counts_every_bad_clip(bad_corpus):
    domain = AudioDomain()
    rows = domain.load(DataConfig(path=str(bad_corpus["good.wav"].parent), on_bad_sample="skip"))
    assert len(rows) == 6
    batch = domain.collate(list(rows) + [{"audio": b"junk"}])
    assert batch["skipped"] == 6 and batch["waveforms"].shape[0] == 1
    good = soundfile.read(bad_corpus["good.wav"], dtype="float32")[0]
    assert batch["lengths"].item() == 2 * len(good)


def test_librispeech_frame_labels(librispeech: Path):
    domain = AudioDomain(AudioConfig(max_seconds=None))
    labels_file = librispeech / "phone_labels.txt"
    with pytest.warns(UserWarning, match="4 labelled utterances have no audio file"):
        rows = domain.load(DataConfig(path=str(labels_file), format="aligned_frames"))
    with open(labels_file) as handle:
        reference = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in handle if line.strip()}
    assert read_frame_labels(labels_file) == reference
    present = {p.stem for p in librispeech.rglob("*.flac")} & set(reference)
    assert sorted(Path(p).stem for p in rows["audio"]) == sorted(present) and len(present) == 2
    batch = domain.collate(list(rows))
    for i, path in enumerate(rows["audio"]):
        samples = soundfile.info(path).frames
        frames = (samples - 400) // 160 + 1  # 25 ms windows every 10 ms
        labels = batch["frame_labels"][i]
        assert int((labels != -100).sum()) == frames == len(reference[Path(path).stem])
        assert labels[:frames].tolist() == reference[Path(path).stem]


# ---------------------------------------------------------------------------------------- views


def clips(lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.1, n).astype(np.float32) for n in lengths]


def test_random_crops_lie_inside_each_valid_region():
    lengths = torch.tensor([3000, 16000, 700, 9000])
    ramp = torch.zeros(4, 16000)
    for i, n in enumerate(lengths.tolist()):
        ramp[i, :n] = torch.arange(1, n + 1, dtype=torch.float32)  # value = position + 1, 0 = padding
    crops, new_lengths = random_crop(ramp, lengths, 2000, generator(3))
    assert new_lengths.tolist() == [2000, 2000, 700, 2000]
    for i, n in enumerate(lengths.tolist()):
        crop = crops[i, : new_lengths[i]]
        assert torch.all(crop[1:] - crop[:-1] == 1)  # contiguous samples of the clip
        assert crop[0] >= 1 and crop[-1] <= n  # inside the valid region
        assert torch.all(crops[i, new_lengths[i] :] == 0)  # padding stays padding
    starts = {int(random_crop(ramp, lengths, 2000, generator(s))[0][1, 0]) for s in range(20)}
    assert len(starts) > 10  # offsets are random


def test_circular_shift_rotates_only_the_valid_region():
    lengths = torch.tensor([10, 7, 4])
    waves = torch.zeros(3, 10)
    for i, n in enumerate(lengths.tolist()):
        waves[i, :n] = torch.arange(1, n + 1, dtype=torch.float32)
    shifted = circular_time_shift(waves, lengths, 3, generator(1))
    for i, n in enumerate(lengths.tolist()):
        rotations = [torch.roll(waves[i, :n], k) for k in range(-3, 4)]
        assert any(torch.equal(shifted[i, :n], r) for r in rotations)
        assert torch.all(shifted[i, n:] == 0)


def test_gain_and_noise_follow_their_ranges():
    wave = torch.from_numpy(sine(300, 16000, 1.0)).repeat(3, 1)
    lengths = torch.tensor([16000, 12000, 8000])
    wave = wave * (torch.arange(16000) < lengths[:, None])
    gained = apply_gain(wave, (6.0, 6.0), generator())
    torch.testing.assert_close(gained, wave * 10 ** (6 / 20))
    noisy = add_noise_at_snr(wave, lengths, (20.0, 20.0), generator())
    for i, n in enumerate(lengths.tolist()):
        signal, noise = wave[i, :n], noisy[i, :n] - wave[i, :n]
        snr = 10 * math.log10(float(signal.square().mean() / noise.square().mean()))
        assert snr == pytest.approx(20.0, abs=0.5)
        assert torch.all(noisy[i, n:] == 0)


def test_waveform_normalisation_matches_the_stock_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    waves = clips([4000, 2500, 3100])
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    reference = extractor(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    batch = batch_of(waves)
    ours = normalize_waveforms(batch["waveforms"], batch["lengths"])
    torch.testing.assert_close(ours, reference["input_values"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("front_end", ["waveform", "log_mel"])
def test_augmented_views_differ_per_sample_and_reproduce_per_seed(front_end: str):
    domain = AudioDomain(AudioConfig(front_end=front_end, crop_seconds=0.5))
    same = clips([12000])[0]
    batch = batch_of([same, same, same, clips([5000], seed=1)[0]])
    request = ViewRequest("augmented", {"num_views": 2})
    views = domain.make_views(batch, request, generator(7))["views"]
    key = "input_values" if front_end == "waveform" else "input_features"
    first, second = views[0][key], views[1][key]
    assert first.shape[:2] == ((4, 8000) if front_end == "waveform" else (4, 48))
    assert not torch.allclose(first, second)
    # identical clips in one batch get different parameters: per sample, not one draw per batch
    assert not torch.allclose(first[0], first[1]) and not torch.allclose(first[1], first[2])
    again = domain.make_views(batch, request, generator(7))["views"]
    for view, repeat in zip(views, again):
        for name in view:
            assert torch.equal(view[name], repeat[name])
    other = domain.make_views(batch, request, generator(8))["views"]
    assert not torch.equal(other[0][key], first)
    # the short clip (5000 samples) is padded and its mask says so
    short = views[0]["attention_mask"][3]
    expected_valid = 5000 if front_end == "waveform" else (5000 - 400) // 160 + 1
    assert int(short.sum()) == expected_valid and torch.all(views[0][key][3, expected_valid:] == 0)


def test_spec_augment_masks_per_sample_inside_valid_frames():
    config = AudioConfig(front_end="log_mel", crop_seconds=1.0, time_masks=2, time_mask_frames=15, freq_masks=2, freq_mask_bins=8)
    domain = AudioDomain(config)
    same = clips([16000])[0]
    batch = batch_of([same] * 4)
    features = domain.make_views(batch, ViewRequest("augmented", {"num_views": 1}), generator(2))["views"][0]["input_features"]
    dropped_frames = (features == 0).all(dim=2)  # [B, T]
    dropped_bins = (features == 0).all(dim=1)  # [B, F]
    assert len({tuple(row.tolist()) for row in dropped_frames}) > 1 or len({tuple(r.tolist()) for r in dropped_bins}) > 1
    assert int(dropped_frames.sum(dim=1).max()) <= 2 * 15 and int(dropped_bins.sum(dim=1).max()) <= 2 * 8


def test_plain_view_is_deterministic_and_keeps_labels(fsdd_splits):
    train, _ = fsdd_splits
    domain = AudioDomain()
    batch = domain.collate(list(train.select(range(5))))
    a = domain.make_views(batch, ViewRequest("plain"), generator(0))
    b = domain.make_views(batch, ViewRequest("plain"), generator(1))
    assert torch.equal(a["inputs"]["input_values"], b["inputs"]["input_values"])
    assert a["inputs"]["attention_mask"].sum(dim=1).tolist() == batch["lengths"].tolist()
    assert torch.equal(a["labels"], batch["labels"]) and a["skipped"] == 0 and "speakers" in a


def test_view_options_are_checked():
    domain = AudioDomain()
    batch = batch_of(clips([4000]))
    with pytest.raises(ValueError, match="no option.*'crop'"):
        domain.make_views(batch, ViewRequest("augmented", {"crop": 1.0}), generator())
    with pytest.raises(ValueError, match="no view kind 'pretext'"):
        domain.make_views(batch, ViewRequest("pretext"), generator())
    with pytest.raises(ValueError, match="build_encoder"):
        domain.make_views(batch, ViewRequest("masked"), generator())


def test_span_masks_hit_the_ratio_in_valid_frames():
    valid = torch.tensor([49, 30, 7, 1, 100, 64])
    for ratio, span in ((0.5, 10), (0.3, 4), (0.65, 1)):
        for seed in range(5):
            mask = span_mask(valid, 100, ratio, span, generator(seed))
            for row, n in enumerate(valid.tolist()):
                masked = int(mask[row].sum())
                assert abs(masked - ratio * n) <= 0.5 or masked == 1
                assert not mask[row, n:].any()
                runs = [len(r) for r in "".join("1" if m else "0" for m in mask[row].tolist()).split("0") if r]
                # spans may touch; runs are whole spans, and only one run holds the shorter last span
                assert sum(runs) == masked and sum(run % span != 0 for run in runs) <= 1
    coverage = torch.stack([span_mask(valid, 100, 0.5, 10, generator(s)) for s in range(200)]).float().mean(0)
    assert torch.all(coverage[4, :100] > 0)  # every valid frame, edges included, gets masked sometimes


def naive_targets(wave: np.ndarray, geometry: FrameGeometry, num_frames: int, config: AudioConfig) -> torch.Tensor:
    """Log-mel of one clip run alone, normalised per band, averaged per encoder frame by a loop."""
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=config.n_mels, center=False)
    log_mel = torch.log(mel(torch.from_numpy(wave)) + 1e-6).T  # [S, n_mels]
    log_mel = (log_mel - log_mel.mean(0)) / torch.sqrt(log_mel.var(0, unbiased=False) + 1e-7)
    centers = [160 * i + 199.5 for i in range(len(log_mel))]
    out = torch.zeros(num_frames, config.n_mels)
    for j in range(num_frames):
        c = j * geometry.stride + (geometry.receptive_field - 1) / 2
        members = [i for i, m in enumerate(centers) if c - geometry.stride / 2 <= m < c + geometry.stride / 2]
        if members:
            out[j] = log_mel[members].mean(0)
    return out


def test_masked_view_masks_encoder_frames_and_pools_log_mel_targets():
    config = AudioConfig(mask_ratio=0.4, mask_span=3)
    domain = AudioDomain(config)
    domain.build_encoder(EncoderConfig("wav2vec2", size="tiny"))
    waves = clips([16000, 9000, 5200])
    views = domain.make_views(batch_of(waves), ViewRequest("masked"), generator(4))
    geometry = domain.frame_geometry
    frames = [(n - 10) // 5 + 1 for n in (16000, 9000, 5200)]  # the tiny conv stack, layer by layer
    frames = [((f - 8) // 8 + 1 - 8) // 8 + 1 for f in frames]
    mask, targets = views["mask"], views["targets"]
    assert mask.shape == (3, frames[0]) and targets.shape == (3, frames[0], config.n_mels)
    assert torch.equal(views["inputs"]["mask_time_indices"], mask)
    for row, n in enumerate(frames):
        assert int(mask[row].sum()) == round(0.4 * n) and not mask[row, n:].any()
        torch.testing.assert_close(targets[row, :n], naive_targets(waves[row], geometry, n, config), atol=2e-4, rtol=1e-4)


def test_sequence_view_gives_ordered_crops_with_frame_mask():
    domain = AudioDomain(AudioConfig(sequence_seconds=1.0))
    domain.build_encoder(EncoderConfig("wav2vec2", size="tiny"))
    views = domain.make_views(batch_of(clips([20000, 6000])), ViewRequest("sequence", {"prediction_steps": 12}), generator())
    assert views["inputs"]["input_values"].shape == (2, 16000)
    assert views["frame_mask"].sum(dim=1).tolist() == [49, 18]  # floor formula of the tiny stack, 16000 and 6000 samples
    with pytest.raises(ValueError, match="too few"):
        domain.make_views(batch_of(clips([4000])), ViewRequest("sequence", {"crop_seconds": 0.1, "prediction_steps": 12}), generator())


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
def test_spectrogram_front_ends_match_torchaudio_per_sample(kind: str):
    config = AudioConfig(front_end=kind, normalize=False)
    front_end = SpectrogramFrontEnd(kind, config)
    waves = clips([16000, 7000, 3333])
    batch = batch_of(waves)
    features, frame_lengths = front_end(batch["waveforms"], batch["lengths"])
    assert features.shape == (3, (16000 - 400) // 160 + 1, config.n_mels if kind == "log_mel" else config.n_mfcc)
    melkwargs = dict(n_fft=400, hop_length=160, n_mels=config.n_mels, center=False)
    for row, wave in enumerate(waves):
        if kind == "log_mel":
            alone = torch.log(torchaudio.transforms.MelSpectrogram(16000, **melkwargs)(torch.from_numpy(wave)) + 1e-6)
        else:
            alone = torchaudio.transforms.MFCC(16000, n_mfcc=config.n_mfcc, log_mels=True, melkwargs=melkwargs)(torch.from_numpy(wave))
        n = alone.shape[1]
        assert frame_lengths[row] == n == (len(wave) - 400) // 160 + 1
        torch.testing.assert_close(features[row, :n], alone.T, atol=1e-4, rtol=1e-4)
        assert torch.all(features[row, n:] == 0)


def test_frame_labels_align_to_the_encoders_frames(librispeech: Path):
    domain = AudioDomain(AudioConfig(max_seconds=None))
    encoder = domain.build_encoder(EncoderConfig("wav2vec2", size="tiny")).eval()
    with pytest.warns(UserWarning, match="no audio file"):
        rows = domain.load(DataConfig(path=str(librispeech / "phone_labels.txt"), format="aligned_frames"))
    reference = read_frame_labels(librispeech / "phone_labels.txt")
    batch = domain.collate(list(rows))
    with torch.no_grad():
        features = encoder(**domain.make_views(batch, ViewRequest("plain"), generator())["inputs"])
    aligned = batch["frame_labels"]
    assert aligned.shape == features.mask.shape
    assert torch.equal(aligned != -100, features.mask)  # every valid encoder frame is labelled, padding is not
    geometry = encoder.frame_geometry
    assert geometry.stride == 320 and geometry.receptive_field == 1 + 9 + 7 * 5 + 7 * 40  # the tiny conv stack
    for row, path in enumerate(rows["audio"]):
        labels = reference[Path(path).stem]
        label_centers = np.array([160 * i + 199.5 for i in range(len(labels))])  # 25 ms windows every 10 ms
        for j in range(0, int(features.mask[row].sum()), 5):
            center = j * 320 + (325 - 1) / 2
            assert aligned[row, j] == labels[int(np.abs(label_centers - center).argmin())]
    # the generic function follows the same rule between any two geometries
    assert torch.equal(map_frame_labels(torch.tensor([[5, 6, 7, 8]]), FrameGeometry.window(2, 2), FrameGeometry.window(3, 4), 2), torch.tensor([[5, 7]]))  # centres 1, 5 vs 0.5, 2.5, 4.5, 6.5


def test_streaming_tables_need_fixed_class_names(fsdd: Path, tmp_path: Path):
    import datasets

    names = sorted(os.listdir(fsdd))[:6]  # 0_george_0, 0_george_1, 0_george_10, ...
    rows = {"audio": [{"bytes": (fsdd / n).read_bytes(), "path": n} for n in names], "who": [n.split("_")[1] for n in names]}
    datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio()).to_parquet(tmp_path / "clips.parquet")
    data = DataConfig(path=str(tmp_path / "clips.parquet"), streaming=True, columns={"speaker": "who"}, limit=2)
    with pytest.raises(ValueError, match="holds strings and the data is streamed"):
        AudioDomain().load(data)
    domain = AudioDomain(AudioConfig(class_names={"speaker": ["jackson", "george"]}, filename_pattern=FSDD_PATTERN, where={"take": "1..10"}))
    streamed = list(domain.load(data))
    assert [Path(r["audio"]["path"]).name for r in streamed] == ["0_george_1.wav", "0_george_10.wav"]
    batch = domain.collate(streamed)
    assert batch["speakers"].tolist() == [1, 1] and batch["labels"].tolist() == [0, 0]


def test_dropout_policy_gives_identical_copies_of_one_crop():
    domain = AudioDomain(AudioConfig(crop_seconds=0.25))
    views = domain.make_views(batch_of(clips([8000, 3000])), ViewRequest("augmented", {"policy": "dropout", "num_views": 3}), generator())["views"]
    assert len(views) == 3 and views[0] is not views[1]
    for view in views[1:]:
        assert torch.equal(view["input_values"], views[0]["input_values"])
    assert views[0]["attention_mask"].sum(dim=1).tolist() == [4000, 3000]
