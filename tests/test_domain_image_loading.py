"""Image domain: loading files laid out as ../shared/data (CIFAR-10 parquet, MNIST IDX, Flickr8k
pairs: the synthetic tree of tests/fixture_data.py), sklearn digits, an imagefolder, images of
several modes and sizes; collation, mode conversion, resizing, and the bad-input corpus."""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import datasets

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from multissl.domain import BadSampleError, DataConfig
from domains.image import ImageConfig, ImageDomain, image_processor

CIFAR_SHARD = "image/cifar10/train-00000-of-00004.parquet"


def _png(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _row(index: int, data: bytes | None = None, path: str | None = None, label: int = 0) -> dict:
    return {"image": {"bytes": data, "path": path}, "label": label, "row_index": index}


# ------------------------------------------------------------------ files laid out as ../shared/data


def test_cifar10_parquet_with_limit_decodes_the_stored_pixels(data_root):
    path = data_root / CIFAR_SHARD
    domain = ImageDomain()
    dataset = domain.load(DataConfig(path=str(path), limit=6))
    assert len(dataset) == 6 and set(dataset.column_names) == {"image", "label", "row_index"}
    batch = domain.collate([dataset[i] for i in range(6)])
    table = pq.read_table(path).slice(0, 6).to_pylist()  # independent reader
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (6, 3, 32, 32)
    assert batch["labels"].tolist() == [row["label"] for row in table]
    assert batch["skipped"] == 0
    for i, row in enumerate(table):
        expected = np.array(Image.open(io.BytesIO(row["img"]["bytes"])).convert("RGB"))
        assert torch.equal(batch["images"][i], torch.from_numpy(expected).permute(2, 0, 1))


def test_cifar10_split_slice_column_mapping_and_streaming(data_root):
    path = data_root / CIFAR_SHARD
    labels = pq.read_table(path, columns=["label"]).column("label").to_pylist()
    domain = ImageDomain()
    sliced = domain.load(DataConfig(path=str(path), split="train[10:14]", columns={"image": "img", "label": "label"}))
    assert [sliced[i]["label"] for i in range(4)] == labels[10:14]
    assert [sliced[i]["row_index"] for i in range(4)] == [0, 1, 2, 3]  # position in the loaded split

    glob_path = str(data_root / "image/cifar10/train-*.parquet")
    streamed = list(domain.load(DataConfig(path=glob_path, streaming=True, limit=3)))
    assert [row["label"] for row in streamed] == labels[:3]
    assert [row["row_index"] for row in streamed] == [0, 1, 2]
    assert domain.collate(streamed)["images"].shape == (3, 3, 32, 32)


def test_missing_or_unknown_columns_are_named(data_root, caplog):
    path = str(data_root / CIFAR_SHARD)
    # a recipe's mapping that does not fit this data: the image column is found by its type, and
    # a missing label column means training without labels; both are said, naming the columns
    rows = ImageDomain().load(DataConfig(path=path, columns={"image": "picture", "label": "fine"}, limit=2))
    assert rows.column_names == ["image", "row_index"]
    assert "image column 'picture' not found; reading column 'img'" in caplog.text
    assert "no column 'fine' for the label role" in caplog.text and "training without it" in caplog.text
    with pytest.raises(ValueError, match=r"'caption'"):
        ImageDomain().load(DataConfig(path=path, columns={"caption": "img"}, limit=2))
    no_image = datasets.Dataset.from_dict({"text": ["a", "b"]})
    folder = Path(tempfile.mkdtemp())
    no_image.to_parquet(str(folder / "t.parquet"))
    with pytest.raises(ValueError, match=r"no image column.*\['text'\]"):
        ImageDomain().load(DataConfig(path=str(folder / "t.parquet")))


def _read_idx_independently(path) -> np.ndarray:
    raw = gzip.open(path).read()
    count, rows, cols = (int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in (1, 2, 3))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(count, rows, cols)


def test_mnist_idx_folder_and_glob(data_root):
    folder = data_root / "image/mnist"
    images = _read_idx_independently(folder / "t10k-images-idx3-ubyte.gz")
    labels = np.frombuffer(gzip.open(folder / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    domain = ImageDomain(ImageConfig(image_size=28, channels=1, normalization="mnist"))
    by_folder = domain.load(DataConfig(path=str(folder), split="test[:5]"))
    batch = domain.collate([by_folder[i] for i in range(5)])
    assert torch.equal(batch["images"][:, 0], torch.from_numpy(images[:5].copy()))
    assert batch["labels"].tolist() == labels[:5].tolist()

    by_glob = domain.load(DataConfig(path=str(folder / "t10k-*-ubyte.gz"), split="train[-3:]"))
    assert len(by_glob) == 3 and [by_glob[i]["label"] for i in range(3)] == labels[-3:].tolist()
    with pytest.raises(ValueError, match="'validation'"):
        domain.load(DataConfig(path=str(folder), split="validation"))


def test_sklearn_digits_builtin_upsampled():
    from sklearn.datasets import load_digits

    digits = load_digits()
    exact = ImageDomain(ImageConfig(image_size=8, channels=1))
    dataset = exact.load(DataConfig(path="sklearn:digits"))
    assert len(dataset) == 1797
    batch = exact.collate([dataset[i] for i in range(4)])
    assert torch.equal(batch["images"][:, 0], torch.from_numpy(np.rint(digits.images[:4] * 255 / 16).astype(np.uint8)))
    assert batch["labels"].tolist() == digits.target[:4].tolist()

    domain = ImageDomain(ImageConfig(image_size=32))
    subset = domain.load(DataConfig(path="sklearn:digits", split="train[:10%]"))
    assert len(subset) == 180
    upsampled = domain.collate([subset[i] for i in range(16)])["images"]
    assert upsampled.shape == (16, 3, 32, 32)
    assert torch.equal(upsampled[:, 0], upsampled[:, 2])  # gray replicated
    # 4x4 block means of the smooth upsampling follow the original 8x8 pixels
    pooled = torch.nn.functional.avg_pool2d(upsampled[:, :1].float(), 4).flatten()
    original = torch.from_numpy(digits.images[:16] * 255 / 16).flatten().float()
    assert torch.corrcoef(torch.stack((pooled, original)))[0, 1] > 0.97
    with pytest.raises(ValueError, match=r"split 'test'.*\['train'\]"):
        domain.load(DataConfig(path="sklearn:digits", split="test"))


def test_imagefolder_built_in_tmp_path(tmp_path):
    rng = np.random.default_rng(0)
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(3):
            size = (20 + 7 * i, 40 - 5 * i)
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "train" / name / f"{i}.png")
    domain = ImageDomain(ImageConfig(image_size=16))
    dataset = domain.load(DataConfig(path=str(tmp_path)))
    assert len(dataset) == 6
    batch = domain.collate([dataset[i] for i in range(6)])
    assert batch["images"].shape == (6, 3, 16, 16)
    assert sorted(batch["labels"].tolist()) == [0, 0, 0, 1, 1, 1]
    paths = [dataset[i]["image"]["path"] for i in range(6)]
    assert all(p.endswith(".png") for p in paths)

    # a zero-byte file in the folder: the error names the row and the file
    (tmp_path / "train" / "dog" / "empty.png").write_bytes(b"")
    dataset = domain.load(DataConfig(path=str(tmp_path)))
    rows = [dataset[i] for i in range(len(dataset))]
    with pytest.raises(BadSampleError, match=r"row \d+ \(file '.*empty\.png'\): empty file \(0 bytes\)"):
        domain.collate(rows)
    skipping = ImageDomain(ImageConfig(image_size=16))
    skipping.load(DataConfig(path=str(tmp_path), on_bad_sample="skip"))
    batch = skipping.collate(rows)
    assert batch["skipped"] == 1 and batch["images"].shape[0] == 6 and batch["labels"].shape == (6,)


# ------------------------------------------------------------------------------------- bad-input corpus


def _bad_corpus(tmp_path) -> list[tuple[dict, str]]:
    """(row, expected problem) for every kind of unusable input."""
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    jpeg = _encode(Image.fromarray(noise), "JPEG", quality=90)
    zero_byte = tmp_path / "zero.jpg"
    zero_byte.write_bytes(b"")
    return [
        (_row(3, jpeg[: len(jpeg) // 2]), "truncated"),
        (_row(4, np.random.default_rng(2).bytes(300)), "cannot identify"),
        (_row(5, None, str(zero_byte)), "empty file"),
        (_row(6, None, str(tmp_path / "missing.png")), "cannot read file"),
        ({"image": np.zeros((0, 5), np.uint8), "label": 0, "row_index": 7}, "zero-size"),
    ]


def test_bad_inputs_name_the_row_and_the_problem(tmp_path):
    domain = ImageDomain(ImageConfig(image_size=16))
    for row, problem in _bad_corpus(tmp_path):
        with pytest.raises(BadSampleError) as caught:
            domain.collate([row])
        message = str(caught.value)
        assert f"row {row['row_index']}" in message and problem in message, message
        path = row["image"].get("path") if isinstance(row["image"], dict) else None
        if path:
            assert path in message


def test_skip_policy_counts_and_keeps_labels_aligned(tmp_path):
    good = [_row(i, _png(np.full((10, 12, 3), 20 * i, np.uint8)), label=i) for i in range(3)]
    bad = [row for row, _ in _bad_corpus(tmp_path)]
    rows = [good[0], bad[0], bad[1], good[1], bad[2], bad[3], bad[4], good[2]]
    domain = ImageDomain(ImageConfig(image_size=8))
    domain.on_bad_sample = "skip"  # what load(DataConfig(on_bad_sample="skip")) sets
    batch = domain.collate(rows)
    assert batch["skipped"] == len(bad)
    assert batch["labels"].tolist() == [0, 1, 2]
    assert batch["images"][:, 0, 0, 0].tolist() == [0, 20, 40]


def test_every_mode_converts_to_the_configured_channels():
    rgb = ImageDomain(ImageConfig(image_size=4))
    gray = ImageDomain(ImageConfig(image_size=4, channels=1))

    def pixel(domain, data: bytes) -> list[int]:
        return domain.collate([_row(0, data)])["images"][0, :, 0, 0].tolist()

    cmyk = _encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", quality=100)  # pure red in CMYK
    assert np.allclose(pixel(rgb, cmyk), [255, 0, 0], atol=6)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2], rgba[..., 3] = 255, 128  # half-transparent blue over white
    assert np.allclose(pixel(rgb, _png(rgba)), [127, 127, 255], atol=1)
    rgba[..., 3] = 0
    assert pixel(rgb, _png(rgba)) == [255, 255, 255]
    sixteen_bit = np.full((4, 4), 257 * 100, np.uint16)
    assert Image.open(io.BytesIO(_png(sixteen_bit))).mode.startswith("I")
    assert pixel(rgb, _png(sixteen_bit)) == [100, 100, 100]
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([9, 9, 9, 0, 255, 0] + [0, 0, 0] * 254)
    assert pixel(rgb, _encode(palette, "PNG")) == [0, 255, 0]
    assert pixel(rgb, _encode(palette, "PNG", transparency=1)) == [255, 255, 255]
    red = _png(np.tile(np.array([255, 0, 0], np.uint8), (4, 4, 1)))
    assert pixel(gray, red) == [76]  # BT.601 luma of red: 0.299 * 255
    assert pixel(rgb, _png(np.full((4, 4), 7, np.uint8))) == [7, 7, 7]


@pytest.mark.parametrize("resize", ["center_crop", "stretch"])
def test_collate_resize_matches_the_saved_image_processor(resize):
    """The processor saved with encoders reproduces collate + plain view on non-square images."""
    config = ImageConfig(image_size=16, resize=resize, normalization="cifar10")
    domain = ImageDomain(config)
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((37, 50, 3), (61, 23, 3), (16, 16, 3))]
    batch = domain.collate([_row(i, _png(a)) for i, a in enumerate(arrays)])
    from multissl.views import ViewRequest

    ours = domain.make_views(batch, ViewRequest("plain"), torch.Generator())["inputs"]["pixel_values"]
    theirs = image_processor(config)(images=[Image.fromarray(a) for a in arrays], return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (3, 3, 16, 16)
    assert torch.allclose(ours, theirs, atol=1e-5)
    if resize == "center_crop":  # the centre crop keeps the middle of the long side
        middle = torch.from_numpy(arrays[2]).permute(2, 0, 1)
        assert torch.equal(batch["images"][2], middle)


def test_relative_paths_in_a_csv_are_read_from_the_image_root(tmp_path):
    (tmp_path / "pictures").mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(tmp_path / "pictures" / f"{i}.png")
    (tmp_path / "pairs.csv").write_text("file,caption\n0.png,a\n1.png,b\n2.png,c\nmissing.png,d\n")
    data = DataConfig(path=str(tmp_path / "pairs.csv"), columns={"image": "file"})
    domain = ImageDomain(ImageConfig(image_size=8, image_root=str(tmp_path / "pictures")))
    dataset = domain.load(data)
    assert dataset.column_names == ["image", "row_index"]  # only this domain's roles
    rows = [dataset[i] for i in range(4)]
    assert domain.collate(rows[:3])["images"][:, 0, 0, 0].tolist() == [0, 40, 80]
    missing = str(tmp_path / "pictures" / "missing.png")
    with pytest.raises(BadSampleError, match=rf"row 3 \(file '{missing}'\): cannot read file"):
        domain.collate(rows)
    beside_the_csv = ImageDomain(ImageConfig(image_size=8))  # default root: the csv's folder
    beside_the_csv.load(data)
    with pytest.raises(BadSampleError, match=rf"file '{tmp_path / '0.png'}'"):
        beside_the_csv.collate(rows[:1])


def test_flickr8k_pairs_csv_with_an_image_root(data_root):
    folder = data_root / "pairs/flickr8k_1k"
    domain = ImageDomain(ImageConfig(image_size=32, image_root=str(folder / "images")))
    dataset = domain.load(DataConfig(path=str(folder / "captions.csv"), columns={"image": "image"}, limit=3))
    batch = domain.collate([dataset[i] for i in range(3)])
    assert batch["images"].shape == (3, 3, 32, 32) and "labels" not in batch
    assert batch["images"].float().std() > 10  # photographs, not blank


def test_a_folder_of_every_mode_and_size_loads_as_rgb_at_the_configured_size(data_root):
    folder = data_root / "misc/images"
    files = sorted(folder.iterdir())
    modes = {Image.open(path).mode for path in files}
    assert {"RGB", "L", "RGBA", "P"} <= modes and {path.suffix for path in files} == {".png", ".jpg"}
    assert len({Image.open(path).size for path in files}) >= 5
    domain = ImageDomain(ImageConfig(image_size=12))
    dataset = domain.load(DataConfig(path=str(folder), columns={"image": "image"}))
    rows = [dataset[i] for i in range(len(dataset))]
    batch = domain.collate(rows)
    assert batch["images"].shape == (len(files), 3, 12, 12) and batch["skipped"] == 0
    for row, image in zip(rows, batch["images"]):
        mode = Image.open(row["image"]["path"]).mode
        if mode == "L":  # gray replicated into three equal channels
            assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    gray = ImageDomain(ImageConfig(image_size=12, channels=1))
    gray.load(DataConfig(path=str(folder), columns={"image": "image"}))
    assert gray.collate(rows)["images"].shape == (len(files), 1, 12, 12)
