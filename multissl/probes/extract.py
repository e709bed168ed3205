"""Run a frozen encoder over a dataset through the Domain contract: the one place probes get features.

``domain.load`` -> DataLoader(collate_fn=domain.collate) -> ``domain.make_views(batch,
ViewRequest("plain"), generator)`` -> ``encoder(**views["inputs"])`` under ``torch.no_grad()`` in
eval mode. No concrete domain is imported: anything that fulfils ``multissl.domain.Domain`` works.

Skipped samples (a domain under ``on_bad_sample="skip"`` reports them per batch as
``batch["skipped"]``) are summed and returned, never dropped silently.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from multissl.domain import move_to_device
from multissl.features import Encoder, Features, masked_mean
from multissl.views import ViewRequest

if TYPE_CHECKING:  # typed against the contract; no concrete domain is imported
    from multissl.domain import DataConfig, Domain

__all__ = ["ExtractedFeatures", "extract_from_dataset", "extract_features", "embed_texts", "class_names_of"]


@dataclass
class ExtractedFeatures:
    """Features of every kept row, in dataset order, on the CPU.

    pooled:        [N, D] the probes' representation.
    labels:        [N] when the dataset has a label column, else None.
    sequence/mask: [N, T_max, D] / [N, T_max] bool, padded across batches (``sequences=True``).
    layers:        layer stacks from ``Features.hidden_states`` (``hidden_states=True``): [N, L, D]
                   mean-pooled per layer, or [N, T_max, L, D] per frame with ``sequences``.
    frame_labels:  [N, T_max] on the encoder's frames (padding -100) when batches or views carry
                   "frame_labels" (see :func:`_aligned_frame_labels`), else None.
    rows:          rows read (kept + skipped). skipped: rows the domain skipped as bad samples.
    """

    pooled: Tensor
    labels: Tensor | None = None
    sequence: Tensor | None = None
    mask: Tensor | None = None
    layers: Tensor | None = None
    frame_labels: Tensor | None = None
    rows: int = 0
    skipped: int = 0


def _pool_layer(hidden: Tensor, features: Features) -> Tensor:
    """One hidden layer [B, T, D] -> [B, D]: masked mean over positions (``Features.mask`` where it
    fits the layer). Always a mean, whatever ``encoder.pooling`` is: encoders differ in whether
    their hidden states keep the CLS token (ViT encoders may drop it), and a mean of the weighted
    sum of layers equals the weighted sum of per-layer means (SUPERB pools after the weighting).
    Convnet stages reported already pooled ([B, D]) pass through."""
    if hidden.dim() == 2:
        return hidden
    mask = features.mask if features.mask is not None and features.mask.shape == hidden.shape[:2] else None
    return masked_mean(hidden, mask)


def _aligned_frame_labels(labels: Tensor, domain: "Domain", encoder: Encoder, num_frames: int) -> Tensor:
    """Frame labels [B, S] -> [B, num_frames] on the encoder's frames.

    A domain whose labels come at their own rate offers ``domain.encoder_frame_labels(labels,
    encoder.frame_geometry, num_frames)`` (the audio domain: 100 labels/s onto the encoder's
    frames); otherwise the labels must already have one entry per encoder frame.
    """
    align = getattr(domain, "encoder_frame_labels", None)
    geometry = getattr(encoder, "frame_geometry", None)
    if align is not None and geometry is not None:
        return align(labels, geometry, num_frames)
    if labels.shape[1] != num_frames:
        raise ValueError(f"frame labels have {labels.shape[1]} entries per row but the encoder gives {num_frames} "
                         "frames, and the domain offers no encoder_frame_labels() to align them")
    return labels


def _pad_frames(parts: list[Tensor], value: float | int) -> Tensor:
    """Concatenate per-batch [B, T_b, ...] tensors along rows, padding T to the longest batch."""
    rows = [row for part in parts for row in part]
    return pad_sequence(rows, batch_first=True, padding_value=value)


@torch.no_grad()
def extract_from_dataset(
    encoder: Encoder,
    domain: "Domain",
    dataset: Iterable[dict[str, Any]],
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    sequences: bool = False,
    hidden_states: bool = False,
    seed: int = 0,
) -> ExtractedFeatures:
    """Features of ``dataset`` (rows as ``domain.load`` returns them); see :class:`ExtractedFeatures`.

    ``hidden_states=True`` calls ``encoder(**inputs, output_hidden_states=True)`` and expects
    ``Features.hidden_states`` back. The encoder's train/eval mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else encoder.device
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=domain.collate
    )
    generator = torch.Generator(device=device).manual_seed(seed)  # plain views draw nothing; the contract wants one
    was_training = encoder.training
    encoder.eval()
    pooled, labels, sequence, masks, layers, frame_labels = [], [], [], [], [], []
    skipped = 0
    try:
        for batch in loader:
            skipped += int(batch.get("skipped", 0))
            batch = move_to_device(batch, device)
            views = domain.make_views(batch, ViewRequest("plain"), generator)
            if hidden_states:
                try:
                    features = encoder(**views["inputs"], output_hidden_states=True)
                except TypeError as error:
                    raise TypeError(f"{type(encoder).__name__} does not take output_hidden_states=True ({error}); "
                                    "layer-weighted probes need it") from None
                if features.hidden_states is None:
                    raise ValueError(f"{type(encoder).__name__} returned no hidden_states although asked for them")
            else:
                features = encoder(**views["inputs"])
            if features.pooled.shape[0] == 0:
                continue
            pooled.append(features.pooled.float().cpu())
            batch_labels = views.get("labels", batch.get("labels"))
            if batch_labels is not None:
                labels.append(torch.as_tensor(batch_labels).cpu())
            if sequences:
                if features.sequence is None:
                    raise ValueError(f"{type(encoder).__name__} has no frame/token sequence; frame probes need one")
                sequence.append(features.sequence.float().cpu())
                mask = features.mask if features.mask is not None else torch.ones(features.sequence.shape[:2], dtype=torch.bool)
                masks.append(mask.bool().cpu())
                batch_frame_labels = views.get("frame_labels", batch.get("frame_labels"))
                if batch_frame_labels is not None:
                    aligned = _aligned_frame_labels(batch_frame_labels.long(), domain, encoder, features.sequence.shape[1])
                    frame_labels.append(aligned.cpu())
            if hidden_states:
                if sequences:
                    layers.append(_stack(features.hidden_states, features.sequence.shape[1]).float().cpu())
                else:
                    stacked = [_pool_layer(h, features) for h in features.hidden_states]
                    layers.append(torch.stack(stacked, dim=1).float().cpu())
    finally:
        encoder.train(was_training)

    if not pooled:
        raise ValueError(f"no rows left to probe: the dataset was empty or all {skipped} rows were skipped as bad samples")
    result = ExtractedFeatures(pooled=torch.cat(pooled), skipped=skipped)
    result.rows = result.pooled.shape[0] + skipped
    if labels:
        if sum(len(part) for part in labels) != result.pooled.shape[0]:
            raise ValueError("some batches carry labels and others do not; check the label column mapping")
        result.labels = torch.cat(labels).long()
    if sequences:
        result.sequence = _pad_frames(sequence, 0.0)
        result.mask = _pad_frames(masks, False)
        if frame_labels:
            result.frame_labels = _pad_frames(frame_labels, -100)
    if layers:
        result.layers = _pad_frames(layers, 0.0) if sequences else torch.cat(layers)
    return result


