"""STS and SentEval: parsing of files in the real evaluation files' layout and quirks (the synthetic
tree of tests/fixture_data.py; the real files' sizes and a bag-of-words score on the real STS-B dev
set are checked in tests/test_real_data.py), Spearman against scipy, transfer probes."""

from __future__ import annotations

import csv
import re
import zlib

import pytest
import torch
from scipy.stats import spearmanr

from multissl.probes.text import (
    SentEvalTask,
    evaluate_senteval_task,
    evaluate_sts,
    pair_features,
    read_semeval_sts,
    read_senteval_task,
    read_sick,
    read_stsb,
    spearman_correlation,
    sts_spearman,
)
from tests.fixture_data import SENTEVAL_BLANK_LINES, SENTEVAL_SIZES, STSB_ROWS



def bag_of_words(sentences: list[str], dim: int = 512) -> torch.Tensor:
    """A deterministic hashed bag-of-words embedder (stands in for an encoder)."""
    out = torch.zeros(len(sentences), dim)
    for row, sentence in enumerate(sentences):
        for word in re.findall(r"\w+", sentence.lower()):
            out[row, zlib.crc32(word.encode()) % dim] += 1.0
    return out


def test_spearman_equals_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (200,), generator=generator).double()  # many ties
    y = x + torch.randint(0, 4, (200,), generator=generator).double()
    assert spearman_correlation(x, y) == pytest.approx(spearmanr(x.numpy(), y.numpy()).statistic, abs=1e-12)
    z = torch.randn(50, generator=generator, dtype=torch.float64)
    assert spearman_correlation(z, -z) == pytest.approx(-1.0)


def test_sts_spearman_of_a_known_similarity_equals_scipy():
    generator = torch.Generator().manual_seed(1)
    angles = torch.rand(100, generator=generator, dtype=torch.float64) * 3.0
    first = torch.stack([torch.ones(100, dtype=torch.float64), torch.zeros(100, dtype=torch.float64)], dim=1)
    second = torch.stack([angles.cos(), angles.sin()], dim=1) * 2.5  # cosine = cos(angle); scale is irrelevant
    gold = (angles.cos() + 0.3 * torch.randn(100, generator=generator, dtype=torch.float64)).round(decimals=1)
    expected = 100 * spearmanr(angles.cos().numpy(), gold.numpy()).statistic
    assert sts_spearman(first, second, gold) == pytest.approx(expected, abs=1e-9)


def test_read_stsb_dev(data_root):
    path = data_root / "text/stsb/sts-dev.csv"
    pairs = read_stsb(path)
    assert len(pairs) == STSB_ROWS["dev"]
    with open(path, encoding="utf-8", newline="") as handle:  # independent reading: csv without quoting
        rows = [row[:7] for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert pairs.first == [row[5] for row in rows] and pairs.second == [row[6] for row in rows]
    assert pairs.scores.tolist() == [float(row[4]) for row in rows]
    assert any('"' in sentence for sentence in pairs.first + pairs.second)
    assert 0.0 <= float(pairs.scores.min()) and float(pairs.scores.max()) <= 5.0


def test_bag_of_words_sts_on_a_dev_set(data_root):
    """Scores of the synthetic dev set follow word overlap: a bag of words must rank them well."""
    pairs = read_stsb(data_root / "text/stsb/sts-dev.csv")
    scores = evaluate_sts(bag_of_words, pairs)
    u, v = bag_of_words(pairs.first), bag_of_words(pairs.second)
    cosines = [float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12)) for a, b in zip(u.double(), v.double())]
    # bag-of-words cosines tie exactly in theory (identical sentences, cos = 1) but rounding in the
    # last bit breaks those ties differently in two float computations; that moves rho by ~0.01
    assert scores["spearman_x100"] == pytest.approx(100 * spearmanr(cosines, pairs.scores.numpy()).statistic, abs=0.05)
    assert scores["spearman_x100"] > 60 and scores["pairs"] == STSB_ROWS["dev"]


