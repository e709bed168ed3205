"""Rows of audio: where they come from, and how one clip is decoded.

Sources (``load_audio_rows``):

* a local folder or glob of audio files (wav, flac, ogg, mp3, aiff, ... anything libsndfile reads),
  listed recursively in sorted order; the folder is the ``train`` split (slices such as
  ``train[:90%]`` work as in ``datasets``). ``format="audiofolder"`` names this source explicitly.
* a parquet / csv / tsv / json(l) file whose audio column holds file paths (relative paths are taken
  from the table's folder), raw bytes, or Hugging Face ``Audio`` structs {"bytes", "path"}.
* a Hugging Face Hub dataset id (``datasets.load_dataset(path, subset, split=..., streaming=...)``).
* ``format="aligned_frames"``: a frame-label file in s3prl's ``converted_aligned_phones.txt``
  layout (``utterance-id label label ...``, one label per 10 ms frame), with the audio files named
  ``{utterance-id}.{ext}`` anywhere below the file's folder (LibriSpeech phone alignments). Rows
  carry ``frame_labels``; see :func:`read_frame_labels`.

Decoding never goes through FFmpeg: ``datasets``' ``Audio`` feature and ``audiofolder`` need
torchcodec + FFmpeg in datasets 5, so audio stays as paths or bytes (``Audio(decode=False)``) and is
decoded with ``soundfile`` and resampled with ``torchaudio.functional.resample`` at collation.

Rows leave :func:`load_audio_rows` with one column per role: ``audio`` (path, bytes or struct),
and where present ``label``, ``speaker`` (ints) and ``frame_labels`` (list of ints), and ``row_index``
(the row's position: named in errors, and the sample id memory banks use). Order of the row operations: split (slice) ->
``filename_pattern`` columns -> class names -> ``where`` filter -> string classes to ids -> roles ->
``limit`` -> ``row_index``.
"""

from __future__ import annotations

import glob
import io
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile
import torch
import torchaudio

from domains.audio.config import AudioConfig
from multissl.domain import BadSampleError, DataConfig, resolve_role_columns

__all__ = [
    "AUDIO_EXTENSIONS",
    "ROLES",
    "ROW_INDEX",
    "load_audio_rows",
    "list_audio_files",
    "read_frame_labels",
    "parse_where",
    "decode_clip",
    "describe_audio",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")
TABLE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
#: each row's position in the loaded rows (error messages, memory banks' sample ids)
ROW_INDEX = "row_index"
#: column roles a DataConfig.columns mapping may name
ROLES = ("audio", "label", "speaker", "frame_labels")
#: column numbering the rows of the loaded split (after slicing, filtering and ``limit``)
ROW_INDEX = "row_index"
_CLASS_ROLES = ("label", "speaker")
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")
_TRUNCATED_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
#: data sizes that streaming writers leave in WAV headers (not truncation)
_STREAMING_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}


# ----------------------------------------------------------------------------------------------
# Sources


def list_audio_files(path: str) -> list[str]:
    """Sorted audio files under a folder (recursive) or matching a glob."""
    if os.path.isdir(path):
        candidates = glob.glob(os.path.join(glob.escape(path), "**", "*"), recursive=True)
    else:
        candidates = glob.glob(path, recursive=True)
    return sorted(p for p in candidates if os.path.isfile(p) and p.lower().endswith(AUDIO_EXTENSIONS))


def _select_split(dataset, split: str, source: str):
    """Apply a split spec such as ``train[:90%]`` to a dataset that is one ``train`` split."""
    import datasets

    try:
        instructions = datasets.ReadInstruction.from_spec(split).to_absolute({"train": len(dataset)})
    except ValueError as error:
        raise ValueError(f"{source} is a single 'train' split; cannot read split {split!r}: {error}") from None
    indices: list[int] = []
    for instruction in instructions:
        if instruction.splitname != "train":
            raise ValueError(f"{source} is a single 'train' split; split {split!r} names {instruction.splitname!r}")
        indices.extend(range(instruction.from_, instruction.to))
    return dataset if indices == list(range(len(dataset))) else dataset.select(indices)


