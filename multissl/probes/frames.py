"""Frame-level probes (phone classification) and layer selection for layer-weighted probes.

Frame-level phone recognition as SUPERB's PR-by-frame / s3prl's ``phone_linear`` task (Yang et al.
2021): a linear classifier on every frame of the frozen encoder, labels aligned to the encoder's
frame rate (the audio domain does the alignment), padding excluded, accuracy over frames.

Layer-weighted features (SUPERB's weighted sum; s3prl ``Featurizer``): every trained probe accepts
[N, L, D] layer stacks and learns the softmax weights with its head
(:class:`multissl.probes.classification.LayerWeighting`); probes with nothing to train (kNN, STS,
retrieval) take one layer, the mean of layers, or weights a trained probe learned
(:func:`combine_layers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from multissl.probes.classification import LinearProbeResult, linear_probe

__all__ = ["stack_layers", "combine_layers", "flatten_frames", "frame_probe"]


def stack_layers(hidden_states: Sequence[Tensor]) -> Tensor:
    """Tuple of L per-layer tensors [B, ..., D] -> one stack with the layer axis before D: [B, ..., L, D]."""
    if not hidden_states:
        raise ValueError("no hidden states: ask the encoder for them (output_hidden_states=True)")
    shapes = {tuple(h.shape) for h in hidden_states}
    if len(shapes) != 1:
        raise ValueError(f"hidden states differ in shape {sorted(shapes)}; a weighted sum needs one shape")
    return torch.stack(list(hidden_states), dim=-2)


def combine_layers(layers: Tensor, choice: str | int | Sequence[float] | Tensor = "last") -> Tensor:
    """Reduce a layer stack [..., L, D] to [..., D] for probes that train nothing.

    choice: "last", "mean", a layer index (0 = embeddings), or L weights (e.g. the softmax weights a
    layer-weighted linear probe learned; they are renormalised to sum to 1).
    """
    num_layers = layers.shape[-2]
    if choice == "last":
        return layers[..., -1, :]
    if choice == "mean":
        return layers.mean(dim=-2)
    if isinstance(choice, int):
        if not -num_layers <= choice < num_layers:
            raise ValueError(f"layer {choice} out of range for {num_layers} layers")
        return layers[..., choice, :]
    if isinstance(choice, str):
        raise ValueError(f"unknown layer choice {choice!r}; use 'last', 'mean', an index or weights")
    weights = torch.as_tensor(choice, dtype=layers.dtype, device=layers.device)
    if weights.shape != (num_layers,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"layer weights must be {num_layers} non-negative numbers, got {weights.tolist()}")
    return torch.einsum("l,...ld->...d", weights / weights.sum(), layers)


def flatten_frames(
    frames: Tensor, labels: Tensor, mask: Tensor | None = None, ignore_index: int = -100
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the labelled, valid frames: (features [M, D] or [M, L, D], labels [M], utterance ids [M]).

    frames [N, T, D] or [N, T, L, D]; labels [N, T] aligned to the encoder's frame rate (label t
    belongs to frame t); mask [N, T] True on real frames (None: all real). Frames labelled
    ``ignore_index`` are dropped too (SUPERB ignores them the same way).
    """
    if frames.dim() not in (3, 4):
        raise ValueError(f"frames must be [N, T, D] or [N, T, L, D], got {tuple(frames.shape)}")
    if labels.shape != frames.shape[:2]:
        raise ValueError(
            f"frame labels {tuple(labels.shape)} do not match frames {tuple(frames.shape[:2])}: labels must be "
            "aligned to the encoder's frame rate first (one label per encoder frame)"
        )
    if labels.dtype.is_floating_point:
        raise ValueError(f"frame labels must be integer class ids, got {labels.dtype}")
    keep = labels != ignore_index
    if mask is not None:
        if mask.shape != labels.shape:
            raise ValueError(f"frame mask {tuple(mask.shape)} must match labels {tuple(labels.shape)}")
        keep &= mask.bool()
    utterance = torch.arange(frames.shape[0], device=frames.device)[:, None].expand_as(labels)
    return frames[keep], labels[keep], utterance[keep]


def frame_probe(
    train_frames: Tensor,
    train_labels: Tensor,
    train_mask: Tensor | None,
    test_frames: Tensor,
    test_labels: Tensor,
    test_mask: Tensor | None,
    **probe_options: Any,
) -> LinearProbeResult:
    """Frame accuracy of a linear classifier on frozen frame features (phone classification).

    Shapes as :func:`flatten_frames`. The validation split for the weight-decay choice holds out
    whole utterances (frames of one utterance are not independent). ``probe_options`` go to
    :func:`multissl.probes.classification.linear_probe` (e.g. ``optimizer="adam", batch_size=4096``
    for millions of frames).
    """
    x_train, y_train, utterances = flatten_frames(train_frames, train_labels, train_mask)
    x_test, y_test, _ = flatten_frames(test_frames, test_labels, test_mask)
    if "validation" not in probe_options and "groups" not in probe_options and len(torch.unique(utterances)) >= 2:
        probe_options["groups"] = utterances.cpu()
    return linear_probe(x_train, y_train, x_test, y_test, **probe_options)