def test_semeval_and_sick_formats(tmp_path):
    (tmp_path / "STS.input.news.txt").write_text("a cat sits\ta cat is sitting\nhello\tworld\nsame\tsame\n")
    (tmp_path / "STS.gs.news.txt").write_text("4.2\n\n5\n")  # the middle pair is unscored
    pairs = read_semeval_sts(tmp_path / "STS.input.news.txt", tmp_path / "STS.gs.news.txt")
    assert pairs.first == ["a cat sits", "same"] and pairs.scores.tolist() == [4.2, 5.0] and pairs.skipped == 1

    (tmp_path / "STS.gs.bad.txt").write_text("4.2\nfour\n")
    (tmp_path / "STS.input.bad.txt").write_text("a\tb\nc\td\n")
    with pytest.raises(ValueError, match=r"STS.gs.bad.txt:2: gold score 'four'"):
        read_semeval_sts(tmp_path / "STS.input.bad.txt", tmp_path / "STS.gs.bad.txt")

    sick = tmp_path / "SICK_test_annotated.txt"
    sick.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
                    "1\tA boy runs\tA kid is running\t4.5\tENTAILMENT\n2\tA dog\tA car\t1.2\tNEUTRAL\n")
    pairs = read_sick(sick)
    assert pairs.second == ["A kid is running", "A car"] and pairs.scores.tolist() == [4.5, 1.2]


def test_malformed_stsb_line_is_named(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("g\tf\t2012\t1\t3.0\ta\tb\nonly\tthree\tfields\n")
    with pytest.raises(ValueError, match=r"sts.csv:2: expected at least 7"):
        read_stsb(path)


@pytest.mark.parametrize("name", sorted(SENTEVAL_SIZES))
def test_read_senteval_tasks(data_root, name):
    task = read_senteval_task(data_root / "text/senteval", name)
    sizes = {split: len(labels) for split, (_, labels) in task.splits.items()}
    assert sizes == SENTEVAL_SIZES[name]  # the synthetic sizes; the published ones in tests/test_real_data.py
    assert task.skipped == SENTEVAL_BLANK_LINES.get(name, 0)  # blank lines are counted skips, not sentences
    if task.protocol == "cv10":
        folder = data_root / "text/senteval" / name
        blank = sum(not line.strip() for f in folder.iterdir() for line in f.read_text("latin-1").splitlines())
        assert task.skipped == blank
    for items, labels in task.splits.values():
        assert len(items) == len(labels)
        assert set(labels.tolist()) == set(range(len(task.label_names)))
    if name == "TREC":
        train = task.splits["train"][0]
        assert any(any(ord(ch) > 127 for ch in sentence) for sentence in train)  # latin-1 decoded, not dropped
        assert task.label_names[task.splits["test"][1][0]] == "NUM"  # "NUM:dist How far is it from Denver to Aspen ?"
        assert task.splits["test"][0][0] == "How far is it from Denver to Aspen ?"
    if name == "MRPC":
        first_pair = task.splits["train"][0][0]
        assert first_pair[0].startswith("Amrozi accused his brother") and not first_pair[0].startswith("\ufeff")


def test_senteval_cross_validation_on_a_cr_subset(data_root):
    full = read_senteval_task(data_root / "text/senteval", "CR")
    sentences, labels = full.splits["all"]
    rows = torch.cat([(labels == c).nonzero().flatten()[:250] for c in (0, 1)])
    task = SentEvalTask("CR", {"all": ([sentences[i] for i in rows], labels[rows])}, full.label_names, "cv10")
    scores = evaluate_senteval_task(bag_of_words, task, folds=3, weight_decays=(1e-2, 1e-1), max_iter=50)
    assert scores["folds"] == 3 and scores["samples"] == len(rows) >= 100
    assert 60 < scores["accuracy_x100"] <= 100  # bag of words beats chance (50) on review sentiment


def test_mrpc_pair_features_and_f1(data_root):
    full = read_senteval_task(data_root / "text/senteval", "MRPC")
    train_items, train_labels = full.splits["train"]
    test_items, test_labels = full.splits["test"]
    task = SentEvalTask("MRPC", {"train": (train_items[:300], train_labels[:300]), "test": (test_items[:200], test_labels[:200])},
                        full.label_names, "splits", pairs=True)
    scores = evaluate_senteval_task(bag_of_words, task, weight_decays=(1e-1,), max_iter=50)
    assert 0 <= scores["accuracy_x100"] <= 100 and 0 <= scores["f1_x100"] <= 100
    u, v = torch.randn(3, 4), torch.randn(3, 4)
    features = pair_features(u, v)
    torch.testing.assert_close(features, torch.cat([u, v, (u - v).abs(), u * v], dim=1))
    assert pair_features(u, v, include_sentences=False).shape == (3, 8)
