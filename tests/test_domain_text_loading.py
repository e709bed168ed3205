"""Text domain loading on files laid out as ../shared/data/text (the synthetic tree of
tests/fixture_data.py, with the real files' quirks) and files written in tmp_path.

Expected values come from reading the files independently here (plain Python, raw bytes), never
from running the loaders.
"""

from __future__ import annotations

import json

import datasets
import pytest

from multissl.domain import BadSampleError, DataConfig
from domains.text import SENTEVAL_TASKS, TextConfig, TextDomain, load_senteval, load_stsb
from domains.text.loading import ROW_INDEX, load_rows, prepare_rows
from tests.fixture_data import SENTEVAL_SIZES

# tokenizer training is not under test here: keep it to a few rows
FAST = TextConfig(vocab_size=200, tokenizer_training_rows=300)


def raw_lines(path, encoding="utf-8"):
    text = path.read_bytes().decode(encoding)
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


# ------------------------------------------------------------------ plain text


def test_plain_text_skips_and_counts_blank_lines_and_names_rows(data_root):
    path = data_root / "text/corpus/tinyshakespeare.txt"
    lines = raw_lines(path)
    blank = [i for i, line in enumerate(lines) if not line.strip()]
    domain = TextDomain(FAST)
    rows = domain.load(DataConfig(path=str(path)))
    assert len(rows) == len(lines) - len(blank)
    assert domain.load_stats == {"blank_lines_skipped": len(blank), "rows": len(lines) - len(blank)}
    for k in (0, 1, 500, len(rows) - 1):
        assert rows[k]["text"] == lines[rows[k][ROW_INDEX]]


def test_plain_text_blank_line_error_policy_names_first_blank_line(data_root):
    path = data_root / "text/corpus/tinyshakespeare.txt"
    first_blank = next(i for i, line in enumerate(raw_lines(path)) if not line.strip())
    with pytest.raises(BadSampleError, match=rf"first at row\(s\) \[{first_blank},"):
        TextDomain(TextConfig(blank_lines="error", vocab_size=200)).load(DataConfig(path=str(path)))


