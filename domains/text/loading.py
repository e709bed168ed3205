"""Rows for the text domain.

``load_rows`` reads any table ``datasets`` reads (plain text one example per line, csv, tsv, json
lines, parquet, a folder of them, or a Hub id), and ``prepare_rows`` keeps the mapped columns
under their role names, numbers the rows so errors can name them, applies the blank-line policy
of plain text and encodes string labels. Two benchmark layouts that no ``datasets`` builder parses as they are
get their own documented readers: :func:`load_stsb` (STS Benchmark) and :func:`load_senteval`
(the SentEval transfer tasks).

Roles a text dataset may map (``DataConfig.columns``, role -> column; prepared rows carry them
under the role names):
    text           the sentence (required)
    text_pair      its positive partner (supervised SimCSE, STS pairs, MRPC)
    hard_negative  a hard negative for ``text`` (supervised SimCSE, Gao et al. 2021)
    label          a class id (string labels are encoded, see ``prepare_rows``)
    score          a real-valued target (STS similarity 0-5)
"""

from __future__ import annotations

import atexit
import codecs
import csv
import dataclasses
import glob
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from multissl.domain import BadSampleError, DataConfig, resolve_role_columns

__all__ = [
    "TEXT_ROLES",
    "ROW_INDEX",
    "SENTEVAL_TASKS",
    "infer_format",
    "load_rows",
    "default_columns",
    "prepare_rows",
    "load_stsb",
    "load_senteval",
]

logger = logging.getLogger(__name__)

TEXT_ROLES = ("text", "text_pair", "hard_negative", "label", "score")
#: column added by ``prepare_rows``: the row's position in the loaded split, named in errors
ROW_INDEX = "row_index"

_FORMAT_OF_SUFFIX = {".txt": "text", ".text": "text", ".csv": "csv", ".tsv": "tsv", ".json": "json",
                     ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}


# ----------------------------------------------------------------------------------------------
# any table datasets reads


def infer_format(path: str) -> str | None:
    """The reader for a local ``path`` (file, folder or glob), or None for a Hub id / a folder that
    ``datasets`` infers itself. STS-B files (``sts-*.csv``) and SentEval task folders are
    recognised by name, since the csv reader would mangle them."""
    local = Path(path)
    if local.is_dir():
        return "senteval" if _senteval_task_of_folder(local) is not None else None
    if local.is_file() and re.fullmatch(r"sts-\w+\.csv", local.name):
        return "stsb"
    # a file name with a known suffix is local even when missing (load_rows then says so)
    return _FORMAT_OF_SUFFIX.get(local.suffix.lower())


def load_rows(data: DataConfig, *, tsv_header: bool = False,
              skipped: list[dict[str, Any]] | None = None) -> datasets.Dataset | datasets.IterableDataset:
    """The split ``data.split`` of ``data.path`` with its original columns (no limit applied).

    Formats: ``datasets`` builders ("text": one example per line, blank lines kept; "csv";
    "json" (json lines); "parquet"; ...), "tsv" (tab-separated, no quoting: a ``"`` is text;
    columns named "0", "1", ... unless ``tsv_header``), "stsb" and "senteval" (below). Empty csv/tsv
    cells read as None; "NA" or "null" stay text.

    Text, csv, tsv and json files are read in ``data.encoding``. A line that does not decode
    raises :class:`BadSampleError` naming the file and line, or, under ``on_bad_sample: skip``,
    is left out (the rest of the file loads) and appended to ``skipped`` as a skip record.
    """
    try:
        return _load_rows(data, tsv_header)
    except Exception as error:  # noqa: BLE001 - only undecodable text is handled; the rest re-raised
        if _undecodable(error) is None or not _is_local(data.path):
            raise
        return _load_decodable_lines(data, tsv_header, error, skipped)


