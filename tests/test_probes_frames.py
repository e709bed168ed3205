"""Frame-level probes on frame-aligned phone labels (LibriSpeech-like, tests/fixture_data.py), and layer selection."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from multissl.probes.frames import combine_layers, flatten_frames, frame_probe, stack_layers




def phone_segments(data_root, length: int = 150) -> list[torch.Tensor]:
    """Phone labels laid out as LibriSpeech's (41 classes, 100 frames/s), cut into segments of ``length`` frames."""
    segments = []
    for line in (data_root / "audio/librispeech_mini/phone_labels.txt").read_text().splitlines():
        labels = torch.tensor([int(v) for v in line.split()[1:]])
        segments += list(labels.split(length))
    return segments


def synthetic_frames(labels: torch.Tensor, num_classes: int, generator: torch.Generator, informative: bool = True):
    """Features [T, D] carrying the phone identity (one-hot + noise) or pure noise."""
    noise = torch.randn(len(labels), num_classes, generator=generator)
    return noise + 4.0 * torch.nn.functional.one_hot(labels, num_classes).float() if informative else noise


def padded(segments: list[torch.Tensor], padding_value) -> torch.Tensor:
    return pad_sequence(segments, batch_first=True, padding_value=padding_value)


def test_frame_probe_on_real_phone_alignments(data_root):
    segments = phone_segments(data_root)
    generator = torch.Generator().manual_seed(0)
    frames = [synthetic_frames(s, 41, generator) for s in segments]
    split = int(0.7 * len(segments))
    labels, features = padded(segments, -100), padded(frames, 0.0)
    mask = padded([torch.ones(len(s), dtype=torch.bool) for s in segments], False)
    # padding carries garbage that would be wrong if it were used
    features[~mask] = 1e3

    result = frame_probe(features[:split], labels[:split], mask[:split], features[split:], labels[split:], mask[split:],
                         weight_decays=(1e-3,), max_iter=60)
    expected_test_frames = int(mask[split:].sum())
    assert result.num_test == expected_test_frames
    assert result.accuracy > 0.9


def test_layer_weighted_frame_probe_picks_the_phonetic_layer(data_root):
    segments = phone_segments(data_root)[:30]
    generator = torch.Generator().manual_seed(1)
    # three layers per frame: noise, phonetic, noise -> [N, T, L, D]
    stacks = [torch.stack([synthetic_frames(s, 41, generator, informative=(layer == 1)) for layer in range(3)], dim=1)
              for s in segments]
    labels, features = padded(segments, -100), padded(stacks, 0.0)
    mask = labels != -100
    result = frame_probe(features[:20], labels[:20], mask[:20], features[20:], labels[20:], mask[20:],
                         weight_decays=(1e-3,), max_iter=60)
    assert int(torch.tensor(result.layer_weights).argmax()) == 1
    assert result.accuracy > 0.85


def test_flatten_frames_keeps_valid_labelled_frames_in_order():
    frames = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    labels = torch.tensor([[1, 2, -100], [3, 4, 5]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    x, y, utterance = flatten_frames(frames, labels, mask)
    assert y.tolist() == [1, 2, 3, 4] and utterance.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(x, frames.view(6, 2)[[0, 1, 3, 4]])


def test_misaligned_frame_labels_are_an_error_that_says_so():
    with pytest.raises(ValueError, match="aligned to the encoder's frame rate"):
        flatten_frames(torch.randn(2, 50, 4), torch.zeros(2, 100, dtype=torch.long))


def test_combine_layers():
    layers = torch.randn(5, 3, 4)  # [N, L, D]
    torch.testing.assert_close(combine_layers(layers, "last"), layers[:, -1])
    torch.testing.assert_close(combine_layers(layers, "mean"), layers.mean(dim=1))
    torch.testing.assert_close(combine_layers(layers, 0), layers[:, 0])
    torch.testing.assert_close(combine_layers(layers, [0.0, 2.0, 2.0]), (layers[:, 1] + layers[:, 2]) / 2)
    with pytest.raises(ValueError, match="out of range"):
        combine_layers(layers, 3)
    stacked = stack_layers([layers[:, 0], layers[:, 1], layers[:, 2]])
    torch.testing.assert_close(stacked, layers)
