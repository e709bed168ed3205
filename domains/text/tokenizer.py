"""Tokenizers: any Hugging Face fast tokenizer, or sentencepiece trained on the user's corpus.

A trained tokenizer is a sentencepiece model (Kudo and Richardson 2018; unigram or BPE) learned in
memory and converted, piece for piece, into a ``tokenizers`` pipeline wrapped as a
``PreTrainedTokenizerFast``: the same ids as ``sentencepiece`` itself, one fast batched call in
collation, and a ``tokenizer.json`` that ``AutoTokenizer.from_pretrained`` reloads with neither
sentencepiece nor protobuf installed. (``LlamaTokenizer``/``T5Tokenizer(vocab_file=...)`` would
build silently broken tokenizers here, see shared/ENVIRONMENT.md.)
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from domains.text.pretrained import resolve_pretrained

__all__ = [
    "SPECIAL_TOKEN_LAYOUTS",
    "train_sentencepiece",
    "sentencepiece_to_fast",
    "train_sentencepiece_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
    "word_start_table",
]

logger = logging.getLogger(__name__)

#: sentencepiece threads; fixed because the learned vocabulary depends on it, and every process
#: (and every machine) of a run must learn the same one
TRAINING_THREADS = 4


@dataclass(frozen=True)
class SpecialTokenLayout:
    """Special pieces at fixed ids, and the templates that frame one sequence or a pair."""

    pieces: dict[str, str]  # Hugging Face role (pad_token, ...) -> piece
    ids: dict[str, int]  # piece -> id (the first ids of the vocabulary)
    single: str
    pair: str


SPECIAL_TOKEN_LAYOUTS = {
    "bert": SpecialTokenLayout(
        pieces={"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"},
        ids={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4},
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
    ),
    "roberta": SpecialTokenLayout(
        pieces={"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"},
        ids={"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4},
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
    ),
}


def _layout(name: str) -> SpecialTokenLayout:
    if name not in SPECIAL_TOKEN_LAYOUTS:
        raise ValueError(f"unknown special token layout {name!r}; known: {list(SPECIAL_TOKEN_LAYOUTS)}")
    return SPECIAL_TOKEN_LAYOUTS[name]


def train_sentencepiece(
    texts: Iterable[str],
    *,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    special_tokens: str = "bert",
    max_rows: int | None = None,
) -> bytes:
    """Train sentencepiece in memory on ``texts`` (strings; blank ones are passed over and
    counted in the log) and return the serialized model proto.

    The special pieces of ``special_tokens`` take the first ids. ``vocab_size`` is an upper bound:
    a corpus too small for it yields fewer pieces (``hard_vocab_limit=False``), logged. Training is
    deterministic for given rows (fixed seed and thread count).
    """
    import sentencepiece

    layout = _layout(special_tokens)
    # sentencepiece places pad/unk/bos/eos itself; every other special piece becomes a control
    # symbol (never produced from text), taking the next ids in the layout's order
    named = {kind: layout.pieces.get(f"{kind}_token") for kind in ("pad", "unk", "bos", "eos")}
    piece_options: dict[str, int | str] = {}
    for kind, piece in named.items():
        piece_options[f"{kind}_id"] = layout.ids[piece] if piece is not None else -1
        if piece is not None:
            piece_options[f"{kind}_piece"] = piece
    control = [piece for piece in sorted(layout.ids, key=layout.ids.get) if piece not in named.values()]

    passed_over = 0
    used = 0

    def rows():
        nonlocal passed_over, used
        for text in texts:
            if max_rows is not None and used >= max_rows:
                return
            if not isinstance(text, str) or not text.strip():
                passed_over += 1
                continue
            used += 1
            yield text

    model = io.BytesIO()
    sentencepiece.set_random_generator_seed(0)
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=rows(),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            control_symbols=control,
            hard_vocab_limit=False,
            max_sentence_length=1 << 16,  # WikiText paragraphs exceed the 4 kB default, which drops them
            num_threads=TRAINING_THREADS,
            minloglevel=2,
            **piece_options,
        )
    except RuntimeError:
        if used == 0:
            raise ValueError(f"no text to train the tokenizer on ({passed_over} blank or non-string rows)") from None
        raise
    proto = model.getvalue()
    pieces = _parse_proto(proto).pieces
    logger.info(
        "trained a %s sentencepiece tokenizer on %d rows (%d blank or non-string rows passed over): %d pieces",
        model_type, used, passed_over, len(pieces),
    )
    if len(pieces) < vocab_size:
        logger.warning("the corpus gave %d sentencepiece pieces, fewer than vocab_size=%d", len(pieces), vocab_size)
    return proto


def _parse_proto(proto: bytes):
    from transformers.convert_slow_tokenizer import import_protobuf

    model = import_protobuf().ModelProto()
    model.ParseFromString(proto)
    return model


def _sentencepiece_to_tokenizers(proto: bytes):
    """The exact ``tokenizers`` pipeline of a sentencepiece model: transformers' ``SpmConverter``
    fed the proto from memory (it would read ``vocab_file``), with BPE merges recovered from the
    piece scores (merge order), since its own BPE path calls the extractor with the wrong arguments
    in transformers 5."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import SpmConverter, generate_merges

    class InMemorySpmConverter(SpmConverter):
        def __init__(self, model_proto) -> None:  # noqa: D401 - no file, no slow tokenizer
            self.original_tokenizer = None  # read only through getattr(..., default)
            self.proto = model_proto

        def tokenizer(self, proto):
            if proto.trainer_spec.model_type != 2:  # 1 = unigram: the stock path is exact
                return super().tokenizer(proto)
            vocab_scores = self.vocab(proto)
            vocab = {piece: index for index, (piece, _score) in enumerate(vocab_scores)}
            not_normal = [p.piece for p in proto.pieces if p.type != 1]
            merges = generate_merges(vocab, vocab_scores, skip_tokens=not_normal)
            tokenizer = Tokenizer(BPE(vocab, merges, unk_token=proto.trainer_spec.unk_piece, fuse_unk=True))
            tokenizer.add_tokens(
                [AddedToken(p.piece, normalized=False, special=p.type == 3) for p in proto.pieces if p.type in (3, 4)]
            )
            return tokenizer

    return InMemorySpmConverter(_parse_proto(proto)).converted()


