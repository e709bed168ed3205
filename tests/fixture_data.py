"""A small synthetic stand-in for ../shared/data, written by the tests themselves.

``build(root)`` writes, in a few seconds, a tree with the same layout, file names and file formats
as ../shared/data (see shared/data/README.md), at a fraction of the size, so every test that needs
*some* data of that layout runs on a fresh clone with no ../shared beside it. Everything is seeded:
two builds are byte-identical.

The content is learnable, so overfitting runs, probes and retrieval tests still mean something:

- CIFAR-like images: one of ten shapes, in a hue of its own, at a random place, size, aspect and
  tilt, over a random crop of one of the two photographs scikit-learn ships (natural textures and
  colours, upright: what tells one image from another of its class, and rotations and patch
  positions apart); colours muted as in CIFAR-10. The first 16 rows of train-00000 have the real
  shard's classes. Flickr-like photos: the subject's shape in the caption's colour over the
  caption's place (a gradient of its own colours) with a faint photo texture;
- MNIST-like digits: seven-segment strokes, jittered in position, size, slant and thickness;
- FSDD-like speech: harmonics whose formant trajectories and pitch contour depend on the digit,
  with a speaker-dependent pitch, spectral tilt and vibrato;
- LibriSpeech-like utterances: runs of "phones" (41 classes, 100 labels/s), each a class-dependent
  pair of tones, with frame labels aligned exactly as in phone_labels.txt;
- text: sentences from a small grammar (captions, plays, encyclopedia paragraphs); STS-B scores
  follow word overlap; SentEval and AG News labels follow class-specific words.

The quirks the readers must handle are reproduced: STS-B lines with extra fields and ``"`` in
sentences, a latin-1 line in TREC's training file, MRPC's byte-order mark and header, blank lines
in CR and MPQA, WikiText's ``<unk>`` and ``@-@`` markers, headings and blank lines, quoted captions
(with a comma) in captions.csv, FSDD names that sort 0, 1, 10, 11, 12, 2, ..., LibriSpeech labels
for utterances whose audio is not there. tests/test_real_data.py checks, where ../shared/data is
present, that the real files have the same layout, formats and quirks.

Besides the mirrored layout, ``misc/`` holds a few images of several sizes and modes (RGB, L, RGBA,
P; PNG and JPEG) and wav files at 8 and 16 kHz.

Tests reach the tree through the ``data_root`` fixture (tests/conftest.py); code that runs in a
spawned process or at module level calls :func:`data_root`, which reads the path the fixture put in
``MULTISSL_TEST_DATA`` (or builds a tree of its own where that is unset).
"""

from __future__ import annotations

import colorsys
import csv
import gzip
import io
import os
import tempfile
import wave
from pathlib import Path

import numpy as np

__all__ = [
    "ENVIRONMENT_VARIABLE", "build", "data_root",
    "CIFAR_CLASSES", "CIFAR_SHARD_ROWS", "MNIST_IMAGES", "FSDD_SPEAKERS", "FSDD_TAKES", "FSDD_RATE",
    "LIBRISPEECH_AUDIO", "LIBRISPEECH_LABELLED", "PHONE_CLASSES", "FLICKR_PHOTOS", "CAPTIONS_PER_PHOTO",
    "STSB_ROWS", "SENTEVAL_SIZES", "AGNEWS_ROWS", "AGNEWS_LABELS",
]

#: where the ``data_root`` fixture publishes the tree it built (spawned processes inherit it)
ENVIRONMENT_VARIABLE = "MULTISSL_TEST_DATA"
_VERSION = "10"  # bump when the content changes: a stale tree is rebuilt

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_SHARD_ROWS = (600, 100, 100, 100)  # train-00000 holds enough rows for 400/200 probe splits
#: the classes of the real train-00000's first 16 rows: tests tuned on those batches see the same mix
CIFAR_FIRST_LABELS = [5, 1, 2, 5, 1, 8, 5, 4, 0, 9, 6, 2, 4, 3, 7, 1]
MNIST_IMAGES = 1000
FSDD_SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]  # FSDD's own six names
FSDD_TAKES = 13  # takes 0..12: 0-4 are FSDD's test split; names sort as 0, 1, 10, 11, 12, 2, ...
FSDD_RATE = 8000
LIBRISPEECH_RATE = 16000
PHONE_CLASSES = 41
#: utterance id -> seconds of audio (16 kHz FLAC under test_db/<speaker>/<chapter>/)
LIBRISPEECH_AUDIO = {
    "6476-57446-0019": 2.5, "5678-43303-0032": 2.0, "5678-43303-0024": 2.2, "5678-43301-0021": 2.1,
    "5393-19218-0024": 2.4, "4397-15668-0007": 2.3, "4397-15668-0003": 2.0,
    "4051-11218-0044": 6.0, "2911-12359-0007": 4.0,
}
#: utterance id -> number of frame labels; the two with audio match their audio's 25 ms / 10 ms frames
LIBRISPEECH_LABELLED = {
    "1737-148989-0038": 1500, "1116-132851-0018": 330, "696-92939-0032": 1600, "3723-171115-0003": 760,
    "4051-11218-0044": (round(6.0 * LIBRISPEECH_RATE) - 400) // 160 + 1,
    "2911-12359-0007": (round(4.0 * LIBRISPEECH_RATE) - 400) // 160 + 1,
}
FLICKR_PHOTOS = 40
CAPTIONS_PER_PHOTO = 5
STSB_ROWS = {"train": 400, "dev": 1000}  # dev: enough pairs that float ties barely move rho
#: task -> split -> rows (blank lines not counted), as read by multissl.probes.text.read_senteval_task
SENTEVAL_SIZES = {"MR": {"all": 160}, "CR": {"all": 160}, "SUBJ": {"all": 160}, "MPQA": {"all": 160},
                  "SST2": {"train": 160, "dev": 40, "test": 60}, "TREC": {"train": 180, "test": 60},
                  "MRPC": {"train": 120, "test": 60}}
