"""The text domain: rows of sentences -> token tensors -> views -> a BERT-family encoder."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from multissl.domain import BadSampleError, DataConfig, Domain, EncoderConfig, RawBatch, Views, skip_record
from domains.text import augment
from domains.text.config import AUGMENT_POLICIES, TextConfig
from domains.text.encoders import TextEncoder, build_text_encoder
from domains.text.loading import ROW_INDEX, TEXT_ROLES, default_columns, infer_format, load_rows, prepare_rows
from domains.text.tokenizer import load_tokenizer, train_sentencepiece_tokenizer, word_start_table
from multissl.views import ViewRequest

__all__ = ["TextDomain"]

logger = logging.getLogger(__name__)

#: text role -> key prefix of its token tensors in a collated batch
_TOKEN_PREFIX = {"text": "", "text_pair": "pair_", "hard_negative": "negative_"}
#: options each view kind accepts in its request (anything else is an error naming it)
_VIEW_OPTIONS = {
    "plain": set(),
    "sequence": set(),
    "augmented": {"num_views", "policy", "cutoff_ratio", "cutoff_mode", "delete_probability", "swap_count"},
    "masked": {"mask_ratio", "mask_token"},
}


def _blank_line_skips(dataset, blank_rows: list[int], source: str, limited: bool) -> list[dict[str, Any]]:
    """One skip record for the blank lines dropped among the rows a run uses (up to the last row
    kept, when ``limit`` cut the data), naming up to 50 of their rows."""
    if not blank_rows:
        return []
    if limited and len(dataset):
        last = int(dataset[len(dataset) - 1][ROW_INDEX])
        blank_rows = [row for row in blank_rows if row < last]
        if not blank_rows:
            return []
    shown = ", ".join(str(row) for row in blank_rows[:50]) + (f", ... ({len(blank_rows) - 50} more)" if len(blank_rows) > 50 else "")
    return [skip_record(f"{source} rows {shown}", f"{len(blank_rows)} blank line(s) dropped (TextConfig.blank_lines: skip)",
                        reason="blank line", count=len(blank_rows))]


def _is_plain_text(dataset, fmt: str | None) -> bool:
    """Read by the "text" builder, asked for or inferred by ``datasets`` (a folder of .txt files)."""
    return fmt == "text" or getattr(dataset.info, "builder_name", None) == "text"


class TextDomain(Domain):
    """Sentences in, token tensors out.

    ``collate`` (CPU) -> {"input_ids": Long[B, T], "attention_mask": Long[B, T], "skipped": int,
    "labels": Long[B] (label column), "scores": Float[B] (score column), "indices": Long[B] (each
    row's ``row_index``: memory banks' sample ids),
    "pair_input_ids"/"pair_attention_mask" (text_pair column), "negative_input_ids"/
    "negative_attention_mask" (hard_negative column)}: one fast-tokenizer call for all of them,
    padded to the longest (so every role shares T), truncated to ``max_length``.

    ``make_views`` (on the batch's device, randomness from the given generator only), with
    Inputs = {"input_ids", "attention_mask"}:

    - ``plain``: {"inputs": Inputs} as collated; ``sequence``: the same plus "valid" Bool[B, L] (the
      real tokens), CPC's ordered sequence.
    - ``augmented``: {"views": [Inputs] * num_views}. Policies (option ``policy``, default
      ``TextConfig.augment_policy``): "dropout" identical copies (SimCSE: encoder dropout makes
      them differ), "cutoff", "delete", "swap" (each view drawn independently per row, see
      ``domains.text.augment``), "pair": [anchor, positive] (+ hard negative) from the pair columns
      (supervised SimCSE; ``num_views`` does not apply).
    - ``masked``: {"inputs": Inputs with MLM replacements, "mask": Bool[B, T] selected positions,
      "targets": Long[B, T] original ids there and -100 elsewhere, "vocab_size": int, "clean": the
      unmasked Inputs (a teacher's: data2vec)}. Options ``mask_ratio``, ``mask_token`` (true only).

    Every view dict also carries "skipped" and, when present, "labels", "scores" and "indices".
    """

    name = "text"
    config_class = TextConfig
    roles = TEXT_ROLES
    view_kinds = ("plain", "augmented", "masked", "sequence")
    # the tokenizer itself is saved in the encoder folder and read back from it
    preprocessing_fields = ("max_length",)

    def __init__(self, config: TextConfig | None = None) -> None:
        super().__init__(config)
        self.on_bad_sample = "error"
        self.load_stats: dict[str, Any] = {}
        self._tokenizer = None if self.config.tokenizer == "train" else load_tokenizer(self.config.tokenizer)
        self._token_tables: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers receive a pickled domain: leave out the token tables, which may sit on
        # the training device (a worker must never initialise CUDA); they are rebuilt on first use
        state = dict(self.__dict__)
        state["_token_tables"] = {}
        return state

    # ------------------------------------------------------------------ tokenizer

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            raise RuntimeError(
                "tokenizer='train' learns the tokenizer from the corpus in load(): call load() first, "
                "or set TextConfig.tokenizer to a saved tokenizer folder"
            )
        return self._tokenizer

    def train_tokenizer(self, texts) -> None:
        """Learn the sentencepiece tokenizer of ``tokenizer='train'`` from ``texts`` (strings)."""
        config = self.config
        self._tokenizer = train_sentencepiece_tokenizer(
            texts, vocab_size=config.vocab_size, model_type=config.model_type, special_tokens=config.special_tokens,
            max_rows=config.tokenizer_training_rows, model_max_length=config.max_length,
        )
        self._token_tables.clear()

    def _tables(self, device: torch.device) -> dict[str, Any]:
        """Special ids, non-special ids (MLM random replacements) and word starts, on ``device``."""
        key = str(device)
        if key not in self._token_tables:
            tokenizer = self.tokenizer
            special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
            ordinary = torch.ones(len(tokenizer), dtype=torch.bool)
            ordinary[special] = False
            starts = word_start_table(tokenizer) if self.config.augment_unit == "word" else None
            self._token_tables[key] = {
                "special": special.to(device),
                "ordinary": ordinary.nonzero().squeeze(1).to(device),
                "word_starts": None if starts is None else starts.to(device),
            }
        return self._token_tables[key]

    # ------------------------------------------------------------------ loading

    def load(self, data: DataConfig):
        """Rows of ``data`` (see ``domains.text.loading``): the mapped columns under their role
        names ("text", "text_pair", "hard_negative", "label", "score") and ``row_index``.
        Remembers ``on_bad_sample`` for ``collate``, trains the tokenizer when
        ``tokenizer='train'`` and none is set yet, and sets ``load_stats`` ({"rows",
        "blank_lines_skipped"}) and ``load_skips`` (the undecodable lines left out under
        ``on_bad_sample: skip``, and the blank lines among the rows used, as skip records)."""
        if data.on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {data.on_bad_sample!r}")
        fmt = data.format or infer_format(data.path)
        skips: list[dict[str, Any]] = []
        dataset = load_rows(data, tsv_header=self.config.tsv_header, skipped=skips)
        columns = {**default_columns(fmt, list(dataset.column_names or [])), **data.columns}
        blank_rows: list[int] = []
        source = f"{data.path} [{data.split}]"
        dataset, self.load_stats = prepare_rows(
            dataset, columns, plain_text=_is_plain_text(dataset, fmt), blank_lines=self.config.blank_lines,
            label_names=self.config.label_names, limit=data.limit, source=source, blank_rows=blank_rows,
        )
        self.load_skips = skips + _blank_line_skips(dataset, blank_rows, source, data.limit is not None)
        self.on_bad_sample = data.on_bad_sample
        if self._tokenizer is None:
            self.train_tokenizer(text for rows in dataset.iter(batch_size=1024) for text in rows["text"])
        return dataset

    # ------------------------------------------------------------------ collation

    @staticmethod
    def _check_row(row: dict[str, Any], position: int, roles: list[str]) -> tuple[str, str, str] | None:
        """(where: the row, what is wrong naming the column, a short reason) or None."""
        name = f"row {row[ROW_INDEX]}" if ROW_INDEX in row else f"batch position {position}"
        for role in roles:
            if role not in row:
                return name, f"no column {role!r}; the row has {sorted(row)}", f"missing {role}"
            value = row[role]
            if role in _TOKEN_PREFIX:
                if value is None:
                    return name, f"column {role!r}: text is None (missing or empty cell)", "missing text"
                if not isinstance(value, str):
                    return name, f"column {role!r}: text is a {type(value).__name__} ({value!r}), not a string", "text is not a string"
                if not value.strip():
                    return name, f"column {role!r}: text is {'empty' if not value else 'whitespace only'}", "empty text"
            elif role == "label" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                return name, f"column {role!r}: label {value!r} is no class id (a non-negative int)", "label is not a class id"
            elif role == "score" and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
                return name, f"column {role!r}: score {value!r} is no number", "score is not a number"
        return None

    def collate(self, rows: list[dict[str, Any]]) -> RawBatch:
        """Rows with role-named keys (as ``load`` prepares them) -> token tensors; see the class doc."""
        present = {key for row in rows for key in row}
        roles = [role for role in TEXT_ROLES if role == "text" or role in present]
        good, records = [], []
        for position, row in enumerate(rows):
            problem = self._check_row(row, position, roles)
            if problem is None:
                good.append(row)
                continue
            where, what, reason = problem
            error = BadSampleError(f"{where}, {what}" if what.startswith("column") else f"{where}: {what}", reason=reason)
            if self.on_bad_sample != "skip":
                raise error
            records.append(skip_record(where, error))
        text_roles = [role for role in roles if role in _TOKEN_PREFIX]
        batch: RawBatch = {"skipped": len(records), "skipped_samples": records}
        if not good:
            for role in text_roles:
                batch[_TOKEN_PREFIX[role] + "input_ids"] = torch.zeros(0, 0, dtype=torch.long)
                batch[_TOKEN_PREFIX[role] + "attention_mask"] = torch.zeros(0, 0, dtype=torch.long)
        else:
            texts = [row[role] for role in text_roles for row in good]
            encoded = self.tokenizer(
                texts, padding="longest", truncation=True, max_length=self.config.max_length,
                return_attention_mask=True, return_token_type_ids=False, return_tensors="pt",
            )
            for index, role in enumerate(text_roles):
                rows_of_role = slice(index * len(good), (index + 1) * len(good))
                batch[_TOKEN_PREFIX[role] + "input_ids"] = encoded["input_ids"][rows_of_role]
                batch[_TOKEN_PREFIX[role] + "attention_mask"] = encoded["attention_mask"][rows_of_role]
        if "label" in roles:
            batch["labels"] = torch.tensor([row["label"] for row in good], dtype=torch.long)
        if "score" in roles:
            batch["scores"] = torch.tensor([float(row["score"]) for row in good], dtype=torch.float32)
        if rows and all(ROW_INDEX in row for row in rows):
            batch["indices"] = torch.tensor([int(row[ROW_INDEX]) for row in good], dtype=torch.long)
        return batch

    # ------------------------------------------------------------------ views

    def make_views(self, batch: RawBatch, request: ViewRequest, generator: torch.Generator) -> Views:
        self.check_view_kind(request)
        request.checked_options("text", dict.fromkeys(_VIEW_OPTIONS[request.kind]))
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if request.kind == "plain":
            views: Views = {"inputs": inputs}
        elif request.kind == "sequence":
            views = {"inputs": inputs, "valid": inputs["attention_mask"].bool()}
        elif request.kind == "masked":
            views = self._masked(inputs, request.options, generator)
        else:
            views = {"views": self._augmented(batch, inputs, request.options, generator)}
        views["skipped"] = batch.get("skipped", 0)
        for key in ("labels", "scores", "indices"):
            if key in batch:
                views[key] = batch[key]
        return views

    def _masked(self, inputs: dict[str, Tensor], options: dict[str, Any], generator: torch.Generator) -> Views:
        config, tokenizer = self.config, self.tokenizer
        if options.get("mask_token", True) is not True:
            raise ValueError("text masked view: masked tokens are always replaced in place (BERT's 80/10/10), "
                             "so mask_token can only be true")
        if tokenizer.mask_token_id is None:
            raise ValueError(f"the tokenizer {type(tokenizer).__name__} has no mask token: masked views need one")
        tables = self._tables(inputs["input_ids"].device)
        content = augment.content_mask(inputs["input_ids"], inputs["attention_mask"], tables["special"])
        masked_ids, selected, targets = augment.mlm_mask(
            inputs["input_ids"], content, generator,
            mask_token_id=tokenizer.mask_token_id, replacement_ids=tables["ordinary"],
            probability=options.get("mask_ratio", config.mlm_probability),
            mask_fraction=config.mask_replace_probability, random_fraction=config.random_replace_probability,
        )
        return {
            "inputs": {"input_ids": masked_ids, "attention_mask": inputs["attention_mask"]},
            "mask": selected,
            "targets": targets,
            "vocab_size": len(tokenizer),
            "clean": dict(inputs),
        }

    def _augmented(self, batch: RawBatch, inputs: dict[str, Tensor], options: dict[str, Any], generator: torch.Generator) -> list:
        config = self.config
        policy = options.get("policy", config.augment_policy)
        if policy not in AUGMENT_POLICIES:
            raise ValueError(f"text augmentation policy {policy!r} unknown; text policies: {list(AUGMENT_POLICIES)}")
        if policy == "pair":
            return self._pair_views(batch)
        num_views = options.get("num_views", 2)
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be a positive int, got {num_views!r}")
        if policy == "dropout":
            return [dict(inputs) for _ in range(num_views)]
        ids, attention = inputs["input_ids"], inputs["attention_mask"]
        tables = self._tables(ids.device)
        content = augment.content_mask(ids, attention, tables["special"])
        if policy == "cutoff":
            return [
                {"input_ids": ids, "attention_mask": augment.token_cutoff(
                    attention, content, generator, ratio=options.get("cutoff_ratio", config.cutoff_ratio),
                    mode=options.get("cutoff_mode", config.cutoff_mode))}
                for _ in range(num_views)
            ]
        words = augment.word_index(ids, content, tables["word_starts"])
        views = []
        for _ in range(num_views):
            if policy == "delete":
                new_ids, new_attention = augment.delete_words(
                    ids, attention, content, words, generator,
                    probability=options.get("delete_probability", config.delete_probability),
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            else:  # swap
                new_ids = augment.swap_words(ids, content, words, generator, swaps=options.get("swap_count", config.swap_count))
                new_attention = attention
            views.append({"input_ids": new_ids, "attention_mask": new_attention})
        return views

    def _pair_views(self, batch: RawBatch) -> list:
        if "pair_input_ids" not in batch:
            raise ValueError("the 'pair' policy needs a text_pair column (DataConfig.columns={'text_pair': ...})")
        views = [
            {"input_ids": batch[prefix + "input_ids"], "attention_mask": batch[prefix + "attention_mask"]}
            for prefix in ("", "pair_", "negative_")
            if prefix + "input_ids" in batch
        ]
        return views

    # ------------------------------------------------------------------ encoders

    def build_encoder(self, config: EncoderConfig) -> TextEncoder:
        """A BERT/RoBERTa preset sized to the tokenizer, or pretrained weights from
        ``config.name_or_path``. Pretrained weights bring their own tokenizer: with
        ``tokenizer='train'`` the domain adopts the one saved beside them (a multissl checkpoint,
        a Hub model), replacing any it trained, so collation and the weights agree.
        ``encoder.processor`` is the tokenizer, saved beside the model."""
        if config.name_or_path is not None and self.config.tokenizer == "train":
            logger.info("text domain: using the tokenizer of %s (tokenizer='train' defers to pretrained weights)", config.name_or_path)
            self._tokenizer = load_tokenizer(config.name_or_path)
            self._token_tables.clear()
        return build_text_encoder(config, self.tokenizer, max_length=self.config.max_length)
