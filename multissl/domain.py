"""The contract every modality adapter fulfils.

A :class:`Domain` turns dataset rows into model inputs and owns its encoders. It knows pixels,
waveforms or tokens; it knows nothing about objectives. The engine asks it for views by kind
(:class:`ViewRequest`), and passes what it returns to an objective unchanged.

Data flow for one step::

    rows --collate (CPU, DataLoader workers: decode, resize/pad, tokenize)--> RawBatch
    RawBatch --to device--> make_views(batch, request, generator) (whole batch, on device)--> Views
    Views["views"][i] / Views["inputs"] --encoder(**inputs)--> multissl.features.Features

Randomness in ``make_views`` comes only from the ``torch.Generator`` the engine passes, seeded
from (seed, step, rank), so a resumed run draws the same augmentations as an uninterrupted one.

The view kinds and their keys are the contract in :mod:`multissl.views`.
"""

from __future__ import annotations

import abc
import codecs
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import torch
from torch import Tensor

from multissl.features import Encoder
from multissl.options import PositiveInt, Predicate
from multissl.views import ViewRequest

__all__ = [
    "DataConfig",
    "ViewRequest",
    "EncoderConfig",
    "Domain",
    "BadSampleError",
    "skip_record",
    "RawBatch",
    "move_to_device",
    "resolve_role_columns",
    "Views",
]

def _is_text_encoding(name: Any) -> bool:
    try:
        codecs.lookup(name)
    except (LookupError, TypeError):
        return False
    return True


TextEncoding = Annotated[str, Predicate(_is_text_encoding, "a text encoding Python knows (e.g. 'utf-8', 'latin-1', 'cp1252')")]

RawBatch = dict[str, Any]
Views = dict[str, Any]