def _stack(hidden_states: Sequence[Tensor], frames: int) -> Tensor:
    if any(h.dim() != 3 or h.shape[1] != frames for h in hidden_states):
        shapes = sorted({tuple(h.shape) for h in hidden_states})
        raise ValueError(f"hidden states {shapes} do not all have the sequence's {frames} frames; cannot weight them per frame")
    return torch.stack(list(hidden_states), dim=2)


def extract_features(
    encoder: Encoder,
    domain: "Domain",
    data_config: "DataConfig",
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    sequences: bool = False,
    hidden_states: bool = False,
    seed: int = 0,
) -> ExtractedFeatures:
    """``domain.load(data_config)`` then :func:`extract_from_dataset` (same arguments)."""
    dataset = domain.load(data_config)
    return extract_from_dataset(encoder, domain, dataset, batch_size, num_workers, device, sequences, hidden_states, seed)


def embed_texts(
    encoder: Encoder,
    domain: "Domain",
    texts: Sequence[str],
    batch_size: int = 64,
    text_role: str = "text",
    device: torch.device | str | None = None,
) -> Tensor:
    """Pooled embeddings [len(texts), D] of in-memory sentences, through the domain's own loading.

    The sentences go to a temporary JSON-lines file read with ``domain.load`` (column ``text``
    mapped to the role ``text_role``), so they are tokenised exactly like training data. A skipped
    sentence would misalign pairs, so any skip is an error naming how many.
    """
    from multissl.domain import DataConfig  # the contract module, not a concrete domain

    texts = list(texts)
    if not texts:
        raise ValueError("embed_texts got no sentences")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"sentence {index} is a {type(text).__name__}, not a str")
    with tempfile.TemporaryDirectory(prefix="multissl-embed-") as folder:
        path = Path(folder) / "sentences.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for text in texts:
                handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        config = DataConfig(path=str(path), format="json", columns={text_role: "text"})
        extracted = extract_features(encoder, domain, config, batch_size=batch_size, device=device)
    if extracted.skipped or extracted.pooled.shape[0] != len(texts):
        raise ValueError(f"the text domain skipped {extracted.skipped} of {len(texts)} sentences (empty or "
                         "untokenisable?); pair and class embeddings would misalign")
    return extracted.pooled


def class_names_of(dataset: Any, column: str | None = None) -> list[str] | None:
    """Class names from a ``datasets`` ClassLabel column: ``column`` if given, else the "label"
    column (the role name domains rename to), else the only ClassLabel column; None otherwise."""
    features = getattr(dataset, "features", None)
    if not features:
        return None
    from datasets import ClassLabel

    candidates = {name: feature for name, feature in features.items() if isinstance(feature, ClassLabel)}
    if column is None and "label" in candidates:
        column = "label"
    if column is not None:
        feature = candidates.get(column)
        return list(feature.names) if feature is not None else None
    return list(next(iter(candidates.values())).names) if len(candidates) == 1 else None