def _folder_rows(path: str, data: DataConfig, config: AudioConfig):
    import datasets

    files = list_audio_files(path)
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {path!r}")
    if data.streaming:
        raise ValueError(f"streaming a local folder ({path!r}) is not supported: it is read lazily already")
    root = path if os.path.isdir(path) else os.path.dirname(path.split("*")[0]) or "."
    names = [os.path.relpath(f, root).replace(os.sep, "/") for f in files]
    table: dict[str, list[Any]] = {"audio": [os.path.abspath(f) for f in files]}
    if config.filename_pattern is not None:
        table.update(_columns_from_names(names, config.filename_pattern))
    return _select_split(datasets.Dataset.from_dict(table), data.split, repr(path)), True


def _table_rows(path: str, format_name: str, data: DataConfig):
    import datasets

    options: dict[str, Any] = {"data_dir": path} if os.path.isdir(path) else {"data_files": path}
    if path.lower().endswith(".tsv"):
        options["delimiter"] = "\t"
    return datasets.load_dataset(format_name, split=data.split, streaming=data.streaming, **options)


def read_frame_labels(path: str | os.PathLike) -> dict[str, list[int]]:
    """Parse ``utterance-id label label ...`` lines (s3prl's aligned phones, 100 frames/s).

    Label ``i`` covers the 25 ms window starting at ``i * 10 ms`` (Kaldi framing, no centring):
    ``floor((num_samples - 400) / 160) + 1`` labels at 16 kHz.
    """
    labels: dict[str, list[int]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                labels[fields[0]] = [int(v) for v in fields[1:]]
            except ValueError as error:
                raise ValueError(f"{path}:{line_number}: frame labels must be integers ({error})") from None
            if not labels[fields[0]]:
                raise ValueError(f"{path}:{line_number}: utterance {fields[0]!r} has no frame labels")
    return labels


def _aligned_frame_rows(path: str, data: DataConfig):
    import datasets

    if not os.path.isfile(path):
        raise FileNotFoundError(f"format 'aligned_frames' expects the frame-label file as path; {path!r} is not a file")
    labels = read_frame_labels(path)
    by_stem = {Path(f).stem: f for f in list_audio_files(os.path.dirname(os.path.abspath(path)))}
    missing = sorted(set(labels) - set(by_stem))
    table: dict[str, list[Any]] = {"audio": [], "frame_labels": [], "speaker": [], "utterance": []}
    for utterance in sorted(set(labels) & set(by_stem)):
        table["audio"].append(os.path.abspath(by_stem[utterance]))
        table["frame_labels"].append(labels[utterance])
        table["speaker"].append(utterance.split("-")[0])
        table["utterance"].append(utterance)
    if not table["audio"]:
        raise FileNotFoundError(f"none of the {len(labels)} utterances in {path!r} has an audio file below its folder")
    # Labelled utterances without audio are common (alignments cover a whole corpus); say so, keep going.
    if missing:
        import warnings

        warnings.warn(f"{path}: {len(missing)} labelled utterances have no audio file here (e.g. {missing[0]})", stacklevel=3)
    return _select_split(datasets.Dataset.from_dict(table), data.split, repr(path))


def _source_rows(data: DataConfig, config: AudioConfig):
    """(dataset with the source's own columns, base folder for relative paths, names-already-derived)."""
    import datasets

    path = os.path.expanduser(data.path)
    format_name = data.format
    if format_name == "aligned_frames":
        return _aligned_frame_rows(path, data), None, False
    is_local = os.path.exists(path) or any(ch in path for ch in "*?[")
    if format_name == "audiofolder" or (format_name is None and is_local and (os.path.isdir(path) or list_audio_files(path))):
        dataset, derived = _folder_rows(path, data, config)
        return dataset, None, derived
    if is_local:
        if format_name is None:
            suffix = Path(path).suffix.lower()
            if suffix not in TABLE_FORMATS:
                raise ValueError(
                    f"cannot infer the format of {path!r}: expected a folder of audio files or one of "
                    f"{sorted(TABLE_FORMATS)}; set DataConfig.format"
                )
            format_name = TABLE_FORMATS[suffix]
        base = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        return _table_rows(path, format_name, data), base, False
    return datasets.load_dataset(path, data.subset, split=data.split, streaming=data.streaming), None, False


# ----------------------------------------------------------------------------------------------
# Row operations


def _typed(value: str) -> Any:
    return int(value) if value.isdigit() else value


def _match_name(name: str, pattern: re.Pattern) -> dict[str, Any]:
    match = pattern.search(name)
    if match is None:
        raise ValueError(f"audio path {name!r} does not match filename_pattern {pattern.pattern!r}")
    return {key: _typed(value) if value is not None else None for key, value in match.groupdict().items()}


def _columns_from_names(names: list[str], pattern_text: str) -> dict[str, list[Any]]:
    pattern = re.compile(pattern_text)
    columns: dict[str, list[Any]] = {key: [] for key in pattern.groupindex}
    for name in names:
        for key, value in _match_name(name, pattern).items():
            columns[key].append(value)
    return columns


def _audio_path(value: Any) -> str | None:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, dict):
        return value.get("path")
    return None


