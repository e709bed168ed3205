"""Sentence-embedding evaluation: STS (cosine Spearman) and SentEval transfer tasks.

The evaluation files are parsed here, self-contained (probes never import a domain); embedding goes
through an ``embed(sentences) -> Tensor [N, D]`` callable the caller builds from its encoder
(:func:`multissl.probes.extract.embed_texts` does it through the Domain contract).

STS protocol (Reimers et al. 2016; SentEval; SimCSE, Gao et al. 2021, Appendix B): cosine
similarity of the two sentence embeddings, Spearman rank correlation with the gold scores, x 100,
no training. SICK-R is scored the same way (SimCSE's "unsupervised" setting; SentEval itself
trains a regressor for SICK-R, which is a transfer task, not this).

SentEval transfer (Conneau & Kiela 2018): a logistic-regression probe on the frozen sentence
embeddings; 10-fold cross-validation for MR, CR, SUBJ, MPQA; the given train/dev/test splits for
SST-2 and train/test for TREC and MRPC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from multissl.probes.classification import linear_probe

__all__ = [
    "SentencePairs",
    "read_stsb",
    "read_semeval_sts",
    "read_sick",
    "spearman_correlation",
    "sts_spearman",
    "evaluate_sts",
    "SentEvalTask",
    "SENTEVAL_TASKS",
    "read_senteval_task",
    "pair_features",
    "evaluate_senteval_task",
]

Embed = Callable[[list[str]], Tensor]


# ----------------------------------------------------------------------------------------------
# STS files


@dataclass
class SentencePairs:
    """Sentence pairs with a gold similarity. ``skipped``: pairs left out (unscored), counted."""

    first: list[str]
    second: list[str]
    scores: Tensor
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.scores)


def _read_lines(path: Path, encoding: str) -> list[str]:
    try:
        text = path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise FileNotFoundError(f"evaluation file {path} does not exist") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not valid {encoding} text ({error})") from None
    return text.splitlines()


def _score(value: str, path: Path, line_number: int) -> float:
    try:
        score = float(value)
    except ValueError:
        raise ValueError(f"{path}:{line_number}: gold score {value!r} is not a number") from None
    if not math.isfinite(score):
        raise ValueError(f"{path}:{line_number}: gold score {value!r} is not finite")
    return score


def read_stsb(path: str | Path) -> SentencePairs:
    """STS Benchmark file (``sts-{train,dev,test}.csv``).

    Tab-separated, NO csv quoting (sentences contain ``"``): genre, file, year, id, score,
    sentence1, sentence2, then sometimes extra source fields, which are ignored. Blank lines are
    ignored; a line with fewer than 7 fields is an error naming it.
    """
    path = Path(path)
    first, second, scores = [], [], []
    for line_number, line in enumerate(_read_lines(path, "utf-8"), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise ValueError(f"{path}:{line_number}: expected at least 7 tab-separated fields, found {len(fields)}")
        scores.append(_score(fields[4], path, line_number))
        first.append(fields[5])
        second.append(fields[6])
    if not scores:
        raise ValueError(f"{path}: no sentence pairs found")
    return SentencePairs(first, second, torch.tensor(scores, dtype=torch.float64), str(path))


def read_semeval_sts(input_path: str | Path, gold_path: str | Path) -> SentencePairs:
    """One SemEval STS 2012-2016 subset: ``STS.input.<name>.txt`` (sentence1<TAB>sentence2 per
    line) and ``STS.gs.<name>.txt`` (one score per line, same order). Lines whose gold score is
    empty are unscored pairs (STS 2016 has them): they are skipped and counted, as SentEval does.
    """
    input_path, gold_path = Path(input_path), Path(gold_path)
    pair_lines = _read_lines(input_path, "utf-8")
    gold_lines = _read_lines(gold_path, "utf-8")
    # a trailing newline at the end of either file is not a pair
    while pair_lines and not pair_lines[-1].strip():
        pair_lines.pop()
    while gold_lines and gold_lines[-1] == "":
        gold_lines.pop()
    if len(pair_lines) != len(gold_lines):
        raise ValueError(f"{input_path} has {len(pair_lines)} pairs but {gold_path} has {len(gold_lines)} scores")
    first, second, scores, skipped = [], [], [], 0
    for line_number, (pair, gold) in enumerate(zip(pair_lines, gold_lines), start=1):
        if not gold.strip():
            skipped += 1
            continue
        fields = pair.split("\t")
        if len(fields) < 2:
            raise ValueError(f"{input_path}:{line_number}: expected sentence1<TAB>sentence2, found {len(fields)} field(s)")
        scores.append(_score(gold.strip(), gold_path, line_number))
        first.append(fields[0])
        second.append(fields[1])
    return SentencePairs(first, second, torch.tensor(scores, dtype=torch.float64), str(input_path), skipped)


def read_sick(path: str | Path) -> SentencePairs:
    """SICK (``SICK.txt``, ``SICK_train.txt``, ``SICK_test_annotated.txt``): tab-separated with a
    header naming ``sentence_A``, ``sentence_B`` and ``relatedness_score`` (gold 1-5). Columns
    are found by header name, so the full SICK.txt and SentEval's split files both work."""
    path = Path(path)
    lines = _read_lines(path, "utf-8-sig")
    if not lines:
        raise ValueError(f"{path}: empty file")
    header = lines[0].split("\t")
    missing = [name for name in ("sentence_A", "sentence_B", "relatedness_score") if name not in header]
    if missing:
        raise ValueError(f"{path}: header {header} lacks column(s) {missing}")
    a, b, s = (header.index(name) for name in ("sentence_A", "sentence_B", "relatedness_score"))
    first, second, scores = [], [], []
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) <= max(a, b, s):
            raise ValueError(f"{path}:{line_number}: expected {len(header)} tab-separated fields, found {len(fields)}")
        scores.append(_score(fields[s], path, line_number))
        first.append(fields[a])
        second.append(fields[b])
    return SentencePairs(first, second, torch.tensor(scores, dtype=torch.float64), str(path))