def _load_rows(data: DataConfig, tsv_header: bool) -> datasets.Dataset | datasets.IterableDataset:
    fmt = data.format or infer_format(data.path)
    if fmt == "stsb":
        _no_streaming(data, fmt)
        return load_stsb(data.path, split=data.split)
    if fmt == "senteval":
        _no_streaming(data, fmt)
        return load_senteval(data.path, task=data.subset, split=data.split)
    if data.streaming and "[" in data.split:
        raise ValueError(f"split {data.split!r}: slices need streaming=False (datasets streams whole splits)")
    options: dict[str, Any] = {"split": data.split, "streaming": data.streaming}
    if fmt in _ENCODED_FORMATS:
        options["encoding"] = data.encoding
    if fmt in ("csv", "tsv"):
        options.update(keep_default_na=False, na_values=[""])
    if fmt == "tsv":
        fmt = "csv"
        options.update(sep="\t", quoting=csv.QUOTE_NONE, header=0 if tsv_header else None)
    local = Path(data.path)
    if fmt is None:  # a Hub id, or a folder whose files datasets sorts into splits itself
        return datasets.load_dataset(data.path, data.subset, **options)
    if local.is_dir():
        return datasets.load_dataset(fmt, data_dir=data.path, **options)
    if not local.exists() and not glob.has_magic(data.path):
        raise FileNotFoundError(f"no file {data.path!r} to read as {fmt!r}")
    return datasets.load_dataset(fmt, data_files=data.path, **options)


_ENCODED_FORMATS = ("text", "csv", "tsv", "json")