def parse_where(where: dict[str, Any]) -> Callable[..., bool]:
    """Turn {column: value | [values] | "lo..hi"} into a predicate over those columns' values."""
    tests: list[Callable[[Any], bool]] = []
    for column, allowed in where.items():
        if isinstance(allowed, str) and _RANGE.match(allowed):
            low, high = (int(v) for v in _RANGE.match(allowed).groups())
            tests.append(lambda v, low=low, high=high: isinstance(v, (int, np.integer)) and low <= v <= high)
        elif isinstance(allowed, (list, tuple, set)):
            tests.append(lambda v, allowed=set(allowed): v in allowed)
        else:
            tests.append(lambda v, allowed=allowed: v == allowed)

    def keep(*values: Any) -> bool:
        return all(test(value) for test, value in zip(tests, values))

    return keep


def _resolve_columns(data: DataConfig, available: list[str], audio_feature_columns: list[str]) -> dict[str, str]:
    unknown = sorted(set(data.columns) - set(ROLES))
    if unknown:
        raise ValueError(f"DataConfig.columns names unknown role(s) {unknown}; audio roles are {list(ROLES)}")
    guesses = {"audio": tuple(audio_feature_columns) if len(audio_feature_columns) == 1 else (),
               **{role: () for role in ROLES[1:]}}
    return resolve_role_columns(dict(data.columns), available, "audio", guesses, data.path)


def load_audio_rows(data: DataConfig, config: AudioConfig):
    """A ``datasets.Dataset`` (``IterableDataset`` when streaming) of role columns; see module doc."""
    import datasets

    dataset, base, names_derived = _source_rows(data, config)
    available = list(dataset.column_names or [])
    features = dataset.features or {}
    audio_features = [name for name, feature in features.items() if isinstance(feature, datasets.Audio)]
    columns = _resolve_columns(data, available, audio_features)
    audio_column = columns["audio"]

    # Decoded Audio features need torchcodec + FFmpeg: keep bytes and paths, decode with soundfile.
    if isinstance(features.get(audio_column), datasets.Audio) and features[audio_column].decode:
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    if base is not None:
        # Streaming maps forget the features unless told; this one keeps every column's type.
        keep = {"features": dataset.features} if isinstance(dataset, datasets.IterableDataset) and dataset.features else {}
        dataset = dataset.map(_absolute_paths(base), input_columns=[audio_column], fn_kwargs={"column": audio_column}, **keep)

    if config.filename_pattern is not None and not names_derived:
        pattern = re.compile(config.filename_pattern)

        def add_name_columns(value: Any) -> dict[str, Any]:
            path = _audio_path(value)
            if path is None:
                raise ValueError(f"filename_pattern needs audio paths; a row of column {audio_column!r} has none")
            return _match_name(path, pattern)

        dataset = dataset.map(add_name_columns, input_columns=[audio_column])
        available = list(dataset.column_names or available + list(pattern.groupindex))
        for role in ROLES[1:]:
            if role not in columns and role in pattern.groupindex:
                columns[role] = role

    class_names = _class_names(dataset, columns, config, data.streaming)

    if config.where:
        known = list(dataset.column_names or [])
        unknown = sorted(set(config.where) - set(known)) if known else []
        if unknown:
            raise ValueError(f"AudioConfig.where names unknown column(s) {unknown}; the rows have {known}")
        dataset = dataset.filter(parse_where(config.where), input_columns=list(config.where))

    for role, names in class_names.items():
        dataset = _encode_classes(dataset, columns[role], role, names)
    dataset = _to_roles(dataset, columns)
    if data.limit is not None:
        dataset = dataset.take(data.limit) if data.streaming else dataset.select(range(min(data.limit, len(dataset))))
    return _numbered(dataset)


