"""Image data: loading through ``datasets`` (plus two offline built-ins) and collation.

Loading returns a ``datasets.Dataset`` (``IterableDataset`` when streaming) whose rows hold:

- ``image``: the undecoded image (``{"bytes", "path"}`` of a ``datasets.Image(decode=False)``
  column, a file path, or a pixel array), so decoding errors surface in collate, where the row is
  known, instead of deep inside ``datasets``;
- ``label``: an integer class id, where the data has a label column;
- ``row_index``: the row's position in the loaded split (after slicing), named in error messages.

Built-ins that need no network: ``path="sklearn:digits"`` (scikit-learn's 1,797 8x8 digits, values
0-16 scaled to 0-255) and the IDX format of MNIST (``format="idx"``, inferred from ``*-ubyte[.gz]``
names or a folder holding them).

Collate decodes every row with Pillow, converts any mode to the configured channels (16-bit
grayscale is scaled by 1/257; transparent pixels are composited over white), and resizes to
``image_size`` with torchvision's antialiased resize on uint8: "center_crop" scales the shorter
side to ``image_size`` then crops the centre (``int((side - size) / 2)`` offset), "stretch" scales
both sides. That is exactly what the saved ``ViTImageProcessor`` does, so embeddings computed
elsewhere from the raw files match.
"""

from __future__ import annotations

import glob
import gzip
import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from PIL import Image
from torch import Tensor

from multissl.domain import BadSampleError, DataConfig, resolve_role_columns, skip_record

from .config import ImageConfig

__all__ = ["load_image_dataset", "collate_images", "decode_image", "resize_square", "read_idx", "image_root_of",
           "IMAGE", "LABEL", "ROW_INDEX", "ROLES"]

logger = logging.getLogger(__name__)

IMAGE, LABEL, ROW_INDEX = "image", "label", "row_index"
ROLES = (IMAGE, LABEL)
_IMAGE_NAMES = ("image", "img", "pixel_values", "picture", "photo")
_LABEL_NAMES = ("label", "labels", "fine_label", "class")
_SUFFIX_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow",
                   ".jpg": "imagefolder", ".jpeg": "imagefolder", ".png": "imagefolder", ".bmp": "imagefolder",
                   ".gif": "imagefolder", ".webp": "imagefolder", ".tif": "imagefolder", ".tiff": "imagefolder"}
_INTERPOLATION = {"nearest": tvF.InterpolationMode.NEAREST, "bilinear": tvF.InterpolationMode.BILINEAR,
                  "bicubic": tvF.InterpolationMode.BICUBIC}
DIGITS = "sklearn:digits"


# ----------------------------------------------------------------------------------------------- loading


def load_image_dataset(data: DataConfig):
    """Load ``data`` (see module doc); columns renamed to ``image`` / ``label`` plus ``row_index``."""
    builtin = data.path == DIGITS or _is_idx(data)
    if data.path == DIGITS:
        dataset = _slice(_digits_dataset(), data.split, available=("train",))
    elif builtin:
        dataset = _idx_dataset(data)
    else:
        dataset = _load_with_datasets(data)
    if data.limit is not None:
        dataset = dataset.take(data.limit) if isinstance(dataset, datasets.IterableDataset) else \
            dataset.select(range(min(data.limit, len(dataset))))
    dataset = _canonical_columns(dataset, data.columns, data.path)
    if builtin and data.streaming:
        # datasets cannot stream a numpy-formatted dataset; rows then hold nested lists (read as arrays)
        dataset = dataset.with_format(None).to_iterable_dataset()
    return dataset


def _load_with_datasets(data: DataConfig):
    options: dict[str, Any] = dict(split=data.split, streaming=data.streaming)
    path = data.path
    is_pattern = glob.has_magic(path)
    if is_pattern and not glob.glob(path):
        raise FileNotFoundError(f"no file matches {path!r}")
    if os.path.isdir(path):
        if data.format is not None:
            return datasets.load_dataset(data.format, data_dir=path, **options)
        return datasets.load_dataset(path, data.subset, **options)  # datasets infers imagefolder, parquet, ...
    if is_pattern or os.path.isfile(path):
        file_format = data.format or _SUFFIX_FORMATS.get(Path(path).suffix.lower())
        if file_format is None:
            raise ValueError(f"cannot infer the format of {path!r}; set DataConfig.format "
                             f"(one of {sorted(set(_SUFFIX_FORMATS.values()) | {'idx'})})")
        return datasets.load_dataset(file_format, data_files=path, **options)
    if data.format is not None:
        raise FileNotFoundError(f"{path!r} is not a local file or folder (format {data.format!r} needs one)")
    return datasets.load_dataset(path, data.subset, **options)  # a Hugging Face Hub dataset id