def _undecodable(error: BaseException | None) -> UnicodeDecodeError | None:
    """The UnicodeDecodeError behind ``error`` (``datasets`` wraps it in DatasetGenerationError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UnicodeDecodeError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _is_local(path: str) -> bool:
    return os.path.exists(path) or glob.has_magic(path)


def _local_files(path: str) -> list[Path]:
    if os.path.isdir(path):
        return sorted(p for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith("."))
    return sorted(Path(p) for p in glob.glob(path, recursive=True) if os.path.isfile(p))


def undecodable_lines(path: str | os.PathLike, encoding: str) -> list[tuple[int, str]]:
    """(line number from 1, what is wrong) for each line of ``path`` that does not decode in
    ``encoding``; lines end at ``\n`` (for UTF-16/32 the whole file is one unit, numbered 0)."""
    raw = Path(path).read_bytes()
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        try:
            raw.decode(encoding)
        except UnicodeDecodeError as error:
            return [(0, f"byte {error.start}: {error.reason}")]
        return []
    try:
        raw.decode(encoding)
        return []
    except UnicodeDecodeError:
        pass
    bad = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError as error:
            bad.append((number, f"byte 0x{line[error.start]:02x} at column {error.start + 1}: {error.reason}"))
    return bad


def _load_decodable_lines(data: DataConfig, tsv_header: bool, error: BaseException,
                          skipped: list[dict[str, Any]] | None) -> datasets.Dataset | datasets.IterableDataset:
    """After ``datasets`` met an undecodable line: name it (error policy), or load copies of the
    files without the undecodable lines (skip policy), recording each one."""
    files = _local_files(data.path)
    bad = {file: lines for file in files if (lines := undecodable_lines(file, data.encoding))}
    if not bad:
        raise BadSampleError(f"{data.path}: text does not decode as {data.encoding} ({_undecodable(error)}); set "
                             "data.encoding to the files' encoding", reason="undecodable text") from error
    total = sum(len(lines) for lines in bad.values())
    first_file, ((first_line, what), *_) = next(iter(bad.items()))
    if data.on_bad_sample != "skip" or first_line == 0:
        raise BadSampleError(
            f"{first_file}:{first_line}: not valid {data.encoding} text ({what}); {total} such line(s) in "
            f"{len(bad)} file(s); set data.encoding to the file's encoding (e.g. latin-1; multissl probe: "
            "--encoding), or skip these lines with data.on_bad_sample=skip (--on-bad-sample skip)",
            reason="undecodable text") from None
    folder = Path(tempfile.mkdtemp(prefix="multissl-decodable-"))
    atexit.register(shutil.rmtree, folder, True)
    root = Path(data.path) if os.path.isdir(data.path) else None
    copies = []
    for file in files:
        copy = folder / (file.relative_to(root) if root is not None else Path(str(len(copies))) / file.name)
        copy.parent.mkdir(parents=True, exist_ok=True)
        drop = {number for number, _ in bad.get(file, [])}
        lines = file.read_bytes().split(b"\n")
        copy.write_bytes(b"\n".join(line for number, line in enumerate(lines, start=1) if number not in drop))
        copies.append(str(copy))
    for file, lines in bad.items():
        for number, what in lines:
            record = {"where": f"{file}:{number}", "reason": "undecodable text",
                      "detail": f"not valid {data.encoding} text ({what})", "count": 1}
            if skipped is not None:
                skipped.append(record)
    logger.warning("%s: skipped %d line(s) that are not valid %s text, the first %s:%d (on_bad_sample: skip)",
                   data.path, total, data.encoding, first_file, first_line)
    cleaned = dataclasses.replace(data, path=str(folder) if root is not None else
                                  (copies[0] if len(copies) == 1 else str(folder / "*" / "*")))
    if root is None and data.format is None:
        cleaned = dataclasses.replace(cleaned, format=infer_format(data.path))
    return _load_rows(cleaned, tsv_header)


def _no_streaming(data: DataConfig, fmt: str) -> None:
    if data.streaming:
        raise ValueError(f"format {fmt!r} reads a small benchmark file into memory; set streaming=False")


def default_columns(fmt: str | None, column_names: list[str]) -> dict[str, str]:
    """Role -> column used where ``DataConfig.columns`` says nothing: every role that is a column
    name maps to itself, STS-B maps its sentence and score columns."""
    if fmt == "stsb":
        return {"text": "sentence1", "text_pair": "sentence2", "score": "score"}
    return {role: role for role in TEXT_ROLES if role in column_names}


def prepare_rows(
    dataset: datasets.Dataset | datasets.IterableDataset,
    columns: dict[str, str],
    *,
    plain_text: bool = False,
    blank_lines: str = "skip",
    label_names: list[str] | None = None,
    limit: int | None = None,
    source: str = "",
    blank_rows: list[int] | None = None,
) -> tuple[datasets.Dataset | datasets.IterableDataset, dict[str, Any]]:
    """Keep the mapped columns under their role names (plus ``row_index``, the row's position in
    the split, which errors name), drop blank lines of plain text, encode string labels, keep
    the first ``limit`` rows. Returns the rows and the load statistics {"rows",
    "blank_lines_skipped"} (None where a stream cannot know them yet); ``blank_rows``, when
    given, receives the row indexes of the blank lines dropped."""
    unknown = sorted(set(columns) - set(TEXT_ROLES))
    if unknown:
        raise ValueError(f"unknown text role(s) {unknown} in columns; roles: {list(TEXT_ROLES)}")
    available = dataset.column_names  # None for a stream that does not declare its features
    if "text" not in columns and available is None:
        raise ValueError(f"{source}: no text column; map one with columns={{'text': ...}} (columns: {available})")
    columns = resolve_role_columns(columns, available, "text", {"text": ("sentence", "caption", "content")}, source)
    if len(set(columns.values())) < len(columns):
        raise ValueError(f"{source}: one column mapped to several roles: {columns}")
    streaming = isinstance(dataset, datasets.IterableDataset)

    if available is not None and ROW_INDEX in available:
        pass  # numbered upstream: keep that numbering
    elif streaming:
        dataset = dataset.map(lambda _row, index: {ROW_INDEX: index}, with_indices=True)
    else:
        dataset = dataset.add_column(ROW_INDEX, np.arange(len(dataset)))
    if available is not None:
        dataset = dataset.select_columns([*columns.values(), ROW_INDEX])
    dataset = dataset.rename_columns({column: role for role, column in columns.items() if column != role})

    stats: dict[str, Any] = {"blank_lines_skipped": 0}
    if plain_text:
        dataset, stats["blank_lines_skipped"] = _apply_blank_line_policy(dataset, "text", blank_lines, source, blank_rows)
    if "label" in columns:
        dataset = _encode_string_labels(dataset, "label", label_names, source)
    if limit is not None:
        dataset = dataset.take(limit) if streaming else dataset.select(range(min(limit, len(dataset))))
    stats["rows"] = None if streaming else len(dataset)
    return dataset, stats


def _is_blank(texts: list[Any]) -> list[bool]:
    return [isinstance(text, str) and not text.strip() for text in texts]


def _apply_blank_line_policy(dataset, column: str, policy: str, source: str, rows: list[int] | None = None):
    """Blank lines in plain text separate paragraphs: skip and count them (their row indexes
    appended to ``rows``), or reject the file."""
    if isinstance(dataset, datasets.IterableDataset):
        if policy == "error":  # a stream is checked row by row, in collation
            return dataset, None
        logger.info("%s: blank lines are skipped as the stream is read (count unknown in advance)", source)
        return dataset.filter(lambda texts: [not blank for blank in _is_blank(texts)], input_columns=[column], batched=True), None
    blank = dataset.filter(_is_blank, input_columns=[column], batched=True)
    if len(blank) == 0:
        return dataset, 0
    if policy == "error":
        first = blank[:5][ROW_INDEX]
        raise BadSampleError(f"{source}: {len(blank)} blank line(s), the first at row(s) {first} (blank_lines='error')")
    kept = dataset.filter(lambda texts: [not b for b in _is_blank(texts)], input_columns=[column], batched=True)
    logger.info("%s: skipped %d blank lines of %d", source, len(blank), len(dataset))
    if rows is not None:
        rows.extend(int(i) for i in blank[ROW_INDEX])
    return kept, len(blank)


def _encode_string_labels(dataset, column: str, label_names: list[str] | None, source: str):
    """String labels become class ids: ``label_names`` order, or the sorted unique values."""
    feature = (dataset.features or {}).get(column)
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        return dataset
    if label_names is None:
        if isinstance(dataset, datasets.IterableDataset):
            raise ValueError(f"{source}: string labels in a stream need TextConfig.label_names (the classes in order)")
        names = sorted(name for name in dataset.unique(column) if name is not None)
        logger.info("%s: string labels encoded as the sorted unique values %s", source, names)
    else:
        names = list(label_names)
        if not isinstance(dataset, datasets.IterableDataset):
            unknown = sorted(set(dataset.unique(column)) - set(names) - {None})
            if unknown:
                raise ValueError(f"{source}: label values {unknown[:10]} are not in label_names {names}")
    return dataset.cast_column(column, datasets.ClassLabel(names=names))


# ----------------------------------------------------------------------------------------------
# benchmark layouts


def _read_lines(path: Path, encoding: str) -> list[str]:
    # split on "\n" only: str.splitlines would also break sentences at \x0b, \x1c, \u2028, ...
    lines = path.read_text(encoding=encoding).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _select_split(splits: dict[str, datasets.Dataset], spec: str, source: str) -> datasets.Dataset:
    """``spec`` ("train", "test[:10%]", "train+validation", ...) over in-memory splits, with
    ``datasets``' own split grammar."""
    try:
        instructions = datasets.ReadInstruction.from_spec(spec).to_absolute({name: len(d) for name, d in splits.items()})
    except ValueError as error:
        raise ValueError(f"{source}: split {spec!r}: {error} (splits: {list(splits)})") from None
    parts = [splits[part.splitname].select(range(part.from_, part.to)) for part in instructions]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