def _numbered(dataset):
    """Add ``row_index``: each row's position in the loaded rows (the sample id memory banks use)."""
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(lambda _row, index: {ROW_INDEX: index}, with_indices=True)
    return dataset.add_column(ROW_INDEX, np.arange(len(dataset)))


def _absolute_paths(base: str):
    def fix(value: Any, column: str) -> dict[str, Any]:
        if isinstance(value, str) and not os.path.isabs(value) and "://" not in value:
            return {column: os.path.join(base, value)}
        if isinstance(value, dict) and value.get("bytes") is None and value.get("path") and not os.path.isabs(value["path"]):
            return {column: {**value, "path": os.path.join(base, value["path"])}}
        return {column: value}

    return fix


def _class_names(dataset, columns: dict[str, str], config: AudioConfig, streaming: bool) -> dict[str, list[str]]:
    """role -> ordered names, for each label/speaker column that holds strings."""
    import datasets

    unknown = sorted(set(config.class_names) - set(_CLASS_ROLES))
    if unknown:
        raise ValueError(f"AudioConfig.class_names names unknown role(s) {unknown}; roles with classes: {list(_CLASS_ROLES)}")
    names: dict[str, list[str]] = {}
    features = dataset.features or {}
    for role in _CLASS_ROLES:
        if role not in columns:
            continue
        feature = features.get(columns[role])
        if isinstance(feature, datasets.ClassLabel):
            continue
        if role in config.class_names:
            names[role] = [str(n) for n in config.class_names[role]]
        elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            if streaming:
                raise ValueError(
                    f"column {columns[role]!r} ({role}) holds strings and the data is streamed: "
                    f"set AudioConfig.class_names[{role!r}] to fix the class ids"
                )
            names[role] = sorted(set(dataset[columns[role]]))
    return names


def _encode_classes(dataset, column: str, role: str, names: list[str]):
    index = {name: i for i, name in enumerate(names)}

    def encode(value: Any) -> dict[str, Any]:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return {column: int(value)}
        if str(value) not in index:
            raise ValueError(f"{role} {value!r} in column {column!r} is not one of the class names {names}")
        return {column: index[str(value)]}

    import datasets

    if isinstance(dataset, datasets.Dataset):
        encoded = dataset.map(encode, input_columns=[column])
        return encoded.cast_column(column, datasets.ClassLabel(names=names))
    return dataset.map(encode, input_columns=[column])


def _to_roles(dataset, columns: dict[str, str]):
    """Keep only the role columns, named by role; a column that serves two roles is copied."""
    sources = list(dict.fromkeys(columns.values()))
    dataset = dataset.select_columns(sources)
    first_role: dict[str, str] = {}
    copies: dict[str, str] = {}
    for role, column in columns.items():
        if column in first_role:
            copies[role] = first_role[column]
        else:
            first_role[column] = role
    renames = {column: role for column, role in first_role.items() if column != role}
    if renames:
        dataset = dataset.rename_columns(renames)
    if copies:
        dataset = dataset.map(lambda row: {role: row[source] for role, source in copies.items()})
    return dataset


