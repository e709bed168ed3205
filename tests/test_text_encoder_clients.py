"""A saved multissl text encoder loads in the clients users already have, as trained:
sentence-transformers encodes exactly multissl's pooled embeddings ([CLS] or mean), plain AutoModel
reports no missing weights, and a pretrained sentence-transformers model keeps its own pooling."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from domains import EncoderConfig, build_domain
from multissl.domain import DataConfig
from multissl.hub import ModelCardInfo, save_encoder
from multissl.views import ViewRequest

SENTENCES = [f"a {colour} {animal} {verb} near the {place} ." for colour in ("red", "small", "old")
             for animal in ("dog", "cat", "bird") for verb in ("runs", "sleeps") for place in ("river", "house")]


@pytest.fixture(scope="module")
def text_domain(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "sentences.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    domain = build_domain("text", {"tokenizer": "train", "vocab_size": 60, "max_length": 24})
    return domain, domain.load(DataConfig(path=str(corpus)))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sentence_transformers_encodes_what_multissl_trained(text_domain, tmp_path, pooling):
    domain, rows = text_domain
    torch.manual_seed(0)
    encoder = domain.build_encoder(EncoderConfig("bert", "tiny", pooling=pooling)).eval()
    save_encoder(encoder, tmp_path, ModelCardInfo(domain="text"), preprocessing=domain.preprocessing())
    batch = domain.collate([rows[i] for i in range(8)])
    with torch.no_grad():
        ours = encoder(**domain.make_views(batch, ViewRequest("plain"), torch.Generator())["inputs"]).pooled
    model = SentenceTransformer(str(tmp_path), device="cpu")
    theirs = model.encode([rows[i]["text"] for i in range(8)], convert_to_tensor=True)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert model.max_seq_length == 24

    loaded, report = AutoModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not report["missing_keys"] and not report["unexpected_keys"], report


def test_the_pooler_is_kept_frozen_so_no_parameter_lacks_a_gradient(text_domain):
    domain, rows = text_domain
    encoder = domain.build_encoder(EncoderConfig("bert", "tiny"))
    assert encoder.model.pooler is not None and not any(p.requires_grad for p in encoder.model.pooler.parameters())
    inputs = domain.make_views(domain.collate([rows[i] for i in range(4)]), ViewRequest("plain"), torch.Generator())
    encoder(**inputs["inputs"]).pooled.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


def test_a_pretrained_sentence_transformer_keeps_its_own_pooling():
    from domains.text.pretrained import MINILM_HUB_ID

    domain = build_domain("text", {"tokenizer": MINILM_HUB_ID, "max_length": 32})
    encoder = domain.build_encoder(EncoderConfig("bert", name_or_path=MINILM_HUB_ID))
    assert encoder.pooling == "mean"  # all-MiniLM-L6-v2's sentence-transformers config
    forced = domain.build_encoder(EncoderConfig("bert", name_or_path=MINILM_HUB_ID, pooling="cls"))
    assert forced.pooling == "cls"