# ----------------------------------------------------------------------------------------------
# scoring


def _average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..N with ties given the mean of the ranks they span (what Spearman's rho needs)."""
    order = values.argsort(stable=True)
    sorted_values = values[order]
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # 1-based rank of the last member of each tie group
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def spearman_correlation(x: Tensor, y: Tensor) -> float:
    """Spearman's rho: Pearson correlation of the average ranks of ``x`` [N] and ``y`` [N]."""
    x, y = torch.as_tensor(x).flatten().double(), torch.as_tensor(y).flatten().double()
    if x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"spearman needs two equal-length vectors of 2+ values, got {tuple(x.shape)} and {tuple(y.shape)}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = rx.norm() * ry.norm()
    if denominator == 0:
        raise ValueError("spearman is undefined when one side is constant")
    return float((rx * ry).sum() / denominator)


def sts_spearman(first: Tensor, second: Tensor, gold: Tensor) -> float:
    """Spearman x 100 between cos(first_i, second_i) and gold_i; first, second [N, D], gold [N]."""
    if first.shape != second.shape or first.dim() != 2 or first.shape[0] != len(gold):
        raise ValueError(f"sts_spearman: embeddings {tuple(first.shape)}, {tuple(second.shape)} and gold [{len(gold)}] disagree")
    cosine = F.cosine_similarity(first.double(), second.double(), dim=1)
    return 100.0 * spearman_correlation(cosine, gold)


def _embed_unique(embed: Embed, sentences: Sequence[str]) -> dict[str, Tensor]:
    """Embed each distinct sentence once (STS files repeat sentences)."""
    unique = list(dict.fromkeys(sentences))
    embeddings = embed(unique)
    if embeddings.shape[0] != len(unique):
        raise ValueError(f"embed returned {embeddings.shape[0]} rows for {len(unique)} sentences")
    return dict(zip(unique, embeddings))


def evaluate_sts(embed: Embed, pairs: SentencePairs) -> dict[str, Any]:
    """Spearman x 100 of cosine similarity on ``pairs`` (one subset)."""
    table = _embed_unique(embed, pairs.first + pairs.second)
    first = torch.stack([table[s] for s in pairs.first])
    second = torch.stack([table[s] for s in pairs.second])
    return {"spearman_x100": sts_spearman(first, second, pairs.scores), "pairs": len(pairs), "skipped": pairs.skipped}


# ----------------------------------------------------------------------------------------------
# SentEval transfer tasks


@dataclass
class SentEvalTask:
    """A SentEval classification task as loaded from its own files.

    ``splits``: split name -> (sentences or sentence pairs, labels [N]); "all" for the 10-fold
    cross-validated tasks; "train"/"test" (and "dev" for SST-2) otherwise.
    """

    name: str
    splits: dict[str, tuple[list[Any], Tensor]]
    label_names: list[str]
    protocol: str  # "cv10" or "splits"
    pairs: bool = False
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def _binary_task(name: str, root: Path, negative: str, positive: str, label_names: list[str]) -> SentEvalTask:
    """One sentence per line, one file per class, read as latin-1 as SentEval reads them. Blank
    lines (CR has 4, which SentEval keeps as empty sentences) are skipped and counted."""
    sentences, labels, skipped = [], [], 0
    for label, file_name in ((0, negative), (1, positive)):
        for line in _read_lines(root / file_name, "latin-1"):
            if line.strip():
                sentences.append(line.strip())
                labels.append(label)
            else:
                skipped += 1
    notes = [f"{skipped} blank line(s) skipped"] if skipped else []
    return SentEvalTask(name, {"all": (sentences, torch.tensor(labels))}, label_names, "cv10", skipped=skipped, notes=notes)


def _read_sst2(root: Path) -> SentEvalTask:
    splits = {}
    for split in ("train", "dev", "test"):
        path = root / "binary" / f"sentiment-{split}"
        sentences, labels = [], []
        for line_number, line in enumerate(_read_lines(path, "utf-8"), start=1):
            if not line.strip():
                continue
            sentence, _, label = line.rpartition("\t")
            if label not in ("0", "1") or not sentence:
                raise ValueError(f"{path}:{line_number}: expected 'sentence<TAB>0|1', got {line[:80]!r}")
            sentences.append(sentence.strip())
            labels.append(int(label))
        splits[split] = (sentences, torch.tensor(labels))
    return SentEvalTask("SST2", splits, ["negative", "positive"], "splits")


def _read_trec(root: Path) -> SentEvalTask:
    """Coarse TREC (6 classes: ABBR, DESC, ENTY, HUM, LOC, NUM) as SentEval scores it; train is latin-1."""
    label_names = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    splits = {}
    for split, name in (("train", "train_5500.label"), ("test", "TREC_10.label")):
        path = root / name
        sentences, labels = [], []
        for line_number, line in enumerate(_read_lines(path, "latin-1"), start=1):
            if not line.strip():
                continue
            tag, _, sentence = line.strip().partition(" ")
            coarse = tag.split(":")[0]
            if coarse not in label_names or not sentence:
                raise ValueError(f"{path}:{line_number}: expected 'COARSE:fine question', got {line[:80]!r}")
            sentences.append(sentence)
            labels.append(label_names.index(coarse))
        splits[split] = (sentences, torch.tensor(labels))
    return SentEvalTask("TREC", splits, label_names, "splits")


def _read_mrpc(root: Path) -> SentEvalTask:
    """MRPC: header line, then Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String; files start with a BOM."""
    splits = {}
    for split, name in (("train", "msr_paraphrase_train.txt"), ("test", "msr_paraphrase_test.txt")):
        path = root / name
        pairs, labels = [], []
        for line_number, line in enumerate(_read_lines(path, "utf-8-sig")[1:], start=2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 5 or fields[0] not in ("0", "1"):
                raise ValueError(f"{path}:{line_number}: expected Quality<TAB>id<TAB>id<TAB>s1<TAB>s2, got {line[:80]!r}")
            pairs.append((fields[3], fields[4]))
            labels.append(int(fields[0]))
        splits[split] = (pairs, torch.tensor(labels))
    return SentEvalTask("MRPC", splits, ["not paraphrase", "paraphrase"], "splits", pairs=True)


_SENTIMENT = ["negative", "positive"]

#: task name -> (sub-folder, reader)
SENTEVAL_TASKS: dict[str, tuple[str, Callable[[Path], SentEvalTask]]] = {
    "MR": ("MR", lambda root: _binary_task("MR", root, "rt-polarity.neg", "rt-polarity.pos", _SENTIMENT)),
    "CR": ("CR", lambda root: _binary_task("CR", root, "custrev.neg", "custrev.pos", _SENTIMENT)),
    "SUBJ": ("SUBJ", lambda root: _binary_task("SUBJ", root, "subj.objective", "subj.subjective", ["objective", "subjective"])),
    "MPQA": ("MPQA", lambda root: _binary_task("MPQA", root, "mpqa.neg", "mpqa.pos", _SENTIMENT)),
    "SST2": ("SST", _read_sst2),
    "TREC": ("TREC", _read_trec),
    "MRPC": ("MRPC", _read_mrpc),
}


def read_senteval_task(root: str | Path, name: str) -> SentEvalTask:
    """Read task ``name`` (MR, CR, SUBJ, MPQA, SST2, TREC, MRPC) from SentEval's data root
    (the folder holding MR/, CR/, ..., laid out as SentEval's ``get_transfer_data.bash`` leaves it)."""
    key = name.upper().replace("SST-2", "SST2")
    if key not in SENTEVAL_TASKS:
        raise ValueError(f"unknown SentEval task {name!r}; known: {sorted(SENTEVAL_TASKS)}")
    folder, reader = SENTEVAL_TASKS[key]
    return reader(Path(root) / folder)


def pair_features(u: Tensor, v: Tensor, include_sentences: bool = True) -> Tensor:
    """Features of a sentence pair: ``[u, v, |u - v|, u * v]`` (InferSent, Conneau et al. 2017).

    ``include_sentences=False`` gives ``[|u - v|, u * v]``, what SentEval's own MRPC code uses.
    """
    parts = [u, v] if include_sentences else []
    return torch.cat(parts + [(u - v).abs(), u * v], dim=1)


def _f1(predictions: Tensor, labels: Tensor) -> float:
    true_positive = int(((predictions == 1) & (labels == 1)).sum())
    predicted, actual = int((predictions == 1).sum()), int((labels == 1).sum())
    return 2 * true_positive / (predicted + actual) if predicted + actual else 0.0


def evaluate_senteval_task(
    embed: Embed, task: SentEvalTask, folds: int = 10, seed: int = 1111, **probe_options: Any
) -> dict[str, Any]:
    """Accuracy x 100 of the linear probe on ``task`` (and F1 x 100 for MRPC, as SentEval reports).

    cv10 tasks: stratified ``folds``-fold cross-validation (seeded as SentEval's 1111); inside each
    fold the weight decay is chosen on a validation split carved from that fold's training part.
    (SentEval runs a nested inner k-fold for that choice; one carved split is ~k times cheaper and
    selects from the same grid.) SST-2 selects on its dev split; TREC and MRPC carve validation
    from train. ``probe_options`` go to :func:`linear_probe`.
    """
    table = {}
    for items, _ in task.splits.values():
        sentences = [s for pair in items for s in pair] if task.pairs else items
        table.update(_embed_unique(embed, sentences))

    def features(items: list[Any]) -> Tensor:
        if task.pairs:
            return pair_features(torch.stack([table[a] for a, _ in items]), torch.stack([table[b] for _, b in items]))
        return torch.stack([table[s] for s in items])

    num_classes = len(task.label_names)
    if task.protocol == "cv10":
        from sklearn.model_selection import StratifiedKFold

        items, labels = task.splits["all"]
        x = features(items)
        accuracies = []
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for train_rows, test_rows in splitter.split(x.numpy(), labels.numpy()):
            train_rows, test_rows = torch.from_numpy(train_rows), torch.from_numpy(test_rows)
            result = linear_probe(x[train_rows], labels[train_rows], x[test_rows], labels[test_rows],
                                  num_classes=num_classes, **probe_options)
            accuracies.append(result.accuracy)
        accuracy = torch.tensor(accuracies)
        return {"accuracy_x100": 100 * float(accuracy.mean()), "fold_std_x100": 100 * float(accuracy.std()),
                "folds": folds, "samples": len(labels)}

    train_items, train_labels = task.splits["train"]
    test_items, test_labels = task.splits["test"]
    validation = None
    if "dev" in task.splits:
        dev_items, dev_labels = task.splits["dev"]
        validation = (features(dev_items), dev_labels)
    result = linear_probe(features(train_items), train_labels, features(test_items), test_labels,
                          num_classes=num_classes, validation=validation, **probe_options)
    scores = {"accuracy_x100": 100 * result.accuracy, "train": len(train_labels), "test": len(test_labels),
              "weight_decay": result.weight_decay}
    if task.name == "MRPC":
        scores["f1_x100"] = 100 * _f1(result.predictions, test_labels)
    return scores