def test_plain_text_slice_limit_and_streaming_agree(data_root):
    path = str(data_root / "text/corpus/tinyshakespeare.txt")
    lines = raw_lines(data_root / "text/corpus/tinyshakespeare.txt")
    tenth = DataConfig(path=path, split="train[:10%]")
    rows, _ = prepare_rows(load_rows(tenth), {"text": "text"}, plain_text=True)
    assert len(rows) == sum(1 for line in lines[: len(lines) // 10] if line.strip())
    limited, _ = prepare_rows(load_rows(DataConfig(path=path)), {"text": "text"}, plain_text=True, limit=25)
    streamed, stats = prepare_rows(load_rows(DataConfig(path=path, streaming=True)), {"text": "text"}, plain_text=True, limit=25)
    assert isinstance(streamed, datasets.IterableDataset) and stats["rows"] is None
    assert [row["text"] for row in streamed] == limited["text"]
    assert [row[ROW_INDEX] for row in streamed] == limited[ROW_INDEX]


def test_folder_of_text_files_splits_by_file_name(data_root):
    folder = data_root / "text/corpus/wikitext2"
    lines = raw_lines(folder / "valid.txt")
    domain = TextDomain(FAST)
    rows = domain.load(DataConfig(path=str(folder), split="validation"))
    assert len(rows) == sum(1 for line in lines if line.strip())
    assert rows[0]["text"] == next(line for line in lines if line.strip())


# ------------------------------------------------------------------ STS-B


def test_stsb_reads_every_line_with_quotes_and_extra_fields(data_root):
    path = data_root / "text/stsb/sts-train.csv"
    lines = raw_lines(path)
    assert any(len(line.split("\t")) > 7 for line in lines)  # the quirk under test is in the file
    rows = load_stsb(data_root / "text/stsb", split="train")
    assert len(rows) == len(lines)
    quoted = next(i for i, line in enumerate(lines) if '"' in line.split("\t")[5] + line.split("\t")[6])
    fields = lines[quoted].split("\t")
    assert (rows[quoted]["sentence1"], rows[quoted]["sentence2"]) == (fields[5], fields[6])
    assert rows[quoted]["score"] == pytest.approx(float(fields[4]))
    extra = next(i for i, line in enumerate(lines) if len(line.split("\t")) > 7)
    assert rows[extra]["sentence2"] == lines[extra].split("\t")[6]
    assert len(load_stsb(data_root / "text/stsb", split="validation")) == len(raw_lines(data_root / "text/stsb/sts-dev.csv"))
    assert len(load_stsb(data_root / "text/stsb", split="validation[:10]")) == 10


def test_stsb_through_the_domain_gives_pairs_and_scores(data_root):
    path = data_root / "text/stsb/sts-dev.csv"
    fields = [line.split("\t") for line in raw_lines(path)[:4]]
    domain = TextDomain(FAST)
    rows = domain.load(DataConfig(path=str(path), limit=4))  # format inferred from the name
    batch = domain.collate([rows[i] for i in range(4)])
    assert batch["scores"].tolist() == pytest.approx([float(f[4]) for f in fields])
    assert batch["input_ids"].shape == batch["pair_input_ids"].shape
    assert domain.tokenizer.decode(batch["pair_input_ids"][0], skip_special_tokens=True).split() == fields[0][6].split()


def test_stsb_short_line_names_file_and_line(tmp_path):
    bad = tmp_path / "sts-train.csv"
    bad.write_text("g\tf\t2012\t1\t5.0\ta\tb\ng\tf\t2012\t2\t4.0\tonly one sentence\n", encoding="utf-8")
    with pytest.raises(BadSampleError, match=r"sts-train.csv:2: 6 tab-separated fields"):
        load_stsb(bad)


# ------------------------------------------------------------------ AG News tsv


def test_agnews_tsv_keeps_quotes_and_encodes_string_labels(data_root):
    path = data_root / "text/agnews/dev_from_train.tsv"
    lines = [line.split("\t") for line in raw_lines(path)]
    domain = TextDomain(FAST)
    rows = domain.load(DataConfig(path=str(path), columns={"text": "0", "label": "1"}))
    assert len(rows) == len(lines)
    names = sorted({fields[1] for fields in lines})
    assert rows.features["label"].names == names
    quoted = next(i for i, fields in enumerate(lines) if '"' in fields[0])
    assert rows[quoted]["text"] == lines[quoted][0]
    assert rows[quoted]["label"] == names.index(lines[quoted][1])
    batch = domain.collate([rows[i] for i in range(quoted, quoted + 3)])
    assert batch["labels"].tolist() == [names.index(lines[i][1]) for i in range(quoted, quoted + 3)]


def test_string_labels_follow_label_names_and_reject_unknown_values(data_root):
    path = str(data_root / "text/agnews/dev_from_train.tsv")
    order = ["World", "Sports", "Business", "Sci/Tech"]
    rows, _ = prepare_rows(load_rows(DataConfig(path=path, format="tsv")), {"text": "0", "label": "1"}, label_names=order)
    assert rows.features["label"].names == order
    with pytest.raises(ValueError, match=r"not in label_names"):
        prepare_rows(load_rows(DataConfig(path=path, format="tsv")), {"text": "0", "label": "1"}, label_names=order[:3])


# ------------------------------------------------------------------ SentEval


def test_senteval_trec_reads_latin1_and_coarse_classes(data_root):
    path = data_root / "text/senteval/TREC/train_5500.label"
    raw = path.read_bytes().split(b"\n")
    raw = raw[:-1] if raw[-1] == b"" else raw
    not_utf8 = []
    for i, line in enumerate(raw):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8.append(i)
    assert not_utf8, "the TREC training file should hold a non-UTF-8 line"
    rows = load_senteval(data_root / "text/senteval/TREC", split="train")
    assert len(rows) == len(raw)
    line = raw[not_utf8[0]].decode("latin-1")
    assert rows[not_utf8[0]]["text"] == line.split(" ", 1)[1].strip()
    assert rows.features["label"].int2str(rows[not_utf8[0]]["label"]) == line.split(":", 1)[0]
    assert len(load_senteval(data_root / "text/senteval", task="TREC", split="test")) == SENTEVAL_SIZES["TREC"]["test"]


def test_senteval_mrpc_strips_bom_and_header(data_root):
    path = data_root / "text/senteval/MRPC/msr_paraphrase_train.txt"
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    lines = raw_lines(path, "utf-8-sig")
    rows = load_senteval(data_root / "text/senteval/MRPC", split="train")
    assert len(rows) == len(lines) - 1
    label, _, _, first, second = lines[1].split("\t")
    assert (rows[0]["label"], rows[0]["text"], rows[0]["text_pair"]) == (int(label), first, second)


@pytest.mark.parametrize(
    ("task", "files"),
    [("MR", ["rt-polarity.neg", "rt-polarity.pos"]), ("CR", ["custrev.neg", "custrev.pos"])],
)
def test_senteval_two_file_tasks_label_by_file_and_skip_blank_lines(data_root, task, files):
    folder = data_root / "text/senteval" / task
    counts = [sum(1 for line in raw_lines(folder / f, "latin-1") if line.strip()) for f in files]
    rows = load_senteval(folder)
    assert len(rows) == sum(counts)
    assert rows["label"].count(0) == counts[0] and rows["label"].count(1) == counts[1]


def test_senteval_sst_splits_and_label_layouts(data_root):
    root = data_root / "text/senteval"
    dev2 = raw_lines(root / "SST/binary/sentiment-dev")
    rows = load_senteval(root / "SST/binary", split="validation")
    assert len(rows) == len(dev2)
    assert (rows[0]["text"], rows[0]["label"]) == (dev2[0].rsplit("\t", 1)[0].strip(), int(dev2[0].rsplit("\t", 1)[1]))
    dev5 = raw_lines(root / "SST/fine/sentiment-dev")
    rows = load_senteval(root, task="SST5", split="validation")
    assert (rows[0]["text"], rows[0]["label"]) == (dev5[0].split(" ", 1)[1].strip(), int(dev5[0].split(" ", 1)[0]))
    assert set(SENTEVAL_TASKS) == {"MR", "CR", "SUBJ", "MPQA", "SST2", "SST5", "TREC", "MRPC"}


def test_senteval_through_the_domain_and_bad_split(data_root):
    domain = TextDomain(FAST)
    rows = domain.load(DataConfig(path=str(data_root / "text/senteval/MRPC"), split="test", limit=3))
    batch = domain.collate([rows[i] for i in range(3)])
    assert {"input_ids", "pair_input_ids", "labels"} <= set(batch)
    with pytest.raises(ValueError, match=r"splits: \['train', 'test'\]"):
        load_senteval(data_root / "text/senteval/TREC", split="validation")


# ------------------------------------------------------------------ files written here


def test_jsonl_csv_parquet_with_column_mapping(tmp_path):
    records = [
        {"sentence": f"a sentence number {i}", "positive": f"the sentence {i}", "negative": f"no {i}", "y": i % 3}
        for i in range(6)
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    datasets.Dataset.from_list(records).to_parquet(str(tmp_path / "pairs.parquet"))
    (tmp_path / "pairs.csv").write_text(
        "sentence,positive,negative,y\n" + "".join(f"{r['sentence']},{r['positive']},{r['negative']},{r['y']}\n" for r in records),
        encoding="utf-8",
    )
    mapping = {"text": "sentence", "text_pair": "positive", "hard_negative": "negative", "label": "y"}
    for name in ("pairs.jsonl", "pairs.parquet", "pairs.csv"):
        domain = TextDomain(FAST)
        rows = domain.load(DataConfig(path=str(tmp_path / name), columns=mapping))
        assert rows.column_names == ["text", "text_pair", "hard_negative", "label", ROW_INDEX]
        assert rows["text"] == [r["sentence"] for r in records], name
        batch = domain.collate([rows[i] for i in range(len(rows))])
        assert batch["labels"].tolist() == [r["y"] for r in records]
        assert batch["negative_input_ids"].shape == batch["pair_input_ids"].shape == batch["input_ids"].shape


def test_unknown_role_and_missing_column_are_named(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"sentence": "hi"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown text role\(s\) \['txt'\]"):
        TextDomain(FAST).load(DataConfig(path=str(tmp_path / "a.jsonl"), columns={"txt": "sentence"}))
    # a recipe's mapping that does not fit the user's file: the usual name is read, and said
    rows = TextDomain(FAST).load(DataConfig(path=str(tmp_path / "a.jsonl"), columns={"text": "body"}))
    assert rows[0]["text"] == "hi"
    (tmp_path / "b.jsonl").write_text('{"body": "hi"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"no text column.*\['body'\]"):
        TextDomain(FAST).load(DataConfig(path=str(tmp_path / "b.jsonl")))
    with pytest.raises(ValueError, match=r"no text column: 'words' is not among the columns \['body'\]"):
        TextDomain(FAST).load(DataConfig(path=str(tmp_path / "b.jsonl"), columns={"text": "words"}))


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no file .*missing.txt"):
        TextDomain(FAST).load(DataConfig(path=str(tmp_path / "missing.txt")))