SENTEVAL_BLANK_LINES = {"CR": 4, "MPQA": 3}  # as in the real files: counted skips, not sentences
AGNEWS_ROWS = 240
AGNEWS_LABELS = ["Business", "Sci/Tech", "Sports", "World"]


def data_root() -> Path:
    """The synthetic tree: the one the ``data_root`` fixture built (``MULTISSL_TEST_DATA``), or,
    where that is unset (a script, a process not started by pytest), one built once per process."""
    published = os.environ.get(ENVIRONMENT_VARIABLE)
    if published and (Path(published) / ".complete").read_text() == _VERSION:
        return Path(published)
    global _PRIVATE_ROOT
    if _PRIVATE_ROOT is None:
        _PRIVATE_ROOT = build(Path(tempfile.mkdtemp(prefix="multissl-test-data-")))
    return _PRIVATE_ROOT


_PRIVATE_ROOT: Path | None = None


def build(root: Path) -> Path:
    """Write the whole tree under ``root`` (seeded: the same bytes every time); returns ``root``."""
    root = Path(root)
    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == _VERSION:
        return root
    root.mkdir(parents=True, exist_ok=True)
    for part, seed in ((_cifar, 1), (_mnist, 2), (_fsdd, 3), (_librispeech, 4), (_corpus, 5), (_stsb, 6),
                       (_senteval, 7), (_agnews, 8), (_flickr, 9), (_misc, 10)):
        part(root, np.random.default_rng(seed))
    (root / "README.md").write_text(
        "Synthetic stand-in for ../shared/data written by tests/fixture_data.py: same layout and formats, "
        "a few seconds to build, learnable content. Not real data: no published number holds here.\n")
    marker.write_text(_VERSION)
    return root


# ------------------------------------------------------------------------------------------- images


def _rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value)) * 255


