"""Collation: one tokenizer call for every text role, and bad rows (empty, whitespace, None,
numbers, missing keys, bad labels) either stop with the row and column named or are skipped and
counted, never dropped silently."""

from __future__ import annotations

import json

import pytest
import torch

from multissl.domain import BadSampleError, DataConfig
from domains.text import TextConfig, TextDomain

GOOD = ["a dog runs on the grass", "two children play in the sand", "a man rides a red bicycle"]
# (row as written to the jsonl file, what the error must say about it)
BAD = [
    ({"text": "", "label": 0}, "text is empty"),
    ({"text": "   \t ", "label": 1}, "text is whitespace only"),
    ({"text": None, "label": 0}, "text is None"),
    ({"text": 42, "label": 1}, "text is a int (42), not a string"),
    ({"label": 0}, "text is None"),  # a key missing from a json line reads as None
    ({"text": "a fine sentence", "label": -1}, "label -1 is no class id"),
]


@pytest.fixture(scope="module")
def tokenizer_folder(data_root, tmp_path_factory):
    domain = TextDomain(TextConfig(vocab_size=400, max_length=16))
    domain.load(DataConfig(path=str(data_root / "text/corpus/multi30k_captions.txt"), limit=2000))
    folder = tmp_path_factory.mktemp("tokenizer")
    domain.tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def test_collate_tokenizes_every_role_in_one_padded_batch(tokenizer_folder, tmp_path):
    rows = [{"s": text, "p": text.upper(), "n": "no", "y": i} for i, text in enumerate(GOOD)]
    domain = TextDomain(TextConfig(tokenizer=str(tokenizer_folder), max_length=16))
    data = domain.load(DataConfig(path=write_jsonl(tmp_path / "d.jsonl", rows),
                                  columns={"text": "s", "text_pair": "p", "hard_negative": "n", "label": "y"}))
    batch = domain.collate([data[i] for i in range(3)])
    tokenizer = domain.tokenizer
    for prefix, column in (("", "s"), ("pair_", "p"), ("negative_", "n")):
        expected = tokenizer([r[column] for r in rows], padding="max_length", truncation=True, max_length=batch["input_ids"].shape[1])
        assert batch[prefix + "input_ids"].tolist() == expected["input_ids"]
        assert batch[prefix + "attention_mask"].tolist() == expected["attention_mask"]
        assert batch[prefix + "input_ids"].dtype == torch.long
    assert batch["labels"].tolist() == [0, 1, 2] and batch["skipped"] == 0


def test_collate_truncates_to_max_length(tokenizer_folder):
    domain = TextDomain(TextConfig(tokenizer=str(tokenizer_folder), max_length=8))
    batch = domain.collate([{"text": " ".join(["a man walks"] * 20)}, {"text": "a dog"}])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][0, -1] == domain.tokenizer.sep_token_id


@pytest.mark.parametrize(("bad", "message"), BAD)
def test_bad_row_stops_naming_row_and_column(tokenizer_folder, tmp_path, bad, message):
    rows = [{"text": GOOD[0], "label": 0}, {"text": GOOD[1], "label": 1}, bad]
    domain = TextDomain(TextConfig(tokenizer=str(tokenizer_folder)))
    data = domain.load(DataConfig(path=write_jsonl(tmp_path / "bad.jsonl", rows)))
    column = "label" if "label" in message else "text"
    with pytest.raises(BadSampleError, match=rf"row 2, column '{column}': {message.replace('(', '[(]').replace(')', '[)]')}"):
        domain.collate([data[i] for i in range(3)])


def test_bad_rows_are_skipped_and_counted_under_skip(tokenizer_folder, tmp_path):
    rows = [{"text": GOOD[0], "label": 0}] + [bad for bad, _ in BAD] + [{"text": GOOD[2], "label": 2}]
    domain = TextDomain(TextConfig(tokenizer=str(tokenizer_folder)))
    data = domain.load(DataConfig(path=write_jsonl(tmp_path / "bad.jsonl", rows), on_bad_sample="skip"))
    batch = domain.collate([data[i] for i in range(len(rows))])
    assert batch["skipped"] == len(BAD)
    expected = domain.tokenizer([GOOD[0], GOOD[2]], padding=True)["input_ids"]
    assert batch["input_ids"].tolist() == expected
    assert batch["labels"].tolist() == [0, 2]
    empty = domain.collate([data[i] for i in range(1, len(BAD) + 1)])
    assert empty["skipped"] == len(BAD) and empty["input_ids"].shape[0] == 0 and empty["labels"].shape == (0,)


def test_rows_without_the_mapped_key_are_named(tokenizer_folder):
    domain = TextDomain(TextConfig(tokenizer=str(tokenizer_folder)))
    with pytest.raises(BadSampleError, match=r"batch position 1: no column 'text'; the row has \['sentence'\]"):
        domain.collate([{"text": GOOD[0]}, {"sentence": GOOD[1]}])


def test_a_row_lacking_a_role_the_others_have_is_named(tokenizer_folder):
    domain = TextDomain(TextConfig(tokenizer=str(tokenizer_folder)))
    with pytest.raises(BadSampleError, match=r"row 8: no column 'label'; the row has \['row_index', 'text'\]"):
        domain.collate([{"text": GOOD[0], "label": 1, "row_index": 7}, {"text": GOOD[1], "row_index": 8}])


def test_csv_empty_cell_and_na_text(tokenizer_folder, tmp_path):
    (tmp_path / "d.csv").write_text("text,label\nNA,0\n,1\n", encoding="utf-8")
    domain = TextDomain(TextConfig(tokenizer=str(tokenizer_folder)))
    data = domain.load(DataConfig(path=str(tmp_path / "d.csv")))
    assert data[0]["text"] == "NA"  # a word, not a missing value
    with pytest.raises(BadSampleError, match=r"row 1, column 'text': text is None"):
        domain.collate([data[0], data[1]])