def image_root_of(data: DataConfig, configured: str | None) -> str | None:
    """Folder relative image paths are read from: the configured one, else the data's own folder
    (the folder itself, or the folder of the file or of the glob's fixed part); None for Hub ids."""
    if configured is not None:
        return configured
    if os.path.isdir(data.path):
        return data.path
    if glob.has_magic(data.path):
        fixed = re.split(r"[*?\[]", data.path, maxsplit=1)[0]
        return os.path.dirname(fixed) or "."
    return (os.path.dirname(data.path) or ".") if os.path.isfile(data.path) else None


def _canonical_columns(dataset, columns: dict[str, str], source: str):
    unknown = sorted(set(columns) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown column role(s) {unknown} for the image domain; roles: {list(ROLES)}")
    names = dataset.column_names
    features = dataset.features
    # columns holding images by their feature type come first among the guesses
    typed = tuple(name for name in names or () if features is not None and isinstance(features[name], datasets.Image))
    resolved = resolve_role_columns(dict(columns), names, IMAGE, {IMAGE: typed + _IMAGE_NAMES, LABEL: _LABEL_NAMES},
                                    source)
    image_column, label_column = resolved.get(IMAGE, IMAGE), resolved.get(LABEL)
    if names is not None:
        keep = [image_column] + ([label_column] if label_column else [])
        dataset = dataset.select_columns(keep)
        dataset = dataset.rename_columns({old: new for old, new in zip(keep, (IMAGE, LABEL)) if old != new})
    features = dataset.features
    if features is not None and isinstance(features.get(IMAGE), datasets.Image):
        dataset = dataset.cast_column(IMAGE, datasets.Image(decode=False))
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(lambda row, index: {ROW_INDEX: index}, with_indices=True)
    dataset = dataset.add_column(ROW_INDEX, np.arange(len(dataset)))
    if features is not None and not isinstance(features.get(IMAGE), datasets.Image):
        # pixel arrays (built-ins, Array2D columns): numpy rows instead of nested Python lists
        dataset = dataset.with_format("numpy", columns=[IMAGE], output_all_columns=True)
    return dataset


_SPLIT_SPEC = re.compile(r"^(\w+)(\[.*\])?$")


def _slice(dataset: datasets.Dataset, split: str, available: tuple[str, ...] | None) -> datasets.Dataset:
    """Apply a ``datasets``-style split slice ("train[:10%]", "test[100:200]") to a built-in set."""
    match = _SPLIT_SPEC.match(split.replace(" ", ""))
    if match is None:
        raise ValueError(f"cannot read split {split!r}; use a name with an optional slice, e.g. 'train[:90%]'")
    name = match.group(1)
    if available is not None and name not in available:
        raise ValueError(f"split {name!r} does not exist here; available splits: {list(available)}")
    instructions = datasets.ReadInstruction.from_spec(f"{name}{match.group(2) or ''}").to_absolute({name: len(dataset)})
    return dataset.select(range(instructions[0].from_, instructions[0].to))


def _digits_dataset() -> datasets.Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 17 gray levels (0-16, ink high) spread over 0-255: white digits on black, as MNIST
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    features = datasets.Features({IMAGE: datasets.Array2D((8, 8), "uint8"),
                                  LABEL: datasets.ClassLabel(names=[str(d) for d in range(10)])})
    return datasets.Dataset.from_dict({IMAGE: images, LABEL: digits.target.astype(np.int64)}, features=features)


# ------------------------------------------------------------------------------------------------ IDX

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_SPLITS = {"train": "train", "test": "t10k"}


def _is_idx(data: DataConfig) -> bool:
    if data.format is not None:
        return data.format == "idx"
    if os.path.isdir(data.path):
        return bool(glob.glob(os.path.join(data.path, "*-idx3-ubyte*")))
    return bool(re.search(r"-ubyte(\.gz)?$", data.path))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (LeCun's MNIST format, gzip or not): big-endian header, then the array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes), file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_images_file(data: DataConfig) -> str:
    """The images file to read: chosen by the split name in a folder ("train", "test"), else the path."""
    if os.path.isdir(data.path):
        name = _SPLIT_SPEC.match(data.split.replace(" ", ""))
        prefix = _IDX_SPLITS.get(name.group(1) if name else "")
        if prefix is None:
            raise ValueError(f"IDX folder {data.path}: split {data.split!r} is not one of {list(_IDX_SPLITS)}")
        pattern = os.path.join(data.path, f"{prefix}-images-idx3-ubyte*")
    else:
        pattern = data.path
    files = sorted(path for path in glob.glob(pattern) if "idx3" in os.path.basename(path) or
                   not glob.has_magic(pattern))
    if not files:
        raise FileNotFoundError(f"no IDX images file (*-images-idx3-ubyte[.gz]) matches {pattern!r}")
    if len(files) > 1:
        raise ValueError(f"{pattern!r} matches several IDX image files {files}; name one")
    return files[0]


def _idx_dataset(data: DataConfig) -> datasets.Dataset:
    images_file = _idx_images_file(data)
    images = read_idx(images_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_file}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    columns: dict[str, Any] = {IMAGE: images}
    features: dict[str, Any] = {IMAGE: datasets.Array2D(images.shape[1:], "uint8")}
    labels_file = images_file.replace("images-idx3", "labels-idx1")
    if labels_file != images_file and os.path.exists(labels_file):
        labels = read_idx(labels_file)
        if labels.shape != (len(images),):
            raise ValueError(f"{labels_file}: {labels.shape[0]} labels for {len(images)} images in {images_file}")
        columns[LABEL] = labels.astype(np.int64)
        features[LABEL] = datasets.Value("int64")
    dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    # with explicit files the split name is not checked (the files are the split); its slice applies
    return _slice(dataset, data.split, available=None)


# ---------------------------------------------------------------------------------------------- collate


def collate_images(rows: list[dict[str, Any]], config: ImageConfig, on_bad_sample: str = "error",
                   image_root: str | None = None) -> dict[str, Any]:
    """Decode and stack rows: {"images": uint8 [B, C, S, S], "labels": Long[B] (when rows have labels),
    "indices": Long[B] (each kept row's ``row_index``, when every row has one), "skipped": int,
    "skipped_samples": [skip record]}. Relative file paths are read from ``image_root``.

    A row that cannot be used raises :class:`BadSampleError` naming its row index (and file), or,
    under ``on_bad_sample="skip"``, is dropped, counted in "skipped" and described (row, file,
    reason) in "skipped_samples", which the engine names in the run's log.
    """
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
    images: list[Tensor] = []
    labels: list[int] = []
    indices: list[int] = []
    records: list[dict[str, Any]] = []
    skipped = 0
    with_labels = any(LABEL in row for row in rows)
    with_indices = bool(rows) and all(ROW_INDEX in row for row in rows)
    for position, row in enumerate(rows):
        if IMAGE not in row:
            raise KeyError(f"row has no {IMAGE!r} field (fields: {sorted(row)}); load it with ImageDomain.load")
        try:
            image = decode_image(row[IMAGE], config, image_root)
            label = _label(row) if with_labels else None
        except BadSampleError as error:
            where = _where(row, position, image_root)
            if on_bad_sample == "error":
                raise BadSampleError(f"{where}: {error}", reason=error.reason) from error
            logger.debug("skipping bad sample: %s: %s", where, error)
            records.append(skip_record(where, error))
            skipped += 1
            continue
        images.append(image)
        if label is not None:
            labels.append(label)
        if with_indices:
            indices.append(int(row[ROW_INDEX]))
    side = config.image_size
    batch: dict[str, Any] = {
        "images": torch.stack(images) if images else torch.empty(0, config.channels, side, side, dtype=torch.uint8),
        "skipped": skipped,
        "skipped_samples": records,
    }
    if with_labels:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
    if with_indices:
        batch["indices"] = torch.tensor(indices, dtype=torch.long)
    return batch


def _where(row: dict[str, Any], position: int, image_root: str | None) -> str:
    place = f"row {int(row[ROW_INDEX])}" if ROW_INDEX in row else f"batch position {position}"
    value = row.get(IMAGE)
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, os.PathLike)) else None
    if not path:
        return place
    read_from = value.get("bytes") is None if isinstance(value, dict) else True
    return f"{place} (file {_under(image_root, path) if read_from else os.fspath(path)!r})"