# ----------------------------------------------------------------------------------------------
# One clip


def describe_audio(value: Any) -> str:
    """How an error message names a clip: its path, or what the in-memory value is."""
    path = _audio_path(value)
    if path:
        return path
    if isinstance(value, dict) and value.get("bytes") is not None:
        return f"<audio bytes, {len(value['bytes'])} bytes, no path>"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<audio bytes, {len(value)} bytes, no path>"
    return f"<audio value of type {type(value).__name__}>"


def _read(value: Any, name: str) -> tuple[np.ndarray, int]:
    """(samples [N, C] float32, sample rate) from a path, bytes, an Audio struct or a decoded dict."""
    if value is None:
        raise BadSampleError(f"{name}: the row has no audio (missing or null audio column)", reason="missing audio")
    if isinstance(value, dict) and "array" in value:
        array = np.asarray(value["array"], dtype=np.float32)
        rate = value.get("sampling_rate")
        if rate is None:
            raise BadSampleError(f"{name}: decoded audio dict has an 'array' but no 'sampling_rate'", reason="missing sample rate")
        return (array[:, None] if array.ndim == 1 else array.T), int(rate)
    if isinstance(value, dict):
        data = value.get("bytes")
        value = data if data is not None else value.get("path")
        if value is None:
            raise BadSampleError(f"{name}: audio struct has neither bytes nor path", reason="missing audio")
    source = io.BytesIO(bytes(value)) if isinstance(value, (bytes, bytearray, memoryview)) else os.fspath(value)
    if isinstance(source, str) and not os.path.isfile(source):
        raise BadSampleError(f"{name}: file not found", reason="file not found")
    try:
        with soundfile.SoundFile(source) as handle:
            declared = handle.frames
            samples = handle.read(dtype="float32", always_2d=True)
            rate, log = handle.samplerate, handle.extra_info
    except FileNotFoundError:
        raise BadSampleError(f"{name}: file not found", reason="file not found") from None
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise BadSampleError(f"{name}: cannot decode audio ({error})", reason="cannot decode audio") from None
    # libsndfile reads a WAV whose data chunk is cut short without an error; its log says so.
    cut = _TRUNCATED_CHUNK.search(log)
    if cut and int(cut.group(1)) not in _STREAMING_SIZES and int(cut.group(2)) < int(cut.group(1)):
        raise BadSampleError(f"{name}: truncated file: header declares {cut.group(1)} bytes of audio data, file holds {cut.group(2)}", reason="truncated audio")
    if len(samples) < declared:
        raise BadSampleError(f"{name}: truncated file: header declares {declared} frames, decoded {len(samples)}", reason="truncated audio")
    return samples, int(rate)


def decode_clip(value: Any, sample_rate: int, max_samples: int | None = None) -> torch.Tensor:
    """Decode one clip to a mono float32 waveform at ``sample_rate``, at most ``max_samples`` long.

    Channels are averaged. Raises :class:`BadSampleError` naming the clip when it cannot be decoded,
    has no samples, or holds NaN/inf.
    """
    name = describe_audio(value)
    samples, rate = _read(value, name)
    if rate <= 0:
        raise BadSampleError(f"{name}: invalid sample rate {rate}", reason="invalid sample rate")
    if samples.size == 0 or samples.shape[0] == 0:
        raise BadSampleError(f"{name}: audio has no samples (empty or zero-length)", reason="empty audio")
    if not np.isfinite(samples).all():
        raise BadSampleError(f"{name}: audio contains NaN or infinite samples", reason="non-finite audio samples")
    mono = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32)))
    if max_samples is not None:
        # Trim before resampling (cheaper); one extra source sample keeps the tail of the cut exact enough.
        mono = mono[: math.ceil(max_samples * rate / sample_rate) + 1]
    if rate != sample_rate:
        mono = torchaudio.functional.resample(mono, rate, sample_rate)
    if max_samples is not None:
        mono = mono[:max_samples]
    return mono.contiguous()