def _shape_mask(kind: int, height: int, width: int, cy: float, cx: float, radius: float, aspect: float = 1.0,
                tilt: float = 0.0) -> np.ndarray:
    """Boolean mask of one of ten shapes centred at (cy, cx), ``aspect`` times wider than high,
    turned by ``tilt`` radians."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = y - cy, x - cx
    y, x = y * np.cos(tilt) - x * np.sin(tilt), y * np.sin(tilt) + x * np.cos(tilt)
    dy, dx = y / radius * np.sqrt(aspect), x / radius / np.sqrt(aspect)
    if kind == 0:  # disc
        return dx ** 2 + dy ** 2 <= 1
    if kind == 1:  # square
        return (np.abs(dx) <= 0.8) & (np.abs(dy) <= 0.8)
    if kind == 2:  # triangle pointing up
        return (dy <= 0.8) & (dy >= -1) & (np.abs(dx) <= (dy + 1) / 1.8 * 0.9)
    if kind == 3:  # ring
        return (dx ** 2 + dy ** 2 <= 1) & (dx ** 2 + dy ** 2 >= 0.35)
    if kind == 4:  # plus
        return ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 1)) | ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 1))
    if kind == 5:  # horizontal bars
        return (np.abs(dx) <= 1) & (np.abs(dy) <= 1) & (np.floor((dy + 1) * 2.5) % 2 == 0)
    if kind == 6:  # diamond
        return np.abs(dx) + np.abs(dy) <= 1
    if kind == 7:  # vertical bars
        return (np.abs(dx) <= 1) & (np.abs(dy) <= 1) & (np.floor((dx + 1) * 2.5) % 2 == 0)
    if kind == 8:  # half disc, flat side up (a hull)
        return (dx ** 2 + dy ** 2 <= 1) & (dy >= 0)
    return (np.abs(dx) <= 0.9) & (np.abs(dy) <= 0.9) & ((np.floor((dx + 1) * 2) + np.floor((dy + 1) * 2)) % 2 == 0)


_PHOTOS: list[np.ndarray] = []


def _photo_patch(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """float [H, W, 3]: a random crop (random scale, maybe mirrored) of one of the two photographs
    scikit-learn ships (a dependency of the project): natural textures and colours as backgrounds."""
    from PIL import Image

    if not _PHOTOS:
        from sklearn.datasets import load_sample_images

        _PHOTOS.extend(load_sample_images().images)
    photo = _PHOTOS[int(rng.integers(0, len(_PHOTOS)))]
    side = int(rng.integers(24, 200))
    top, left = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side * width // height))
    crop = photo[top:top + side, left:left + side * width // height]
    if rng.uniform() < 0.5:
        crop = crop[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((width, height), Image.BILINEAR), dtype=np.float64)


def _scene(rng: np.random.Generator, label: int, height: int, width: int, colour: np.ndarray | None = None,
           background: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """uint8 [H, W, 3]: shape ``label`` in a colour of its own (or ``colour``) over a patch of a
    photograph (what makes one image unlike another of its class), or over a gradient between two
    colours (``background``: top and bottom)."""
    if background is None:
        image = _photo_patch(rng, height, width)
    else:
        ramp = np.linspace(0, 1, height)[:, None, None]
        image = background[0] * (1 - ramp) + background[1] * ramp + _photo_patch(rng, height, width) * 0.3 - 40
    size = min(height, width)
    radius = size * rng.uniform(0.18, 0.38)
    cy, cx = height / 2 + rng.uniform(-0.22, 0.22) * size, width / 2 + rng.uniform(-0.22, 0.22) * size
    if colour is None:
        colour = _rgb(label / 10 + rng.uniform(-0.02, 0.02), rng.uniform(0.45, 0.75), rng.uniform(0.6, 0.9))
    else:
        colour = np.clip(colour * rng.uniform(0.85, 1.1), 0, 255)
    mask = _shape_mask(label, height, width, cy, cx, radius, rng.uniform(0.7, 1.4), rng.uniform(-0.3, 0.3))
    image[mask] = colour * rng.uniform(0.9, 1.1, size=(int(mask.sum()), 1))  # a little texture
    gray = image.mean(axis=2, keepdims=True)
    image = gray + (image - gray) * 0.6  # photographs' muted colours (CIFAR-10's are mostly near gray)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _cifar(root: Path, rng: np.random.Generator) -> None:
    import datasets

    folder = root / "image" / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CIFAR_CLASSES)})
    total = len(CIFAR_SHARD_ROWS)
    counter = 0
    for shard, rows in enumerate(CIFAR_SHARD_ROWS):
        labels = rng.integers(0, 10, rows)
        if shard == 0:
            labels[: len(CIFAR_FIRST_LABELS)] = CIFAR_FIRST_LABELS
        images = []
        for label in labels:
            data = _encode(_scene(rng, int(label), 32, 32), "JPEG", quality=90)
            images.append({"bytes": data, "path": f"{CIFAR_CLASSES[label]}/{counter:04d}.jpg"})
            counter += 1
        table = datasets.Dataset.from_dict({"img": images, "label": labels.tolist()}, features=features)
        table.to_parquet(str(folder / f"train-{shard:05d}-of-{total:05d}.parquet"))


_SEGMENTS = {"a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 0.5)), "c": ((1, 0.5), (1, 1)), "d": ((0, 1), (1, 1)),
             "e": ((0, 0.5), (0, 1)), "f": ((0, 0), (0, 0.5)), "g": ((0, 0.5), (1, 0.5))}
_DIGIT_SEGMENTS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]


def _digit(rng: np.random.Generator, digit: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    width, height = rng.uniform(9, 13), rng.uniform(15, 19)
    left, top = 14 - width / 2 + rng.uniform(-2, 2), 14 - height / 2 + rng.uniform(-2, 2)
    slant = rng.uniform(-0.25, 0.25)
    thickness = int(rng.integers(2, 4))

    def point(x: float, y: float) -> tuple[float, float]:
        return left + x * width + slant * (0.5 - y) * height, top + y * height

    for name in _DIGIT_SEGMENTS[digit]:
        start, end = _SEGMENTS[name]
        if digit == 1:  # a one is a single stroke in the middle, not the right edge of an eight
            start, end = (0.5, start[1]), (0.5, end[1])
        draw.line([point(*start), point(*end)], fill=255, width=thickness)
    return np.array(image.filter(ImageFilter.GaussianBlur(0.6)))


def _mnist(root: Path, rng: np.random.Generator) -> None:
    folder = root / "image" / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, 10, MNIST_IMAGES).astype(np.uint8)
    pixels = np.stack([_digit(rng, int(d)) for d in labels])
    header = (0x0803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (MNIST_IMAGES, 28, 28))
    with gzip.GzipFile(folder / "t10k-images-idx3-ubyte.gz", "wb", mtime=0) as handle:
        handle.write(header + pixels.tobytes())
    with gzip.GzipFile(folder / "t10k-labels-idx1-ubyte.gz", "wb", mtime=0) as handle:
        handle.write((0x0801).to_bytes(4, "big") + MNIST_IMAGES.to_bytes(4, "big") + labels.tobytes())


# -------------------------------------------------------------------------------------------- audio

#: per digit: (F1 start, F1 end, F2 start, F2 end) in Hz, and a pitch slope over the word
_DIGIT_FORMANTS = [(300, 700, 2200, 1100), (700, 300, 1100, 2300), (500, 500, 900, 900), (400, 750, 1800, 1200),
                   (750, 350, 1200, 900), (650, 300, 1700, 2400), (350, 350, 2500, 1700), (600, 450, 1000, 1700),
                   (800, 600, 1500, 2000), (300, 300, 1300, 2600)]
_DIGIT_PITCH_SLOPE = [0.25, -0.2, 0.0, 0.15, -0.3, 0.3, -0.1, 0.1, -0.25, 0.05]
#: per speaker: (base pitch Hz, spectral tilt, vibrato Hz)
_SPEAKER_VOICE = [(105, 1.4, 5.0), (130, 0.8, 6.0), (165, 1.1, 4.5), (195, 0.6, 5.5), (230, 1.6, 7.0), (270, 1.0, 4.0)]


def _word(rng: np.random.Generator, digit: int, speaker: int, rate: int) -> np.ndarray:
    """One spoken-digit-like clip: harmonics of a speaker's pitch shaped by the digit's formants."""
    seconds = rng.uniform(0.3, 0.6)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    progress = t / seconds
    base, tilt, vibrato = _SPEAKER_VOICE[speaker]
    f0 = base * rng.uniform(0.95, 1.05) * (1 + _DIGIT_PITCH_SLOPE[digit] * progress) * (1 + 0.02 * np.sin(2 * np.pi * vibrato * t))
    f1s, f1e, f2s, f2e = (v * rng.uniform(0.96, 1.04) for v in _DIGIT_FORMANTS[digit])
    f1, f2 = f1s + (f1e - f1s) * progress, f2s + (f2e - f2s) * progress
    phase = 2 * np.pi * np.cumsum(f0) / rate
    coarse = slice(None, None, 40)  # formants and pitch move slowly: amplitudes on a coarse grid
    wave = np.zeros(n)
    previous, current, twice_cos = np.zeros(n), np.sin(phase), 2 * np.cos(phase)  # sin(k * phase) by recurrence
    for k in range(1, int(0.45 * rate / base) + 1):
        frequency = k * f0[coarse]
        amplitude = (np.exp(-(((frequency - f1[coarse]) / 180) ** 2))
                     + 0.7 * np.exp(-(((frequency - f2[coarse]) / 250) ** 2))) * k ** -tilt * (frequency < 0.48 * rate)
        wave += np.repeat(amplitude, 40)[:n] * current
        previous, current = current, twice_cos * current - previous
    envelope = np.minimum(1, np.minimum(t / 0.03, (seconds - t) / 0.06)).clip(0)
    wave = wave * envelope
    wave = wave / (np.abs(wave).max() + 1e-9) * rng.uniform(0.3, 0.8) + rng.normal(0, 0.003, n)
    silence = [np.zeros(int(rng.uniform(0, 0.04) * rate)) for _ in range(2)]
    return np.concatenate([silence[0], wave, silence[1]]).clip(-1, 1)


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """Mono 16-bit PCM wav (the stdlib writer: soundfile syncs every file to disk, seconds for FSDD)."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def _fsdd(root: Path, rng: np.random.Generator) -> None:
    folder = root / "audio" / "fsdd" / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        for speaker, name in enumerate(FSDD_SPEAKERS):
            for take in range(FSDD_TAKES):
                _write_wav(folder / f"{digit}_{name}_{take}.wav", _word(rng, digit, speaker, FSDD_RATE), FSDD_RATE)
    (root / "audio" / "fsdd" / "README.md").write_text(
        f"Synthetic spoken digits: {len(FSDD_SPEAKERS)} speakers x 10 digits x {FSDD_TAKES} takes, "
        f"{{digit}}_{{speaker}}_{{take}}.wav, {FSDD_RATE} Hz mono 16-bit. Test split: takes 0-4.\n")