def sentencepiece_to_fast(model_proto: bytes, *, special_tokens: str = "bert", model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Wrap a serialized sentencepiece model as a fast tokenizer with the layout's special tokens
    and templates (``[CLS] text [SEP]`` for "bert", ``<s> text </s>`` for "roberta")."""
    from tokenizers import processors

    layout = _layout(special_tokens)
    backend = _sentencepiece_to_tokenizers(model_proto)
    for piece, expected in layout.ids.items():
        if backend.token_to_id(piece) != expected:
            raise ValueError(
                f"the sentencepiece model has {piece!r} at id {backend.token_to_id(piece)}, the {special_tokens!r} "
                f"layout needs it at {expected}; train it with special_tokens={special_tokens!r}"
            )
    frame = [piece for piece in layout.ids if piece in layout.single or piece in layout.pair]
    backend.post_processor = processors.TemplateProcessing(
        single=layout.single, pair=layout.pair, special_tokens=[(piece, layout.ids[piece]) for piece in frame]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        padding_side="right",
        **layout.pieces,
    )


def train_sentencepiece_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    special_tokens: str = "bert",
    max_rows: int | None = None,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """:func:`train_sentencepiece` then :func:`sentencepiece_to_fast`."""
    proto = train_sentencepiece(
        texts, vocab_size=vocab_size, model_type=model_type, special_tokens=special_tokens, max_rows=max_rows
    )
    return sentencepiece_to_fast(proto, special_tokens=special_tokens, model_max_length=model_max_length)


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` on a Hub id or local folder (never remote code); the text
    domain needs a fast (Rust) tokenizer: it tokenizes whole batches in one call."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(name_or_path), trust_remote_code=False)
    if not tokenizer.is_fast:
        raise ValueError(f"tokenizer {name_or_path!r} loaded as the slow {type(tokenizer).__name__}; the text domain needs a fast one")
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> None:
    """``save_pretrained``, naming the class ``PreTrainedTokenizerFast`` where transformers 5
    writes ``TokenizersBackend`` (the same class under its v5 name), so transformers 4 loads the
    folder too."""
    tokenizer.save_pretrained(folder)
    config_file = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


#: sub-word conventions: a marker a word's first piece starts with, or one its later pieces start with
_WORD_START_MARKERS = ("\u2581", "\u0120")  # sentencepiece / Metaspace "▁", byte-level BPE "Ġ"
_CONTINUATION_MARKER = "##"  # WordPiece


def word_start_table(tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """Bool[V]: True for the ids whose piece begins a word, read off the vocabulary's convention
    (the marker most pieces carry: "▁" or "Ġ" begin words, "##" continues them). Special tokens
    count as word starts; ids with no piece as well. Raises when the vocabulary shows no convention
    (use ``augment_unit="token"`` then)."""
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    pieces = [piece if isinstance(piece, str) else "" for piece in pieces]
    counts = {marker: sum(piece.startswith(marker) for piece in pieces) for marker in (*_WORD_START_MARKERS, _CONTINUATION_MARKER)}
    marker = max(counts, key=counts.get)
    if counts[marker] < 0.05 * size:
        raise ValueError(
            f"cannot tell word boundaries from the vocabulary of {type(tokenizer).__name__} (no sub-word marker "
            "among ▁, Ġ, ##): use augment_unit='token'"
        )
    if marker == _CONTINUATION_MARKER:
        starts = [not piece.startswith(marker) for piece in pieces]
    else:
        starts = [piece.startswith(marker) or piece == "" for piece in pieces]
    table = torch.tensor(starts, dtype=torch.bool)
    table[torch.tensor(tokenizer.all_special_ids, dtype=torch.long)] = True
    return table