def _label(row: dict[str, Any]) -> int:
    value = row.get(LABEL)
    if value is None:
        raise BadSampleError("label is missing", reason="missing label")
    if isinstance(value, (bool, str, bytes, float)) or not isinstance(value, (int, np.integer)):
        raise BadSampleError(f"label {value!r} is not an integer class id (type {type(value).__name__}); "
                             "encode class names with datasets.ClassLabel", reason="label is not a class id")
    return int(value)


def decode_image(value: Any, config: ImageConfig, image_root: str | None = None) -> Tensor:
    """One image (bytes/path dict, bytes, path, PIL image or pixel array) -> uint8 [C, S, S].

    Raises :class:`BadSampleError` saying what is wrong (empty, unreadable, truncated, zero-size).
    """
    pixels = _to_pixels(value, config.channels, image_root)
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise BadSampleError(f"zero-size image ({pixels.shape[0]}x{pixels.shape[1]})", reason="zero-size image")
    image = torch.from_numpy(pixels).permute(2, 0, 1)
    return resize_square(image, config.image_size, config.resize, config.resample).contiguous()


def resize_square(image: Tensor, side: int, mode: str = "center_crop", resample: str = "bicubic") -> Tensor:
    """uint8 [C, H, W] -> [C, side, side]: shorter side to ``side`` then centre crop, or stretch.

    Sizes and crop offsets follow ``transformers``' image processors (long side
    ``int(side * long / short)``, offset ``int((length - side) / 2)``).
    """
    height, width = image.shape[-2:]
    if (height, width) == (side, side):
        return image
    interpolation = _INTERPOLATION[resample]
    if mode == "stretch":
        return tvF.resize(image, [side, side], interpolation=interpolation, antialias=True)
    if height <= width:
        new_height, new_width = side, int(side * width / height)
    else:
        new_height, new_width = int(side * height / width), side
    resized = tvF.resize(image, [new_height, new_width], interpolation=interpolation, antialias=True)
    top, left = int((new_height - side) / 2), int((new_width - side) / 2)
    return resized[:, top : top + side, left : left + side]


