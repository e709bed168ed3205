"""How the engine lines up rows of several domains: by row, or by label across two datasets."""

from __future__ import annotations

import datasets
import pytest

from multissl.train import AlignedRows


def table(labels, tag):
    return datasets.Dataset.from_dict({"label": labels, "item": [f"{tag}{i}" for i in range(len(labels))]})


def test_row_pairing_needs_equal_lengths():
    rows = AlignedRows({"a": table([0, 1], "a"), "b": table([1, 0], "b")})
    assert rows[1] == {"a": {"label": 1, "item": "a1"}, "b": {"label": 0, "item": "b1"}}
    with pytest.raises(ValueError, match="different numbers of rows"):
        AlignedRows({"a": table([0, 1], "a"), "b": table([0], "b")})


def test_label_pairing_matches_labels_and_cycles_through_each_class():
    images = table([0, 1, 0, 1, 0, 0, 1], "img")
    sounds = table([1, 0, 0, 1, 1], "snd")
    rows = AlignedRows({"image": images, "audio": sounds}, pairing="label", seed=3)
    assert len(rows) == len(images)
    pairs = [rows[i] for i in range(len(rows))]
    assert all(p["image"]["label"] == p["audio"]["label"] for p in pairs)
    # every class uses all its partner rows before any repeats
    zeros = [p["audio"]["item"] for p in pairs if p["image"]["label"] == 0]
    assert sorted(zeros[:2]) == ["snd1", "snd2"] and zeros[2:] == zeros[:2]
    ones = [p["audio"]["item"] for p in pairs if p["image"]["label"] == 1]
    assert sorted(ones) == ["snd0", "snd3", "snd4"]
    # fixed for the run: the same seed gives the same pairs (a resumed run sees the same data)
    again = AlignedRows({"image": images, "audio": sounds}, pairing="label", seed=3)
    assert [again[i] for i in range(len(again))] == pairs


def test_label_pairing_errors_name_the_domain():
    with pytest.raises(ValueError, match="domain 'audio' has no rows with label"):
        AlignedRows({"image": table([0, 2], "i"), "audio": table([0, 1], "s")}, pairing="label")
    unlabeled = datasets.Dataset.from_dict({"item": ["x", "y"]})
    with pytest.raises(ValueError, match="label column in domain 'audio'"):
        AlignedRows({"image": table([0, 1], "i"), "audio": unlabeled}, pairing="label")