STSB_FILES = {"train": "sts-train.csv", "validation": "sts-dev.csv", "test": "sts-test.csv"}
STSB_FEATURES = datasets.Features({
    "genre": datasets.Value("string"), "file": datasets.Value("string"), "year": datasets.Value("string"),
    "id": datasets.Value("string"), "score": datasets.Value("float32"),
    "sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
})


def load_stsb(path: str | Path, split: str = "train") -> datasets.Dataset:
    """STS Benchmark (Cer et al. 2017) in its original layout: tab-separated genre, file, year, id,
    score (0-5), sentence1, sentence2, then on some lines extra fields (ignored), with no quoting
    (sentences contain ``"``), so neither a csv reader nor pandas parse it as is.

    ``path``: the folder with ``sts-{train,dev,test}.csv`` (splits "train", "validation",
    "test", those present) or one such file (split "train", as ``datasets`` names a single file).
    Returns columns genre, file, year, id, score (float32), sentence1, sentence2. A line with
    fewer than 7 fields or a score that is no number raises ``BadSampleError`` naming file:line.
    """
    path = Path(path)
    files = {name: path / file for name, file in STSB_FILES.items() if (path / file).is_file()} if path.is_dir() else {"train": path}
    if not files or not all(file.is_file() for file in files.values()):
        raise FileNotFoundError(f"no STS-B files at {path} (expected {list(STSB_FILES.values())})")
    splits = {}
    for name, file in files.items():
        columns: dict[str, list] = {key: [] for key in STSB_FEATURES}
        for number, line in enumerate(_read_lines(file, "utf-8"), start=1):
            fields = line.split("\t")
            if len(fields) < 7:
                raise BadSampleError(f"{file}:{number}: {len(fields)} tab-separated fields, STS-B lines have at least 7")
            try:
                score = float(fields[4])
            except ValueError:
                raise BadSampleError(f"{file}:{number}: score {fields[4]!r} is not a number") from None
            for key, value in zip(STSB_FEATURES, fields[:7]):
                columns[key].append(value)
            columns["score"][-1] = score
        splits[name] = datasets.Dataset.from_dict(columns, features=STSB_FEATURES)
    return _select_split(splits, split, str(path))


