"""Typed settings of the text domain (recipes fill them under ``domain.options``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TextConfig", "AUGMENT_POLICIES"]

#: what ``ViewRequest("augmented", {"policy": ...})`` may name for text
AUGMENT_POLICIES = ("dropout", "cutoff", "delete", "swap", "pair")


@dataclass
class TextConfig:
    """Everything the text domain needs to turn rows into encoder inputs.

    Tokenizer:
        tokenizer:        a Hugging Face tokenizer name or local folder (``AutoTokenizer``), or
                          "train": learn a sentencepiece model on the loaded corpus at ``load()``
                          and wrap it as an exact fast tokenizer (``domains.text.tokenizer``).
                          With pretrained weights (``EncoderConfig.name_or_path``), "train"
                          means the tokenizer saved beside them; a name here must match them.
        vocab_size:       sentencepiece vocabulary, special tokens included (an upper bound: a
                          small corpus gives fewer pieces, logged).
        model_type:       sentencepiece algorithm, "unigram" (Kudo 2018) or "bpe".
        special_tokens:   layout of a trained tokenizer: "bert" ([PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3
                          [MASK]=4) or "roberta" (<s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4).
        tokenizer_training_rows: the first this many rows train it (None: all of them).
        max_length:       token sequences are truncated to this length, special tokens included.

    Rows (``TextDomain.load``, see ``domains.text.loading``):
        blank_lines:      plain text files: "skip" drops blank lines (paragraph breaks) and counts
                          them in ``TextDomain.load_stats``; "error" rejects the file, naming the
                          first blank line.
        tsv_header:       whether a ``.tsv`` file's first line names its columns; without one
                          the columns are "0", "1", ... (tab-separated, no quoting: ``"`` is text).
        label_names:      ordered class names for string labels; without it they are encoded as
                          the sorted unique values of the loaded split (logged), so give it when
                          splits are loaded separately.

    Augmented views (per sample, from the engine's generator; ``domains.text.augment``):
        augment_policy:   the policy used when a request names none: "dropout" (SimCSE, Gao et
                          al. 2021), "cutoff" (Shen et al. 2020), "delete", "swap" (EDA, Wei and
                          Zou 2019), "pair" (supervised SimCSE from the pair columns).
        augment_unit:     "word" (deletion/swap move whole words: every sub-word piece of a
                          word together) or "token".
        cutoff_ratio:     fraction of each row's non-special tokens cut off (floor, as Shen et al.).
        cutoff_mode:      "token" (random positions) or "span" (one contiguous span).
        delete_probability: chance each word (or token) is deleted; one always survives.
        swap_count:       how many times two random words (or tokens) of a row swap places.

    Masked views (BERT masked language modelling, Devlin et al. 2019):
        mlm_probability:  chance each non-special token is selected for prediction.
        mask_replace_probability:   of the selected, the share replaced by the mask token ...
        random_replace_probability: ... and the share replaced by a random non-special token
                          (the rest stay unchanged).
    """

    tokenizer: str = "train"
    vocab_size: int = 8000
    model_type: Literal["unigram", "bpe"] = "unigram"
    special_tokens: Literal["bert", "roberta"] = "bert"
    tokenizer_training_rows: int | None = 1_000_000
    max_length: int = 128

    blank_lines: Literal["skip", "error"] = "skip"
    tsv_header: bool = False
    label_names: list[str] | None = None

    augment_policy: str = "dropout"
    augment_unit: Literal["word", "token"] = "word"
    cutoff_ratio: float = 0.1
    cutoff_mode: Literal["token", "span"] = "token"
    delete_probability: float = 0.1
    swap_count: int = 1

    mlm_probability: float = 0.15
    mask_replace_probability: float = 0.8
    random_replace_probability: float = 0.1

    def __post_init__(self) -> None:
        choices = {
            "model_type": ("unigram", "bpe"),
            "special_tokens": ("bert", "roberta"),
            "blank_lines": ("skip", "error"),
            "augment_policy": AUGMENT_POLICIES,
            "augment_unit": ("word", "token"),
            "cutoff_mode": ("token", "span"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TextConfig.{name}={getattr(self, name)!r}; choose one of {list(allowed)}")
        for name in ("cutoff_ratio", "delete_probability", "mlm_probability",
                     "mask_replace_probability", "random_replace_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TextConfig.{name}={value} must lie in [0, 1]")
        if self.mask_replace_probability + self.random_replace_probability > 1.0:
            raise ValueError(
                "TextConfig.mask_replace_probability + random_replace_probability must be at most 1, got "
                f"{self.mask_replace_probability} + {self.random_replace_probability}"
            )
        for name, low in (("vocab_size", 16), ("max_length", 2), ("swap_count", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"TextConfig.{name}={getattr(self, name)} must be at least {low}")
        if self.tokenizer_training_rows is not None and self.tokenizer_training_rows < 1:
            raise ValueError(f"TextConfig.tokenizer_training_rows={self.tokenizer_training_rows} must be positive or None")