def _to_pixels(value: Any, channels: int, image_root: str | None = None) -> np.ndarray:
    """Any supported image value -> uint8 [H, W, channels]."""
    if isinstance(value, Image.Image):
        return _pil_pixels(value, channels)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return _decode_bytes(value["bytes"], channels)
        if value.get("path"):
            return _decode_file(_under(image_root, value["path"]), channels)
        raise BadSampleError("image entry has neither bytes nor a path", reason="missing image")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(value), channels)
    if isinstance(value, (str, os.PathLike)):
        return _decode_file(_under(image_root, value), channels)
    if value is None:
        raise BadSampleError("image is missing (None)", reason="missing image")
    return _array_pixels(value, channels)


def _under(image_root: str | None, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    return path if image_root is None or os.path.isabs(path) else os.path.join(image_root, path)


def _decode_bytes(data: bytes, channels: int) -> np.ndarray:
    if len(data) == 0:
        raise BadSampleError("empty image (0 bytes)", reason="empty file")
    return _decode(io.BytesIO(data), channels)


def _decode_file(path: str | os.PathLike, channels: int) -> np.ndarray:
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise BadSampleError(f"cannot read file: {error}", reason="cannot read file") from error
    if size == 0:
        raise BadSampleError("empty file (0 bytes)", reason="empty file")
    return _decode(path, channels)


def _decode(source: Any, channels: int) -> np.ndarray:
    try:
        with Image.open(source) as image:
            image.load()  # Pillow opens lazily; truncated data only fails here
            return _pil_pixels(image, channels)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = "decompression bomb" if isinstance(error, Image.DecompressionBombError) else "cannot decode image"
        raise BadSampleError(f"cannot decode image: {type(error).__name__}: {error}", reason=reason) from error


def _pil_pixels(image: Image.Image, channels: int) -> np.ndarray:
    """Convert any Pillow mode to uint8 [H, W, channels]."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        # 16/32-bit integer grayscale is read as 16-bit (0-65535 -> 0-255); float as 0-255 values
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0 if mode.startswith("I") else values), 0, 255).astype(np.uint8)
        image = Image.fromarray(gray, mode="L")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    pixels = np.array(image.convert("RGB" if channels == 3 else "L"))  # a writable copy for torch
    return pixels.reshape(pixels.shape[0], pixels.shape[1], channels)


def _array_pixels(value: Any, channels: int) -> np.ndarray:
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise BadSampleError(f"pixel array must be HxW or HxWxC with C in (1, 3, 4), got shape {array.shape}", reason="bad pixel array")
    if array.size == 0:
        raise BadSampleError(f"zero-size image {array.shape}", reason="zero-size image")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = np.rint(array / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise BadSampleError(f"integer pixels must lie in [0, 255], got [{array.min()}, {array.max()}]", reason="bad pixel array")
        array = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise BadSampleError("float pixels must be finite and lie in [0, 1]", reason="bad pixel array")
        array = np.rint(array * 255).astype(np.uint8)
    else:
        raise BadSampleError(f"unsupported pixel dtype {array.dtype}", reason="bad pixel array")
    return _pil_pixels(Image.fromarray(array), channels)