def _phone_run(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Frame labels: silence (0) at both ends, runs of 3-12 frames of phones 1..40 between."""
    labels = np.zeros(frames, dtype=np.int64)
    position = int(rng.integers(10, 30))
    end = frames - int(rng.integers(10, 30))
    while position < end:
        length = int(rng.integers(3, 13))
        labels[position:min(position + length, end)] = rng.integers(1, PHONE_CLASSES)
        position += length
    return labels


def _phone_audio(rng: np.random.Generator, labels: np.ndarray, samples: int, rate: int) -> np.ndarray:
    """Audio whose 25 ms window i (every 10 ms) is centred on phone ``labels[i]``: two tones per class."""
    owner = np.clip(np.round((np.arange(samples) - 200) / 160).astype(np.int64), 0, len(labels) - 1)
    phone = labels[owner]
    low = np.where(phone == 0, 0.0, 250.0 + (phone % 7) * 110.0)
    high = np.where(phone == 0, 0.0, 1000.0 + (phone // 7) * 450.0)
    wave = 0.4 * np.sin(2 * np.pi * np.cumsum(low) / rate) + 0.25 * np.sin(2 * np.pi * np.cumsum(high) / rate)
    wave = wave * (phone != 0) + rng.normal(0, 0.01, samples)
    return (wave * rng.uniform(0.6, 1.0)).clip(-1, 1)


def _librispeech(root: Path, rng: np.random.Generator) -> None:
    import soundfile

    folder = root / "audio" / "librispeech_mini"
    lines = {}
    for utterance, frames in LIBRISPEECH_LABELLED.items():
        lines[utterance] = _phone_run(rng, frames)
    for utterance, seconds in LIBRISPEECH_AUDIO.items():
        speaker, chapter, _ = utterance.split("-")
        samples = round(seconds * LIBRISPEECH_RATE)
        labels = lines.get(utterance)
        if labels is None:
            labels = _phone_run(rng, (samples - 400) // 160 + 1)
        assert len(labels) == (samples - 400) // 160 + 1, utterance
        path = folder / "test_db" / speaker / chapter / f"{utterance}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, _phone_audio(rng, labels, samples, LIBRISPEECH_RATE), LIBRISPEECH_RATE,
                        format="FLAC", subtype="PCM_16")
    (folder / "phone_labels.txt").write_text(
        "".join(f"{utterance} {' '.join(map(str, labels.tolist()))}\n" for utterance, labels in lines.items()))
    (folder / "seq_list.txt").write_text(
        "".join(f"{u}\n" for u in LIBRISPEECH_AUDIO if u not in LIBRISPEECH_LABELLED))


# --------------------------------------------------------------------------------------------- text

COLOURS = ["red", "blue", "green", "yellow", "black", "white", "brown", "pink", "orange", "purple"]
_SUBJECTS = ["man", "woman", "boy", "girl", "child", "dog", "cat", "horse", "bird", "worker", "player",
             "musician", "biker", "surfer", "skier", "chef", "dancer", "student", "fisherman", "tourist"]
_PLURALS = {"man": "men", "woman": "women", "child": "children", "fisherman": "fishermen"}
_AGES = ["young", "old", "small", "tall", "little", "smiling", "tired", "happy"]
_GARMENTS = ["shirt", "jacket", "dress", "hat", "helmet", "coat", "sweater", "uniform", "scarf", "apron"]
_ACTIONS = ["running", "walking", "sitting", "jumping", "playing", "climbing", "riding a bicycle", "eating lunch",
            "reading a book", "swimming", "dancing", "singing", "waiting", "painting a wall", "throwing a ball",
            "catching a frisbee", "carrying a bag", "pushing a cart", "looking at the camera", "talking on a phone"]
PLACES = ["on the beach", "in the park", "on a busy street", "in the snow", "near the water", "in a field",
          "on a bridge", "inside a building", "at a market", "on the grass", "by the lake", "in front of a store",
          "on a mountain", "in the kitchen", "on a stage", "at the station"]
_COUNTS = ["Two", "Three", "Several", "Four", "Many"]


def _noun(subject: str, plural: bool) -> str:
    if not plural:
        return subject
    return _PLURALS.get(subject, subject + ("es" if subject.endswith("sh") else "s"))


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def caption(rng: np.random.Generator, subject: str | None = None, colour: str | None = None,
            place: str | None = None) -> str:
    """One Flickr30k-like caption from the grammar (pieces not given are drawn); every form names
    the subject, a colour and the place."""
    subject = subject or str(rng.choice(_SUBJECTS))
    colour = colour or str(rng.choice(COLOURS))
    place = place or str(rng.choice(PLACES))
    plural = rng.uniform() < 0.3
    article = str(rng.choice(_COUNTS)) if plural else str(rng.choice(["A", "A", "The", "One"]))
    who = " ".join([article] + ([str(rng.choice(_AGES))] if rng.uniform() < 0.5 else []) + [_noun(subject, plural)])
    be, action = "are" if plural else "is", str(rng.choice(_ACTIONS))
    garment, thing = str(rng.choice(_GARMENTS)), str(rng.choice(_THINGS))
    dressed = "in matching " + colour if plural else "in " + _a(colour)
    form = int(rng.integers(0, 5))
    if form == 0:
        words = f"{who} {dressed} {garment} {be} {action} {place}"
    elif form == 1:  # a comma: the captions csv quotes this caption
        words = f"{who} in {colour} {be} {action} {place} , {rng.choice(_ASIDES)}"
    elif form == 2:
        words = f"{who} with {_a(colour)} {thing} {be} {action} {place}"
    elif form == 3:
        words = f"{who} {be} {action} {place} next to {_a(colour)} {thing}"
    else:
        other = _noun(str(rng.choice(_SUBJECTS)), False)
        words = f"{who} wearing {_a(colour)} {garment} {be} {action} {place} while {_a(other)} {rng.choice(_WATCHING)}"
    return words + (" ." if rng.uniform() < 0.5 else ".")


_THINGS = ["umbrella", "boat", "car", "kite", "backpack", "balloon", "bucket", "guitar", "surfboard", "tent",
           "bench", "truck", "wall", "door", "flag", "sign", "train", "tractor", "basket", "bicycle"]
_ASIDES = ["as the sun sets", "on a sunny day", "in the rain", "early in the morning", "late at night",
           "during a festival", "after school", "in the summer"]
_WATCHING = ["watches", "looks on", "waits nearby", "sleeps", "takes a picture", "follows", "barks", "laughs"]


_SYLLABLES = ["ka", "lo", "mer", "vin", "dra", "tos", "el", "ar", "bel", "qui", "ron", "sa", "the", "gor", "lin",
              "pha", "nu", "ste", "vor", "ia", "cor", "den", "ul", "ma", "rix", "zan", "ho", "ber", "wyn", "ost"]
_WIKI_NOUNS = ["species", "battle", "album", "river", "village", "ship", "church", "novel", "election", "bridge",
               "regiment", "film", "castle", "league", "railway", "song", "painting", "festival", "island", "temple"]
_WIKI_VERBS = ["was built", "was described", "was released", "was fought", "was founded", "was recorded",
               "was restored", "was destroyed", "was named", "was discovered", "was published", "was rebuilt"]
_WIKI_ADJECTIVES = ["large", "small", "northern", "southern", "eastern", "western", "ancient", "modern",
                    "famous", "early", "late", "important", "rare", "common", "local", "national"]
_WIKI_OBJECTS = ["the army", "the government", "the local council", "a group of monks", "the band", "the navy",
                 "the company", "the king", "the museum", "the university", "a French engineer", "the railway company"]


def _name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()


def _wiki_sentence(rng: np.random.Generator, topic: str) -> str:
    pattern = int(rng.integers(0, 6))
    year = int(rng.integers(1500, 2015))
    if pattern == 0:
        words = f"The {topic} {rng.choice(_WIKI_VERBS)} in {year} by {rng.choice(_WIKI_OBJECTS)}"
    elif pattern == 1:
        low = int(rng.integers(2, 90))
        words = (f"It is {low} @-@ {low + int(rng.integers(2, 30))} metres long and lies in the "
                 f"{rng.choice(_WIKI_ADJECTIVES)} part of {_name(rng)}")
    elif pattern == 2:
        words = (f"In {year} , {_name(rng)} {_name(rng)} wrote that the {topic} was \" {rng.choice(_WIKI_ADJECTIVES)} \" "
                 f"and {rng.choice(_WIKI_ADJECTIVES)}")
    elif pattern == 3:
        what = f"The {rng.choice(_WIKI_NOUNS)} of {_name(rng)}"
        words = f"{what} had {int(rng.integers(2, 9))} @,@ {int(rng.integers(100, 999))} members"
    elif pattern == 4:
        mass = f"{int(rng.integers(1, 9))} @.@ {int(rng.integers(1, 9))}"
        words = f"Its mass is {mass} kg , about {int(rng.integers(2, 20))} lb"
    else:
        words = f"A {rng.choice(_WIKI_ADJECTIVES)} <unk> {rng.choice(_WIKI_VERBS)} near the {topic}"
    if rng.uniform() < 0.12 and pattern != 5:
        words = words.replace(" the ", " the <unk> ", 1)
    return words + " ."


def _wikitext(rng: np.random.Generator, articles: int) -> str:
    lines = [""]
    for _ in range(articles):
        topic = str(rng.choice(_WIKI_NOUNS))
        lines += [f" = {_name(rng)} {topic.capitalize()} = ", " "]
        for section in range(int(rng.integers(2, 5))):
            if section:
                lines += [f" = = {rng.choice(['History', 'Description', 'Legacy', 'Background', 'Reception'])} = = ", " "]
            for _ in range(int(rng.integers(1, 4))):
                lines.append(" " + " ".join(_wiki_sentence(rng, topic) for _ in range(int(rng.integers(2, 6)))) + " ")
                lines.append(" ")
    return "\n".join(lines) + "\n"


_PLAY_SPEAKERS = ["First Citizen", "Second Citizen", "MENENIUS", "CORIOLANUS", "All", "LUCIO", "ISABELLA",
                  "DUKE VINCENTIO", "KING RICHARD II", "QUEEN", "GLOUCESTER", "Nurse", "ROMEO", "JULIET"]
_PLAY_WORDS = {"start": ["Thou", "My lord,", "Nay,", "Good sir,", "What,", "O,", "I pray thee,", "Come,", "Alas,"],
               "verb": ["dost", "hath", "shall", "wilt", "must", "doth", "canst"],
               "rest": ["speak of honour", "hear me speak", "love the king", "go to the field", "bear this grief",
                        "stay awhile", "know the cause", "fear the night", "serve the state", "keep thy word",
                        "see the crown", "follow me hence", "leave this place", "trust my heart"]}


def _play(rng: np.random.Generator, lines: int) -> str:
    out = ["First Citizen:", "Before we proceed any further, hear me speak.", "", "All:", "Speak, speak.", ""]
    while len(out) < lines:
        out.append(f"{rng.choice(_PLAY_SPEAKERS)}:")
        for _ in range(int(rng.integers(1, 5))):
            start, who = rng.choice(_PLAY_WORDS["start"]), rng.choice(["thou", "we", "he", "she", "they"])
            out.append(f"{start} {who} {rng.choice(_PLAY_WORDS['verb'])} "
                       f"{rng.choice(_PLAY_WORDS['rest'])}{rng.choice(['.', ',', '!', '?', ';'])}")
        out.append("")
    return "\n".join(out[:lines]) + "\n"


def _corpus(root: Path, rng: np.random.Generator) -> None:
    folder = root / "text" / "corpus"
    (folder / "wikitext2").mkdir(parents=True, exist_ok=True)
    (folder / "multi30k_captions.txt").write_text("".join(caption(rng) + "\n" for _ in range(3000)), encoding="utf-8")
    (folder / "multi30k_README.md").write_text("Synthetic captions from a small grammar (tests/fixture_data.py).\n")
    (folder / "tinyshakespeare.txt").write_text(_play(rng, 2400), encoding="utf-8")
    (folder / "wikitext2" / "valid.txt").write_text(_wikitext(rng, 24), encoding="utf-8")
    (folder / "wikitext2" / "test.txt").write_text(_wikitext(rng, 16), encoding="utf-8")
    (folder / "wikitext2" / "README").write_text("Synthetic WikiText-2-like paragraphs (tests/fixture_data.py).\n")


def _variant(rng: np.random.Generator, sentence: str, changes: int) -> str:
    """``sentence`` with ``changes`` content words replaced by others of the same kind."""
    words = sentence.split()
    kinds = [COLOURS, _SUBJECTS, _AGES, _GARMENTS, _THINGS, _WATCHING[:1] + ["runs", "stands", "jumps"]]
    kind_of = {word: kind for kind in kinds for word in kind}
    slots = [i for i, word in enumerate(words) if word in kind_of]
    for i in rng.permutation(slots)[:changes]:
        words[i] = str(rng.choice([w for w in kind_of[words[i]] if w != words[i]]))
    return " ".join(words)


def _overlap(first: str, second: str) -> float:
    a, b = set(first.lower().split()), set(second.lower().split())
    return len(a & b) / len(a | b)


def _stsb_lines(rng: np.random.Generator, rows: int, split: str) -> list[str]:
    lines = []
    for index in range(rows):
        first = caption(rng)
        kind = index % 5
        if kind == 4:
            second = caption(rng)  # unrelated (shares only the grammar's function words)
        else:  # up to 1, 3, 5 or 7 words changed, a word more or less: few pairs with equal cosines
            words = _variant(rng, first, changes=int(rng.integers(0, 2 + 2 * kind))).split()
            if rng.uniform() < 0.5:
                words.insert(int(rng.integers(1, len(words))), str(rng.choice(_AGES + ["very", "also", "now", "still"])))
            if rng.uniform() < 0.3:
                del words[int(rng.integers(1, len(words) - 1))]
            second = " ".join(words)
        score = float(np.clip(5 * _overlap(first, second) ** 1.5 + rng.normal(0, 0.25), 0, 5))
        if index % 17 == 3:  # sentences with double quotes: no csv quoting in this format
            first = first.replace(" is ", ' is "', 1).rstrip(" .") + '" .'
        fields = ["main-captions", "MSRvid", f"2012{split}", f"{index:04d}",
                  f"{score:.3f}" if index % 7 else f"{round(score)}", first, second]
        if index % 23 == 5:  # trailing source fields, as some headlines rows have
            fields += ["Europe Media Monitor (http://emm.newsbrief.eu)"] * 2
        lines.append("\t".join(fields))
    return lines


def _stsb(root: Path, rng: np.random.Generator) -> None:
    folder = root / "text" / "stsb"
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "sts-train.csv"), ("dev", "sts-dev.csv")):
        (folder / name).write_text("\n".join(_stsb_lines(rng, STSB_ROWS[split], split)) + "\n", encoding="utf-8")
    (folder / "readme.txt").write_text("Synthetic STS-B-like pairs; scores follow word overlap (tests/fixture_data.py).\n")


_POSITIVE = ["wonderful", "delightful", "brilliant", "moving", "charming", "superb", "great", "funny", "warm", "smart"]
_NEGATIVE = ["dull", "tedious", "awful", "boring", "clumsy", "silly", "weak", "bland", "tiresome", "messy"]
_OBJECTIVE = ["the story follows", "the film is set in", "the director shot it in", "the plot concerns",
              "the movie begins in", "the sequel takes place in"]
_SUBJECTIVE = ["i think", "it feels", "frankly ,", "honestly ,", "to me ,", "i loved how"]
_REVIEW_TOPICS = ["the acting", "the script", "this movie", "the camera", "the battery", "the screen", "the sound",
                  "the remote control", "the ending", "the cast", "the player", "the menu"]


def _opinion(rng: np.random.Generator, words: list[str]) -> str:
    return f"{rng.choice(_REVIEW_TOPICS)} is {rng.choice(['really', 'quite', 'so', 'very', ''])} {rng.choice(words)} " \
           f"and {rng.choice(words)} {rng.choice(['.', '!', ', overall .'])}".replace("  ", " ")


def _two_files(folder: Path, names: tuple[str, str], sentences: tuple[list[str], list[str]], blank: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for (name, lines), blanks in zip(zip(names, sentences), (blank - blank // 2, blank // 2)):
        lines = list(lines)
        for position in range(blanks):
            lines.insert(5 + 7 * position, "")
        (folder / name).write_bytes("".join(f"{line} \n" if line else "\n" for line in lines).encode("latin-1"))


_QUESTIONS = {
    "ABBR": ["What does {} stand for ?", "What is the abbreviation for {} ?"],
    "DESC": ["How did {} develop ?", "Why is {} important ?", "What is {} ?"],
    "ENTY": ["What animal lives in {} ?", "What colour is the flag of {} ?", "What films featured {} ?"],
    "HUM": ["Who founded {} ?", "Who was the first king of {} ?", "Who wrote about {} ?"],
    "LOC": ["Where is {} ?", "What country is {} in ?", "Where can I find {} ?"],
    "NUM": ["How many people live in {} ?", "When was {} built ?", "How far is it from {} to the sea ?"],
}


def _senteval(root: Path, rng: np.random.Generator) -> None:
    base = root / "text" / "senteval"
    half = {task: SENTEVAL_SIZES[task]["all"] // 2 for task in ("MR", "CR", "SUBJ", "MPQA")}
    for task, names in (("MR", ("rt-polarity.neg", "rt-polarity.pos")), ("CR", ("custrev.neg", "custrev.pos"))):
        sentences = ([_opinion(rng, _NEGATIVE) for _ in range(half[task])], [_opinion(rng, _POSITIVE) for _ in range(half[task])])
        _two_files(base / task, names, sentences, SENTEVAL_BLANK_LINES.get(task, 0))
    subjective = [f"{rng.choice(_SUBJECTIVE)} {_opinion(rng, _POSITIVE + _NEGATIVE)}" for _ in range(half["SUBJ"])]
    objective = [f"{rng.choice(_OBJECTIVE)} {rng.choice(PLACES).split(' ', 1)[1]} , where {caption(rng).lower()}"
                 for _ in range(half["SUBJ"])]
    _two_files(base / "SUBJ", ("subj.objective", "subj.subjective"), (objective, subjective))
    phrases = ([f"{rng.choice(['very', 'rather', 'so'])} {rng.choice(_NEGATIVE)}" for _ in range(half["MPQA"])],
               [f"{rng.choice(['truly', 'quite', 'so'])} {rng.choice(_POSITIVE)}" for _ in range(half["MPQA"])])
    _two_files(base / "MPQA", ("mpqa.neg", "mpqa.pos"), phrases, SENTEVAL_BLANK_LINES["MPQA"])

    for split in ("train", "dev", "test"):
        count = SENTEVAL_SIZES["SST2"][split]
        labels = rng.integers(0, 2, count)
        (base / "SST" / "binary").mkdir(parents=True, exist_ok=True)
        (base / "SST" / "fine").mkdir(parents=True, exist_ok=True)
        (base / "SST" / "binary" / f"sentiment-{split}").write_text(
            "".join(f"{_opinion(rng, _POSITIVE if y else _NEGATIVE)} \t{y}\n" for y in labels), encoding="utf-8")
        fine = rng.integers(0, 5, count)
        words = {0: _NEGATIVE, 1: _NEGATIVE, 2: _POSITIVE + _NEGATIVE, 3: _POSITIVE, 4: _POSITIVE}
        (base / "SST" / "fine" / f"sentiment-{split}").write_text(
            "".join(f"{y} {_opinion(rng, words[int(y)])}\n" for y in fine), encoding="utf-8")

    (base / "TREC").mkdir(parents=True, exist_ok=True)
    coarse = list(_QUESTIONS)
    for split, name in (("train", "train_5500.label"), ("test", "TREC_10.label")):
        lines = []
        for index in range(SENTEVAL_SIZES["TREC"][split]):
            label = coarse[index % 6] if split == "test" else str(rng.choice(coarse))
            subject = f"{_name(rng)} {rng.choice(_WIKI_NOUNS)}"
            if split == "train" and index == 7:
                subject = "Mont Saint-Michel in Fr\u00e9jus"  # the latin-1 line a UTF-8 reader must not drop
            if split == "test" and index == 0:
                label, question = "NUM", "How far is it from Denver to Aspen ?"
            else:
                question = str(rng.choice(_QUESTIONS[label])).format(subject)
            lines.append(f"{label}:{'other' if label != 'NUM' else 'dist'} {question}\n")
        (base / "TREC" / name).write_bytes("".join(lines).encode("latin-1"))

    (base / "MRPC").mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "msr_paraphrase_train.txt"), ("test", "msr_paraphrase_test.txt")):
        lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for index in range(SENTEVAL_SIZES["MRPC"][split]):
            first = caption(rng)
            paraphrase = rng.uniform() < 0.6
            second = _variant(rng, first, 0).replace(" is ", " is now ", 1) if paraphrase else caption(rng)
            if split == "train" and index == 0:
                first, second, paraphrase = ("Amrozi accused his brother , whom he called \" the witness \" , of lying .",
                                             "Referring to him as only \" the witness \" , Amrozi accused his brother of lying .", True)
            lines.append(f"{int(paraphrase)}\t{100000 + 2 * index}\t{100001 + 2 * index}\t{first}\t{second}")
        (base / "MRPC" / name).write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")


_NEWS = {
    "World": ["the prime minister", "the united nations", "rebels", "the embassy", "peace talks", "the election"],
    "Sports": ["the striker", "the champions", "the coach", "the final", "the season", "the grand prix"],
    "Business": ["shares", "the central bank", "profits", "the merger", "oil prices", "the retailer"],
    "Sci/Tech": ["the software", "researchers", "the browser", "the spacecraft", "the chip maker", "spyware"],
}


def _agnews(root: Path, rng: np.random.Generator) -> None:
    folder = root / "text" / "agnews"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(AGNEWS_ROWS):
        label = AGNEWS_LABELS[int(rng.integers(0, 4))]
        subject, other = rng.choice(_NEWS[label], size=2, replace=False)
        text = f"{str(subject).capitalize()} said on {rng.choice(['Monday', 'Tuesday', 'Friday'])} that {other} " \
               f"{rng.choice(['rose', 'fell', 'won', 'lost', 'announced a plan', 'met again'])} in {_name(rng)}."
        if index % 9 == 4:
            text = text.replace(" said ", ' said "it is over" ', 1)  # quotes stay text in this tsv
        lines.append(f"{text}\t{label}")
    (folder / "dev_from_train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


# -------------------------------------------------------------------------------------------- pairs

#: place -> (sky colour, ground colour) of the photo's background
_PLACE_COLOURS = {place: (_rgb(i / len(PLACES), 0.25, 0.9), _rgb(i / len(PLACES) + 0.05, 0.6, 0.45))
                  for i, place in enumerate(PLACES)}


def _flickr(root: Path, rng: np.random.Generator) -> None:
    folder = root / "pairs" / "flickr8k_1k"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = [("image", "caption")]
    for photo in range(FLICKR_PHOTOS):
        name = f"{1000268201 + 7919 * photo}_{rng.integers(0, 16 ** 10):010x}.jpg"
        colour_index = int(rng.integers(0, len(COLOURS)))
        place = str(rng.choice(PLACES))
        subject = str(rng.choice(_SUBJECTS))
        height, width = int(rng.integers(60, 100)), int(rng.integers(70, 120))
        pixels = _scene(rng, _SUBJECTS.index(subject) % 10, height, width, colour=_named_colour(COLOURS[colour_index]),
                        background=_PLACE_COLOURS[place])
        (folder / "images" / name).write_bytes(_encode(pixels, "JPEG", quality=90))
        for _ in range(CAPTIONS_PER_PHOTO):
            rows.append((name, caption(rng, subject, COLOURS[colour_index], place)))
    with open(folder / "captions.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)  # captions with a comma are quoted


def _named_colour(name: str) -> np.ndarray:
    table = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (235, 220, 40),
             "black": (20, 20, 20), "white": (240, 240, 240), "brown": (130, 80, 40), "pink": (240, 130, 180),
             "orange": (245, 140, 20), "purple": (140, 40, 170)}
    return np.array(table[name], dtype=np.float64)


# --------------------------------------------------------------------------------------------- misc


def _misc(root: Path, rng: np.random.Generator) -> None:
    """Images of several sizes and modes, wav files at 8 and 16 kHz (not part of ../shared/data)."""
    from PIL import Image

    images = root / "misc" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rgb = _scene(rng, 3, 30, 40)
    Image.fromarray(rgb).save(images / "rgb_40x30.png")
    Image.fromarray(_scene(rng, 6, 48, 64)).save(images / "rgb_64x48.jpg", quality=90)
    Image.fromarray(_digit(rng, 4)).save(images / "gray_28x28.png")
    Image.fromarray(_scene(rng, 0, 23, 17)).convert("L").save(images / "gray_17x23.jpg", quality=90)
    rgba = np.concatenate([_scene(rng, 1, 50, 50), np.full((50, 50, 1), 128, np.uint8)], axis=2)
    rgba[:10, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(images / "rgba_50x50.png")
    palette = Image.fromarray(_scene(rng, 7, 21, 33)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(images / "palette_33x21.png")
    audio = root / "misc" / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    for rate in (8000, 16000):
        _write_wav(audio / f"word_{rate // 1000}k.wav", _word(rng, 7, 2, rate), rate)
