"""The real data layer: facts of the real files in ../shared/data that no synthetic stand-in can
check (their sizes, the splits the benchmarks rely on, accuracy a known baseline reaches on them),
and that the synthetic tree every other test reads (tests/fixture_data.py) keeps their layout, file
formats and quirks, so what those tests exercise is what the real files hold.

Each test takes ``shared_data`` and skips, saying why, where ../shared/data is absent (a fresh
clone; or ``MULTISSL_SHARED_DATA=/nonexistent``). CI has ../shared, so both layers run there.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FSDD_NAME = re.compile(r"(\d)_([a-z]+)_(\d+)\.wav$")
#: folders of the synthetic tree that have no counterpart in ../shared/data
SYNTHETIC_ONLY = ("misc/", "README.md", ".complete")


def _real_counterpart(real: Path, relative: str) -> Path | None:
    """The real file a synthetic one stands in for (photo names differ: any photo of the folder)."""
    if relative.startswith("pairs/flickr8k_1k/images/"):
        return next((real / "pairs/flickr8k_1k/images").glob("*" + Path(relative).suffix), None)
    return real / relative if (real / relative).is_file() else None


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
        return True
    except UnicodeDecodeError:
        return False


def test_synthetic_tree_mirrors_the_real_layout_formats_and_quirks(shared_data, data_root):
    synthetic = sorted(str(p.relative_to(data_root)) for p in data_root.rglob("*") if p.is_file())
    synthetic = [name for name in synthetic if not name.startswith(SYNTHETIC_ONLY)]
    missing = [name for name in synthetic if _real_counterpart(shared_data, name) is None]
    assert not missing, f"synthetic files with no real counterpart (rename them as the real ones): {missing[:10]}"
    real_folders = {str(p.relative_to(shared_data)) for p in shared_data.rglob("*") if p.is_dir() and any(p.iterdir())}
    synthetic_folders = {str(p.relative_to(data_root)) for p in data_root.rglob("*") if p.is_dir()}
    uncovered = sorted(f for f in real_folders - synthetic_folders if not f.startswith("audio/librispeech_mini/test_db/"))
    assert not uncovered, f"real folders the synthetic tree lacks: {uncovered}"

    for name in synthetic:
        fake, real = data_root / name, _real_counterpart(shared_data, name)
        if name.endswith(".parquet"):
            assert pq.read_schema(fake).remove_metadata() == pq.read_schema(real).remove_metadata(), name
            assert pq.read_schema(fake).metadata[b"huggingface"] == pq.read_schema(real).metadata[b"huggingface"], name
        elif name.endswith((".wav", ".flac")):
            a, b = soundfile.info(fake), soundfile.info(real)
            assert (a.samplerate, a.channels, a.format, a.subtype) == (b.samplerate, b.channels, b.format, b.subtype), name
        elif name.endswith(".gz"):
            a, b = gzip.open(fake).read(16), gzip.open(real).read(16)
            assert a[:4] == b[:4] and (a[8:16] == b[8:16] or name.endswith("labels-idx1-ubyte.gz")), name
        elif name.endswith(".jpg"):
            assert fake.read_bytes()[:3] == real.read_bytes()[:3] == b"\xff\xd8\xff", name
        elif not name.endswith(".md") and "README" not in name and "readme" not in name:
            a, b = fake.read_bytes(), real.read_bytes()
            assert a.startswith(b"\xef\xbb\xbf") == b.startswith(b"\xef\xbb\xbf"), f"{name}: byte-order mark"
            assert _decodes(a, "utf-8") == _decodes(b, "utf-8"), f"{name}: UTF-8 or not"
            first, real_first = a.decode("latin-1").splitlines()[0], b.decode("latin-1").splitlines()[0]
            assert first.count("\t") == real_first.count("\t") or name.startswith("text/stsb/"), f"{name}: fields"
            if name == "pairs/flickr8k_1k/captions.csv" or name.startswith("text/senteval/MRPC/"):
                assert first == real_first, f"{name}: header"
    # quirks the readers handle, present in both trees
    for root in (shared_data, data_root):
        sts = (root / "text/stsb/sts-train.csv").read_text(encoding="utf-8").splitlines()
        assert any(len(line.split("\t")) > 7 for line in sts) and any('"' in line for line in sts), root
        assert all(len(line.split("\t")) >= 7 for line in sts), root
        labels = [int(v) for line in (root / "audio/librispeech_mini/phone_labels.txt").read_text().splitlines()
                  for v in line.split()[1:]]
        assert 0 <= min(labels) and max(labels) < 41, root
        with open(root / "pairs/flickr8k_1k/captions.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        photos = [row["image"] for row in rows]
        assert all(len(set(photos[i:i + 5])) == 1 for i in range(0, len(photos), 5)), f"{root}: 5 rows per photo in a row"
        assert any("," in row["caption"] for row in rows), f"{root}: a caption with a comma (quoted in the csv)"


def test_real_images_and_pairs_their_sizes_and_a_probe_on_real_mnist_pixels(shared_data, tmp_path):
    from bench import quality_crossmodal as crossmodal
    from multissl.probes.classification import linear_probe

    shards = sorted((shared_data / "image/cifar10").glob("train-*.parquet"))
    assert [pq.ParquetFile(s).metadata.num_rows for s in shards] == [12_500] * 4
    labels = torch.cat([torch.tensor(pq.read_table(s, columns=["label"]).column("label").to_pylist()) for s in shards])
    assert torch.bincount(labels).tolist() == [5_000] * 10

    # raw pixels of real MNIST digits: logistic regression is known to reach ~90%
    with gzip.open(shared_data / "image/mnist/t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(shared_data / "image/mnist/t10k-labels-idx1-ubyte.gz") as handle:
        digits = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    assert len(images) == len(digits) == 10_000
    x = torch.from_numpy(images[:3000].astype(np.float32) / 255)
    y = torch.from_numpy(digits[:3000].astype(np.int64))
    result = linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], weight_decays=(1e-3, 1e-1), max_iter=100)
    assert result.accuracy > 0.8
    assert crossmodal.MNIST_HELD_OUT == len(images) // 5  # the cross-modal benchmark's stratified fifth

    # Flickr8k: 1,000 photos x 5 captions; the benchmark holds out 200 photos with their captions
    rows = crossmodal.read_captions(shared_data / "pairs" / "flickr8k_1k" / "captions.csv")
    assert len(rows) == 5_000 and len(list((shared_data / "pairs/flickr8k_1k/images").glob("*.jpg"))) == 1_000
    split = crossmodal.split_by_image(rows, crossmodal.FLICKR_TEST_IMAGES, seed=0)
    assert (len(split.train_images), len(split.test_images)) == (800, 200)
    assert (len(split.train_rows), len(split.test_rows)) == (4000, 1000)
    assert torch.bincount(torch.tensor(split.text_to_image)).tolist() == [5] * 200


def test_real_audio_its_sizes_the_benchmark_split_and_the_phone_alignments(shared_data):
    from bench import quality_audio as bench
    from domains.audio import AudioConfig, AudioDomain, read_frame_labels
    from multissl.domain import DataConfig

    fsdd = shared_data / "audio" / "fsdd" / "recordings"
    names = [FSDD_NAME.search(n).groups() for n in os.listdir(fsdd)]
    assert len(names) == 3000
    assert sorted({s for _, s, _ in names}) == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    assert {(d, s, int(t)) for d, s, t in names} == {(str(d), s, t) for d in range(10) for s in {s for _, s, _ in names}
                                                      for t in range(50)}
    pattern = r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav$"
    train = AudioDomain(AudioConfig(filename_pattern=pattern, where={"take": "5..49"})).load(DataConfig(path=str(fsdd)))
    test = AudioDomain(AudioConfig(filename_pattern=pattern, where={"take": "0..4"})).load(DataConfig(path=str(fsdd)))
    assert (len(train), len(test)) == (2700, 300)

    with pytest.MonkeyPatch.context() as patch:  # the audio benchmark's own split of the real folder
        patch.setattr(bench, "FSDD", fsdd)
        _, bench_train = bench.load_fsdd(bench.TRAIN_TAKES)
        _, bench_test = bench.load_fsdd(bench.TEST_TAKES)
    assert (len(bench_train), len(bench_test)) == (2700, 300)
    assert sorted(bench_test["audio"]) == sorted(test["audio"])

    librispeech = shared_data / "audio" / "librispeech_mini"
    flacs = sorted(librispeech.rglob("*.flac"))
    assert len(flacs) == 9 and {soundfile.info(f).samplerate for f in flacs} == {16000}
    reference = read_frame_labels(librispeech / "phone_labels.txt")
    assert len(reference) == 6 and max(max(v) for v in reference.values()) == 40  # 41 phone classes
    with_audio = [f for f in flacs if f.stem in reference]
    assert len(with_audio) == 2
    for flac in with_audio:  # 25 ms windows every 10 ms, no centring
        assert len(reference[flac.stem]) == (soundfile.info(flac).frames - 400) // 160 + 1
    with pytest.warns(UserWarning, match="4 labelled utterances have no audio file"):
        AudioDomain(AudioConfig(max_seconds=None)).load(DataConfig(path=str(librispeech / "phone_labels.txt"),
                                                                   format="aligned_frames"))


# Published sizes of the SentEval tasks (Conneau & Kiela 2018, Table 1; SST-2/TREC/MRPC splits)
SENTEVAL_PUBLISHED_SIZES = {"MR": {"all": 10662}, "CR": {"all": 3775}, "SUBJ": {"all": 10000}, "MPQA": {"all": 10606},
                            "SST2": {"train": 67349, "dev": 872, "test": 1821}, "TREC": {"train": 5452, "test": 500},
                            "MRPC": {"train": 4076, "test": 1725}}


def _bag_of_words(sentences: list[str], dim: int = 512) -> torch.Tensor:
    out = torch.zeros(len(sentences), dim)
    for row, sentence in enumerate(sentences):
        for word in re.findall(r"\w+", sentence.lower()):
            out[row, zlib.crc32(word.encode()) % dim] += 1.0
    return out


def test_real_text_its_published_sizes_and_a_bag_of_words_sts_score(shared_data):
    from domains.text import load_stsb
    from multissl.probes.text import evaluate_sts, read_senteval_task, read_stsb

    stsb = shared_data / "text/stsb"
    assert (len(load_stsb(stsb, split="train")), len(load_stsb(stsb, split="validation"))) == (5749, 1500)
    pairs = read_stsb(stsb / "sts-dev.csv")
    scores = evaluate_sts(_bag_of_words, pairs)
    assert scores["pairs"] == 1500 and scores["spearman_x100"] > 30  # a bag of words is far from MiniLM's 86.7

    for name, sizes in SENTEVAL_PUBLISHED_SIZES.items():
        task = read_senteval_task(shared_data / "text/senteval", name)
        found = {split: len(labels) for split, (_, labels) in task.splits.items()}
        if task.protocol == "cv10":
            found["all"] += task.skipped  # blank lines (CR 4, MPQA 3) are counted skips, not sentences
        assert found == sizes, name
    trec = read_senteval_task(shared_data / "text/senteval", "TREC")
    assert any(any(ord(ch) > 127 for ch in sentence) for sentence in trec.splits["train"][0])  # latin-1 decoded
    assert trec.splits["test"][0][0] == "How far is it from Denver to Aspen ?"

    agnews = (shared_data / "text/agnews/dev_from_train.tsv").read_text(encoding="utf-8").splitlines()
    assert len(agnews) == 10_001 and {line.split("\t")[1] for line in agnews} == {"World", "Sports", "Business", "Sci/Tech"}