@dataclass(frozen=True)
class SentEvalTask:
    """Where a SentEval task lies and how its lines read (as SentEval's own loaders read them)."""

    folder: str  # under the senteval root
    files: dict[str, Any]  # split -> file, or split -> {file: class id} for one file per class
    parse: Callable[[str], tuple[int | str, list[str]]] | None  # line -> (label, texts); None: label from the file
    class_names: tuple[str, ...]
    encoding: str
    header: bool = False


def _tab_label_last(line: str):
    text, label = line.rsplit("\t", 1)
    return int(label), [text]


def _space_label_first(line: str):
    label, text = line.split(" ", 1)
    return int(label), [text]


def _trec(line: str):
    # "NUM:dist How far is it ..." -> coarse class NUM (SentEval's 6-way TREC)
    tag, text = line.split(" ", 1)
    return tag.split(":", 1)[0], [text]


def _mrpc(line: str):
    label, _id1, _id2, first, second = line.split("\t")
    return int(label), [first, second]


_BINARY = ("negative", "positive")
SENTEVAL_TASKS: dict[str, SentEvalTask] = {
    "MR": SentEvalTask("MR", {"train": {"rt-polarity.neg": 0, "rt-polarity.pos": 1}}, None, _BINARY, "latin-1"),
    "CR": SentEvalTask("CR", {"train": {"custrev.neg": 0, "custrev.pos": 1}}, None, _BINARY, "latin-1"),
    "SUBJ": SentEvalTask("SUBJ", {"train": {"subj.subjective": 0, "subj.objective": 1}}, None, ("subjective", "objective"), "latin-1"),
    "MPQA": SentEvalTask("MPQA", {"train": {"mpqa.neg": 0, "mpqa.pos": 1}}, None, _BINARY, "latin-1"),
    "SST2": SentEvalTask("SST/binary", {"train": "sentiment-train", "validation": "sentiment-dev", "test": "sentiment-test"},
                         _tab_label_last, _BINARY, "utf-8"),
    "SST5": SentEvalTask("SST/fine", {"train": "sentiment-train", "validation": "sentiment-dev", "test": "sentiment-test"},
                         _space_label_first, ("very negative", "negative", "neutral", "positive", "very positive"), "utf-8"),
    "TREC": SentEvalTask("TREC", {"train": "train_5500.label", "test": "TREC_10.label"}, _trec,
                         ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"), "latin-1"),
    "MRPC": SentEvalTask("MRPC", {"train": "msr_paraphrase_train.txt", "test": "msr_paraphrase_test.txt"}, _mrpc,
                         ("not paraphrase", "paraphrase"), "utf-8-sig", header=True),
}


def _senteval_task_of_folder(folder: Path) -> str | None:
    """The task whose folder ``folder`` is (``.../TREC``, ``.../SST/binary``), or None."""
    parts = folder.resolve().parts
    for name, task in SENTEVAL_TASKS.items():
        task_parts = tuple(task.folder.split("/"))
        if parts[-len(task_parts):] == task_parts:
            return name
    return None


def load_senteval(path: str | Path, task: str | None = None, split: str = "train") -> datasets.Dataset:
    """A SentEval transfer task (Conneau and Kiela 2018) in SentEval's own file layout.

    ``path``: the task's folder (``senteval/TREC``, ``senteval/SST/binary``; the task is read off
    its name) or the SentEval root with ``task`` one of :data:`SENTEVAL_TASKS` (MR, CR, SUBJ,
    MPQA, SST2, SST5, TREC, MRPC). Encodings as SentEval reads them: latin-1 for MR, CR, SUBJ,
    MPQA and TREC (TREC's training file is not UTF-8), UTF-8 for SST, UTF-8 with a byte-order
    mark for MRPC (header line skipped).

    Splits: "train" only for MR, CR, SUBJ, MPQA (SentEval cross-validates them; rows are ordered
    by class: shuffle before taking a slice); "train"/"validation"/"test" for SST2/SST5;
    "train"/"test" for TREC and MRPC. Slices ("train[:10%]") as in ``datasets``.

    Returns columns text (and text_pair for MRPC) and label (``ClassLabel`` with the task's
    class names; TREC's 6 coarse classes). Blank lines (CR and MPQA have a few) are skipped and
    counted in the log; a line that does not parse raises ``BadSampleError`` naming file:line.
    """
    path = Path(path)
    name = task if task is not None else _senteval_task_of_folder(path)
    if name not in SENTEVAL_TASKS:
        raise ValueError(f"SentEval task {name!r} (from {path}) unknown; tasks: {list(SENTEVAL_TASKS)}")
    spec = SENTEVAL_TASKS[name]
    folder = path if _senteval_task_of_folder(path) == name else path / spec.folder
    features = {"text": datasets.Value("string")}
    if name == "MRPC":
        features["text_pair"] = datasets.Value("string")
    features["label"] = datasets.ClassLabel(names=list(spec.class_names))
    features = datasets.Features(features)
    text_columns = [column for column in features if column != "label"]

    splits = {}
    for split_name, files in spec.files.items():
        columns: dict[str, list] = {column: [] for column in features}
        blank = 0
        for file, file_label in (files.items() if isinstance(files, dict) else [(files, None)]):
            file_path = folder / file
            if not file_path.is_file():
                raise FileNotFoundError(f"SentEval {name}: missing {file_path}")
            lines = _read_lines(file_path, spec.encoding)
            for number, line in enumerate(lines[1:] if spec.header else lines, start=2 if spec.header else 1):
                if not line.strip():
                    blank += 1
                    continue
                try:
                    label, texts = (file_label, [line]) if spec.parse is None else spec.parse(line)
                    label = features["label"].str2int(label) if isinstance(label, str) else label
                    if not 0 <= label < len(spec.class_names):
                        raise ValueError(f"label {label} outside 0..{len(spec.class_names) - 1}")
                except ValueError as error:
                    raise BadSampleError(f"{file_path}:{number}: cannot read SentEval {name} line ({error}): {line[:80]!r}") from None
                for column, text in zip(text_columns, texts):
                    columns[column].append(text.strip())
                columns["label"].append(label)
        if blank:
            logger.info("SentEval %s %s: skipped %d blank lines", name, split_name, blank)
        splits[split_name] = datasets.Dataset.from_dict(columns, features=features)
    return _select_split(splits, split, f"SentEval {name}")
