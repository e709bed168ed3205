"""Audio encoders: Features shapes and masks, padding invariance, masking, and the Hub round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from domains.audio import AudioConfig, AudioDomain, WAV2VEC2_PRESETS
from multissl.domain import DataConfig, EncoderConfig
from multissl.views import ViewRequest

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0)


def clip_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    waves = torch.randn(len(lengths), max(lengths), generator=generator) * 0.1
    lengths_tensor = torch.tensor(lengths)
    return waves * (torch.arange(max(lengths)) < lengths_tensor[:, None]), lengths_tensor


def naive_conv_frames(length: int, kernels, strides) -> int:
    for kernel, stride in zip(kernels, strides):
        length = (length - kernel) // stride + 1
    return length


@pytest.fixture(scope="module")
def wav2vec2():
    domain = AudioDomain(AudioConfig())
    encoder = domain.build_encoder(EncoderConfig("wav2vec2", size="tiny")).eval()
    return domain, encoder


def test_features_shapes_and_mask_lengths(wav2vec2):
    domain, encoder = wav2vec2
    waves, lengths = clip_batch([16000, 11000, 4000])
    inputs = domain.make_views({"waveforms": waves, "lengths": lengths}, ViewRequest("plain"), torch.Generator())["inputs"]
    with torch.no_grad():
        features = encoder(**inputs, output_hidden_states=True)
    preset = WAV2VEC2_PRESETS["tiny"]
    frames = [naive_conv_frames(n, preset["conv_kernel"], preset["conv_stride"]) for n in lengths.tolist()]
    assert features.sequence.shape == (3, frames[0], preset["hidden_size"]) and encoder.dim == preset["hidden_size"]
    assert features.mask.sum(dim=1).tolist() == frames
    assert features.pooled.shape == (3, preset["hidden_size"])
    for row, n in enumerate(frames):
        torch.testing.assert_close(features.pooled[row], features.sequence[row, :n].mean(dim=0))
    assert len(features.hidden_states) == preset["num_hidden_layers"] + 1


@pytest.mark.parametrize("architecture, front_end", [("wav2vec2", "waveform"), ("w2v-bert", "log_mel")])
def test_padding_invariance(architecture: str, front_end: str):
    """A clip's features do not change when it sits, padded with garbage, in a longer batch."""
    domain = AudioDomain(AudioConfig(front_end=front_end))
    encoder = domain.build_encoder(EncoderConfig(architecture, size="tiny")).eval()
    waves, lengths = clip_batch([7000, 16000], seed=3)
    alone = domain.make_views({"waveforms": waves[:1, :7000], "lengths": lengths[:1]}, ViewRequest("plain"), torch.Generator())["inputs"]
    together = domain.make_views({"waveforms": waves, "lengths": lengths}, ViewRequest("plain"), torch.Generator())["inputs"]
    key = encoder.input_name
    garbage = torch.randn_like(together[key]) * 5
    padding = ~together["attention_mask"].bool()
    padding = padding[..., None] if together[key].dim() == 3 else padding
    together[key] = torch.where(padding, garbage, together[key])
    with torch.no_grad():
        single, batched = encoder(**alone), encoder(**together)
    frames = int(single.mask.sum())
    assert int(batched.mask[0].sum()) == frames
    torch.testing.assert_close(batched.pooled[0], single.pooled[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched.sequence[0, :frames], single.sequence[0, :frames], atol=1e-5, rtol=1e-4)


def test_group_norm_feature_encoder_is_not_padding_invariant():
    """Why the presets use a layer-norm feature encoder: wav2vec2-base's group norm is not invariant."""
    domain = AudioDomain()
    overrides = {"feat_extract_norm": "group", "do_stable_layer_norm": False}
    encoder = domain.build_encoder(EncoderConfig("wav2vec2", size="tiny", overrides=overrides)).eval()
    waves, lengths = clip_batch([7000, 16000], seed=3)
    with torch.no_grad():
        single = encoder(input_values=waves[:1, :7000], attention_mask=torch.ones(1, 7000, dtype=torch.long))
        batched = encoder(input_values=waves, attention_mask=(torch.arange(16000) < lengths[:, None]).long())
    assert not torch.allclose(batched.pooled[0], single.pooled[0], atol=1e-3)


def test_masked_view_drives_the_models_mask_embedding(wav2vec2):
    domain, encoder = wav2vec2
    waves, lengths = clip_batch([16000, 9000])
    views = domain.make_views({"waveforms": waves, "lengths": lengths}, ViewRequest("masked", {"mask_ratio": 0.5}), torch.Generator().manual_seed(1))
    inputs = dict(views["inputs"])
    with torch.no_grad():
        masked = encoder(**inputs)
        inputs["mask_time_indices"] = torch.zeros_like(views["mask"])
        unmasked = encoder(**inputs)
        inputs.pop("mask_time_indices")
        plain = encoder(**inputs)
    assert masked.sequence.shape[:2] == views["mask"].shape
    torch.testing.assert_close(unmasked.sequence, plain.sequence)
    assert not torch.allclose(masked.sequence, plain.sequence, atol=1e-4)


def test_training_mode_draws_no_hidden_randomness():
    """With dropout off, two training-mode calls agree: the model's own SpecAugment never runs."""
    domain = AudioDomain()
    encoder = domain.build_encoder(EncoderConfig("wav2vec2", size="tiny", overrides=NO_DROPOUT)).train()
    assert encoder.model.config.mask_time_prob > 0  # the sampler would fire without the wrapper
    waves, lengths = clip_batch([16000, 12000])
    inputs = domain.make_views({"waveforms": waves, "lengths": lengths}, ViewRequest("plain"), torch.Generator())["inputs"]
    first, second = encoder(**inputs), encoder(**inputs)
    torch.testing.assert_close(first.sequence, second.sequence)


def test_w2v_bert_frames_are_spectrogram_frames():
    domain = AudioDomain(AudioConfig(front_end="mfcc"))
    encoder = domain.build_encoder(EncoderConfig("w2v-bert", size="tiny")).eval()
    waves, lengths = clip_batch([16000, 5000])
    inputs = domain.make_views({"waveforms": waves, "lengths": lengths}, ViewRequest("plain"), torch.Generator())["inputs"]
    with torch.no_grad():
        features = encoder(**inputs)
    assert features.mask.sum(dim=1).tolist() == [(n - 400) // 160 + 1 for n in (16000, 5000)]
    assert encoder.processor is None  # no stock extractor computes this front end; none is saved


def test_build_errors_name_the_problem():
    domain = AudioDomain()
    with pytest.raises(ValueError, match="no field 'hidden_sise'"):
        domain.build_encoder(EncoderConfig("wav2vec2", overrides={"hidden_sise": 8}))
    with pytest.raises(ValueError, match="unknown wav2vec2 size 'huge'"):
        domain.build_encoder(EncoderConfig("wav2vec2", size="huge"))
    with pytest.raises(ValueError, match="front end is 'waveform'"):
        domain.build_encoder(EncoderConfig("w2v-bert"))
    with pytest.raises(ValueError, match="no CLS token"):
        domain.build_encoder(EncoderConfig("wav2vec2", pooling="cls"))


LOAD_WITHOUT_MULTISSL = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from transformers import AutoFeatureExtractor, AutoModel
    folder, clips_file, out_file = sys.argv[1:4]
    clips = [np.asarray(c, dtype=np.float32) for c in json.load(open(clips_file))]
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    inputs = extractor(clips, sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    frames = model._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
    pooled = [hidden[i, : int(n)].mean(0).tolist() for i, n in enumerate(frames)]
    assert not any(name.split(".")[0] in ("multissl", "domains") for name in sys.modules), "multissl was imported"
    json.dump({"pooled": pooled, "extractor": type(extractor).__name__}, open(out_file, "w"))
    """
)


def test_save_pretrained_loads_with_plain_transformers(data_root: Path, tmp_path: Path, wav2vec2):
    domain, encoder = wav2vec2
    recordings = data_root / "audio" / "fsdd" / "recordings"
    rows = [{"audio": str(recordings / name)} for name in ("3_theo_7.wav", "8_lucas_12.wav")]
    batch = domain.collate(rows)
    with torch.no_grad():
        ours = encoder(**domain.make_views(batch, ViewRequest("plain"), torch.Generator())["inputs"]).pooled
    encoder.save_pretrained(str(tmp_path / "encoder"))
    clips = [batch["waveforms"][i, : n].tolist() for i, n in enumerate(batch["lengths"].tolist())]
    (tmp_path / "clips.json").write_text(json.dumps(clips))
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_MULTISSL, str(tmp_path / "encoder"), str(tmp_path / "clips.json"), str(tmp_path / "out.json")],
        check=True, cwd=tmp_path, env=environment, timeout=300,
    )
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["extractor"] == "Wav2Vec2FeatureExtractor"
    torch.testing.assert_close(torch.tensor(result["pooled"]), ours, atol=1e-5, rtol=1e-4)

    reloaded = domain.build_encoder(EncoderConfig("wav2vec2", name_or_path=str(tmp_path / "encoder"))).eval()
    with torch.no_grad():
        again = reloaded(**domain.make_views(batch, ViewRequest("plain"), torch.Generator())["inputs"]).pooled
    torch.testing.assert_close(again, ours)
    assert reloaded.processor.do_normalize and reloaded.processor.sampling_rate == 16000
