"""The pieces of bench/quality_text.py: budget stopping, batch order, data subsets, TF-IDF scoring,
row grouping. Tiny inputs; the benchmark itself is run by hand (see its docstring)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from bench import quality_text as qt
from bench._common import losing_rows
from bench._quality import CpuBudget, TrainingReport, budgeted_training
from multissl.probes.text import SentEvalTask, SentencePairs

# ----------------------------------------------------------------------------------------- budget


def test_training_summary_adds_the_mean_loss_of_the_first_and_last_tenth():
    report = TrainingReport(steps=20, samples=20, cpu_seconds=1.0, wall_seconds=1.0, budget_seconds=1.0,
                            stopped_by="budget", losses=[float(i) for i in range(20)])
    summary = qt.training_summary(report)
    assert summary["loss_first_tenth"] == pytest.approx((0 + 1) / 2)
    assert summary["loss_last_tenth"] == pytest.approx((18 + 19) / 2)
    assert summary["steps"] == 20 and summary["stopped_by"] == "budget"


# ----------------------------------------------------------------------------------------- batches


def test_sentence_batches_are_full_permutations_per_epoch_and_seeded():
    batches = qt.sentence_batches(10, 3, seed=4)
    epoch_one = [next(batches) for _ in range(3)]  # 10 // 3 full batches, the remainder dropped
    epoch_two = [next(batches) for _ in range(3)]
    for epoch in (epoch_one, epoch_two):
        flat = [i for batch in epoch for i in batch]
        assert all(len(batch) == 3 for batch in epoch)
        assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert epoch_one != epoch_two  # reshuffled each epoch
    again = qt.sentence_batches(10, 3, seed=4)
    assert [next(again) for _ in range(6)] == epoch_one + epoch_two
    other = qt.sentence_batches(10, 3, seed=5)
    assert [next(other) for _ in range(3)] != epoch_one


def test_sentence_batches_refuse_less_than_one_batch():
    with pytest.raises(ValueError, match="full batch"):
        next(qt.sentence_batches(3, 4, seed=0))


# ------------------------------------------------------------------------------------------- data


def test_wikitext_sentences_split_paragraphs_and_count_what_they_leave_out(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(
        " \n = Heading = \n"
        " The lobster is 60 @-@ 70 cm long . It weighs 6 @.@ 5 kg and more . Short one . "
        "A <unk> word sits in this sentence here .\n",
        encoding="utf-8")
    sentences, counts = qt.wikitext_sentences([path])
    assert sentences == ["The lobster is 60-70 cm long .", "It weighs 6.5 kg and more ."]
    assert counts == {"with_unk": 1, "too_short": 1}


def test_training_sentences_mix_is_seeded_and_drawn_from_the_corpus(data_root):
    corpus = data_root / "text" / "corpus"
    sentences, info = qt.training_sentences(corpus, 400, seed=1)
    assert len(sentences) == 400
    assert info["wikitext2_sentences"] == 200 and info["flickr30k_captions"] == 200
    assert qt.training_sentences(corpus, 400, seed=1)[0] == sentences
    assert qt.training_sentences(corpus, 400, seed=2)[0] != sentences
    captions = set((corpus / "multi30k_captions.txt").read_text(encoding="utf-8").splitlines())
    assert sum(s in captions for s in sentences) >= 200
    assert not any("<unk>" in s or "@-@" in s for s in sentences)


def test_subsample_task_keeps_labels_with_their_sentences_and_order():
    items = [f"sentence {i}" for i in range(50)]
    labels = torch.arange(50) % 3
    task = SentEvalTask("X", {"all": (items, labels), "small": (items[:5], labels[:5])}, ["a", "b", "c"], "cv10")
    cut = qt.subsample_task(task, 20, seed=0)
    kept, kept_labels = cut.splits["all"]
    assert len(kept) == 20
    positions = [items.index(s) for s in kept]
    assert positions == sorted(positions)  # order kept
    assert kept_labels.tolist() == [int(labels[p]) for p in positions]
    assert cut.splits["small"][0] == items[:5]  # a split already small enough stays whole
    assert qt.subsample_task(task, None, seed=0) is task
    assert task.splits["all"][0] == items  # the original is not modified


# ------------------------------------------------------------------------------------------ TF-IDF


def test_tfidf_sts_is_spearman_of_the_naive_cosine():
    corpus = ["a dog runs in the park", "a cat sleeps on the sofa", "the man plays a guitar",
              "children play in the park", "a woman reads a book"]
    baseline = qt.TfidfBaseline(corpus, dim=3, seed=0)
    first = ["a dog runs", "a cat sleeps", "the man plays", "zebra xylophone", "a woman reads a book"]
    second = ["a dog runs in the park", "the sofa", "a guitar", "children play", "a woman reads a book"]
    gold = torch.tensor([4.0, 1.0, 2.5, 0.0, 5.0], dtype=torch.float64)
    result = baseline.sts(SentencePairs(first, second, gold, "test"))
    u = baseline.vectorizer.transform(first).toarray()
    v = baseline.vectorizer.transform(second).toarray()
    cosine = []
    for a, b in zip(u, v):
        norms = np.linalg.norm(a) * np.linalg.norm(b)
        cosine.append(float(a @ b / norms) if norms else 0.0)
    assert result["spearman_x100"] == pytest.approx(100 * spearmanr(cosine, gold.numpy()).statistic)
    assert result["pairs_with_no_known_word"] == 1  # "zebra xylophone"
    assert baseline.embed(first).shape == (5, 3)


# ------------------------------------------------------------------------------------------- rows


def _scores(values: dict[str, float]) -> dict[str, dict[str, dict]]:
    return {c: {"STS-B dev": {"spearman_x100": v}, "TREC": {"accuracy_x100": v - 10}} for c, v in values.items()}


def test_rows_compare_contenders_of_one_start_and_explain_losses():
    scores = _scores({qt.TFIDF: 60.0, qt.MINILM_UNTOUCHED: 86.7, qt.MULTISSL_MINILM: 85.0, qt.PEER_MINILM: 85.5,
                      qt.RANDOM_UNTOUCHED: 40.0, qt.MULTISSL_RANDOM: 55.0})
    budget = {"steps": 3, "cpu_seconds": 1.0, "wall_seconds": 1.0, "loss_first_tenth": 1.0, "loss_last_tenth": 0.5}
    budgets = {name: budget for name in (qt.MULTISSL_MINILM, qt.PEER_MINILM, qt.MULTISSL_RANDOM)}
    rows = qt.build_rows(scores, budgets, qt.Settings())
    tasks = {row["task"] for row in rows}
    assert tasks == {f"{task} ({start})" for task in ("STS-B dev", "TREC") for start in qt.GROUPS}
    assert sum(row["contender"] == qt.TFIDF for row in rows) == 4  # both starts, both tasks
    by_key = {(row["task"], row["contender"]): row for row in rows}
    ours = by_key[("STS-B dev (MiniLM start)", qt.MULTISSL_MINILM)]
    assert "MiniLM untouched" in ours["notes"] and "sentence-transformers" in ours["notes"]
    assert ours["budget_seconds"] == qt.Settings().budget_cpu_seconds
    assert by_key[("STS-B dev (MiniLM start)", qt.MINILM_UNTOUCHED)]["budget_seconds"] == 0.0
    # the from-scratch encoder is compared with its own start only (here it loses to TF-IDF's 60)
    losses = losing_rows({"kind": "quality", "rows": rows})
    lost = {(loss["row"]["task"], loss["row"]["contender"], loss["peer"]) for loss in losses}
    assert ("STS-B dev (random-init start)", qt.MULTISSL_RANDOM, qt.TFIDF) in lost
    assert not any(peer in (qt.MINILM_UNTOUCHED, qt.PEER_MINILM) and task.endswith("(random-init start)")
                   for task, _, peer in lost)
    random_row = by_key[("STS-B dev (random-init start)", qt.MULTISSL_RANDOM)]
    assert "TF-IDF 60.00" in random_row["notes"]


def test_every_trained_contender_can_be_chosen():
    # data2vec was once built but unreachable from --contenders
    assert set(qt.CONTENDERS.values()) == {qt.MULTISSL_MINILM, qt.PEER_MINILM, *qt.RANDOM_STARTS}
    assert set(qt.parse_settings([]).contenders) == set(qt.CONTENDERS)
    assert qt.parse_settings(["--contenders", "data2vec"]).contenders == ("data2vec",)


def test_parse_settings_quick_and_task_choice():
    quick = qt.parse_settings(["--quick"])
    assert quick.quick and quick.budget_cpu_seconds == qt.QUICK["budget_cpu_seconds"]
    assert qt.parse_settings(["--quick", "--budget-cpu-seconds", "7"]).budget_cpu_seconds == 7.0
    assert qt.parse_settings(["--senteval-tasks", "all"]).senteval_tasks == qt.ALL_SENTEVAL_TASKS
    assert qt.parse_settings(["--senteval-tasks", "sst-2", "mrpc"]).senteval_tasks == ("SST2", "MRPC")
    with pytest.raises(SystemExit):
        qt.parse_settings(["--senteval-tasks", "SICK"])


# ----------------------------------------------------------------------------- a real tiny contender


@pytest.mark.parametrize("method", ["simcse", "data2vec"])
def test_multissl_simcse_contender_trains_a_tiny_bert_until_its_budget_is_spent(tmp_path, data_root, method):
    sentences, _ = qt.training_sentences(data_root / "text" / "corpus", 256, seed=0)
    train_file = tmp_path / "train.txt"
    train_file.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    settings = qt.Settings(batch_size=16, random_size="tiny", vocab_size=300, train_max_length=16)
    fetched = []

    def batches():  # the contender pulls its own batches: record what it read
        for indices in qt.sentence_batches(len(sentences), 16, seed=0):
            fetched.append(indices)
            yield indices

    clock = CpuBudget(0.5)
    step, encoder, info = qt.build_multissl_simcse(train_file, sentences, settings, batches(), clock, pretrained=None,
                                                  learning_rate=1e-3, output_dir=tmp_path / "run", method=method)
    before = [p.detach().clone() for p in encoder.parameters()]
    report = budgeted_training(step, clock, name="tiny")
    assert report.stopped_by == "budget" and report.cpu_seconds >= 0.5
    assert report.steps >= 1 and report.steps == len(fetched) and report.samples == 16 * report.steps
    assert all(math.isfinite(loss) for loss in report.losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    assert info["vocabulary"] <= 300
    # evaluation goes through the encoder's own tokenizer at eval length, in the order given
    embed = qt.length_sorted_embedder(encoder, settings, tmp_path)
    texts = ["a much longer sentence about a dog in a park", "short", "a cat"]
    together = embed(texts)
    alone = torch.cat([embed([text]) for text in texts])
    assert torch.allclose(together, alone, atol=1e-5)