class BadSampleError(ValueError):
    """A sample that cannot be used; the message names the file or row and what is wrong.

    ``reason`` is a short category ("cannot decode image", "truncated audio", "empty text"), what
    a run's end-of-run summary counts skips by; the message carries the details."""

    def __init__(self, message: str = "", reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or "bad sample"

    def __reduce__(self):  # DataLoader workers and multiprocessing pickle exceptions
        return (type(self), (str(self), self.reason))


def skip_record(where: str, error: BadSampleError | str, reason: str | None = None, count: int = 1) -> dict[str, Any]:
    """One skipped sample as a domain reports it (``RawBatch["skipped_samples"]``,
    ``Domain.load_skips``): its file/row, a short reason, the full message, how many."""
    detail = str(error)
    return {"where": where, "reason": reason or getattr(error, "reason", None) or "bad sample",
            "detail": detail, "count": count}


@dataclass
class DataConfig:
    """Where the data is and how its columns map onto roles.

    path:           local folder or file (glob allowed) or a Hugging Face Hub dataset id.
    format:         ``datasets`` builder for local data ("imagefolder", "parquet", "csv", "json",
                    "text", ...) or a domain-specific one; None infers it from the path.
    subset:         Hub configuration name (``load_dataset(path, subset)``).
    split:          split to read; slices such as "train[:90%]" work as in ``datasets``.
    columns:        role -> column name, e.g. {"image": "img", "label": "label"}.
    streaming:      iterate without downloading everything (corpora larger than the disk).
    limit:          use only the first ``limit`` rows (quick runs, tests); at least 1.
    on_bad_sample:  "error" stops with a message naming the row or file; "skip" drops the
                    sample, names it once in the run's log and counts it by reason (logged as
                    ``skipped_samples``).
    encoding:       text encoding of text, csv, tsv and json files (any name Python's ``codecs``
                    knows: "utf-8", "latin-1", "cp1252", ...). A line that does not decode is
                    named (file:line) and is an error, or under ``on_bad_sample: skip`` skipped
                    and counted.
    """

    path: str
    format: str | None = None
    subset: str | None = None
    split: str = "train"
    columns: dict[str, str] = field(default_factory=dict)
    streaming: bool = False
    limit: PositiveInt | None = None
    on_bad_sample: Literal["error", "skip"] = "error"
    encoding: TextEncoding = "utf-8"

    def __post_init__(self) -> None:
        # recipes are checked by multissl.options; this also covers DataConfigs built in code
        # (``multissl probe --limit``), naming the field
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a whole number of rows, at least 1, got {self.limit!r}")
        if self.on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {self.on_bad_sample!r}")
        if not _is_text_encoding(self.encoding):
            raise ValueError(f"encoding {self.encoding!r} is not a text encoding Python knows "
                             "(e.g. 'utf-8', 'latin-1', 'cp1252')")


@dataclass
class EncoderConfig:
    """Which encoder a domain builds.

    architecture:  the domain's name for a stock family ("vit", "resnet", "convnext", "wav2vec2",
                   "bert", ...).
    size:          a preset of that family ("tiny" for tests, "small", "base", ...).
    name_or_path:  load weights and config from a local folder or Hub id instead of building from
                   the preset (``AutoModel.from_pretrained``); ``architecture``/``size`` then only
                   document intent.
    pooling:       "cls" or "mean" (masked mean over the sequence), how Features.pooled is made;
                   None: what a pretrained model was trained with (its sentence-transformers
                   pooling config), else "mean".
    overrides:     fields set on the Hugging Face config after the preset (``hidden_size``, ...).
    """

    architecture: str
    size: str = "tiny"
    name_or_path: str | None = None
    pooling: Literal["cls", "mean"] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


class Domain(abc.ABC):
    """A modality adapter: loading, collation, batched views on device, and encoders.

    Built from its own typed config (``config_class``, a dataclass of the domain's settings such as
    image size, sample rate or tokenizer), which recipes fill under ``domain.options``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    #: column roles this domain reads from ``DataConfig.columns`` (e.g. "image", "label"); when
    #: several domains read one dataset, each gets only its own roles
    roles: ClassVar[tuple[str, ...]]
    #: view kinds this domain implements (``make_views`` raises for the others, naming them)
    view_kinds: ClassVar[tuple[str, ...]]
    #: config fields that decide what an encoder sees (size, channels, normalisation, sample rate,
    #: front end, sequence length): saved beside a trained encoder and used again when it is probed
    preprocessing_fields: ClassVar[tuple[str, ...]] = ()
    #: samples the last ``load`` dropped (blank lines, undecodable lines), as :func:`skip_record`
    #: records; the engine counts and names them with the bad samples ``collate`` skips (its
    #: batch's ``"skipped_samples"``, beside the ``"skipped"`` count)
    load_skips: list[dict[str, Any]] = []

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(self.config).__name__}")

    def preprocessing(self) -> dict[str, Any]:
        """This domain's values of :attr:`preprocessing_fields` (JSON-able)."""
        values = {name: getattr(self.config, name) for name in self.preprocessing_fields}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    @classmethod
    def preprocessing_of_pretrained(cls, folder: str) -> dict[str, Any]:
        """Preprocessing options read from a plain ``transformers`` folder (its processor files),
        for encoders saved without multissl's record of them; {} when the folder says nothing."""
        return {}

    @abc.abstractmethod
    def load(self, data: DataConfig):
        """Return a ``datasets.Dataset`` (or ``IterableDataset`` when streaming) of raw rows."""

    @abc.abstractmethod
    def collate(self, rows: list[dict[str, Any]]) -> RawBatch:
        """Decode and stack rows into tensors of one shape (CPU; runs in DataLoader workers)."""

    @abc.abstractmethod
    def make_views(self, batch: RawBatch, request: ViewRequest, generator: torch.Generator) -> Views:
        """Build the requested views for a whole batch on the batch's device."""

    @abc.abstractmethod
    def build_encoder(self, config: EncoderConfig) -> Encoder:
        """A stock Hugging Face model wrapped to return Features (size preset, config or path)."""

    def check_view_kind(self, request: ViewRequest) -> None:
        if request.kind not in self.view_kinds:
            raise ValueError(
                f"domain {self.name!r} has no view kind {request.kind!r}; it offers {list(self.view_kinds)}"
            )


def resolve_role_columns(requested: dict[str, str], available: list[str] | None, content_role: str,
                         guesses: dict[str, tuple[str, ...]], source: str) -> dict[str, str]:
    """Role -> column for one dataset: what the recipe maps (``requested``), checked against the
    ``available`` columns (None: a stream that does not say; trusted as given).

    The content role (image, audio, text) must be found: a mapped column that is missing falls back
    to the role's usual names (``guesses``, the role's own name first), saying so, so a recipe
    written for one dataset reads a user's folder with the one ``data.path`` override. Other roles
    (labels, speakers, pairs) are optional for self-supervised training: a mapped column that is
    missing is dropped with a warning naming it (online probes and SupCon, which need labels, then
    say so themselves). Unmapped roles whose name is a column are taken as they are."""
    import logging

    log = logging.getLogger("multissl")
    if available is None:
        return dict(requested)
    columns: dict[str, str] = {}
    for role, column in requested.items():
        if column in available:
            columns[role] = column
        elif role == content_role:
            found = next((name for name in (role, *guesses.get(role, ())) if name in available), None)
            if found is None:
                raise ValueError(f"{source}: no {role} column: {column!r} is not among the columns {available}; "
                                 f"map one with data.columns.{role}=NAME")
            log.warning("%s: %s column %r not found; reading column %r", source, role, column, found)
            columns[role] = found
        else:
            log.warning("%s: no column %r for the %s role (columns: %s): training without it", source, column,
                        role, available)
    for role, names in guesses.items():
        if role not in requested:
            found = next((name for name in (role, *names) if name in available), None)
            if found is not None and found not in columns.values():
                columns[role] = found
    if content_role not in columns:
        raise ValueError(f"{source}: no {content_role} column among {available}; map one with "
                         f"data.columns.{content_role}=NAME")
    return columns


def move_to_device(batch: Any, device: torch.device | str) -> Any:
    """Tensors inside a collated batch (nested dicts, lists, tuples) moved to ``device``; everything
    else kept."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch
