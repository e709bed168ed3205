"""Cross-modal probes: image<->text retrieval recall@k and zero-shot classification.

Retrieval (Karpathy & Fei-Fei 2015 protocol, as CLIP and open_clip report it on Flickr/COCO):
cosine similarity between every image and every caption. Image -> text: a query image is a hit at
k when ANY of its captions (Flickr has 5 per image) is among the k most similar captions.
Text -> image: a caption is a hit when its own image is among the k most similar images.

Zero-shot classification (CLIP, Radford et al. 2021, §3.1.4; open_clip ``zero_shot_classifier``):
embed each class name inside several prompt templates, L2-normalise, average over templates,
L2-normalise again; an image's prediction is the class whose text embedding is most similar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["retrieval_recall", "DEFAULT_TEMPLATES", "zero_shot_classifier", "zero_shot_classify",
           "joint_zero_shot_classifier", "joint_zero_shot_predict"]

#: a few generic prompts; pass dataset-specific ones for serious comparisons
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a picture of a {}.",
    "an image showing a {}.",
)


def _normalised(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN/inf values")
    return F.normalize(x.float(), dim=1)


@torch.no_grad()
def retrieval_recall(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    text_to_image: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@k (fraction in [0, 1]) in both directions.

    image_embeddings [N_img, D], text_embeddings [N_txt, D]; ``text_to_image`` [N_txt] long: the
    row of the image each caption describes (every image needs at least one caption). Returns
    ``{"image_to_text_recall@k": ..., "text_to_image_recall@k": ...}`` for each k (k clamped to
    the gallery size). Queries are scored ``chunk_size`` at a time.
    """
    images = _normalised(image_embeddings, "image_embeddings")
    texts = _normalised(text_embeddings, "text_embeddings").to(images.device)
    owner = torch.as_tensor(text_to_image, device=images.device).long()
    if images.shape[1] != texts.shape[1]:
        raise ValueError(f"image width {images.shape[1]} != text width {texts.shape[1]}: embed both into one space")
    if owner.shape != (texts.shape[0],) or owner.min() < 0 or owner.max() >= images.shape[0]:
        raise ValueError(f"text_to_image must be [{texts.shape[0]}] rows in [0, {images.shape[0]})")
    captions_per_image = torch.bincount(owner, minlength=images.shape[0])
    if (captions_per_image == 0).any():
        missing = (captions_per_image == 0).nonzero().flatten()[:5].tolist()
        raise ValueError(f"images {missing} ... have no caption; every image needs one to be a retrieval query")

    results: dict[str, float] = {}
    k_images = {k: min(k, texts.shape[0]) for k in ks}
    hits = {k: 0 for k in ks}
    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start : start + chunk_size]
        query_ids = torch.arange(start, start + chunk.shape[0], device=images.device)
        top = (chunk @ texts.T).topk(max(k_images.values()), dim=1).indices  # [c, k_max] caption rows
        is_own_caption = owner[top] == query_ids[:, None]
        for k, k_used in k_images.items():
            hits[k] += int(is_own_caption[:, :k_used].any(dim=1).sum())
    for k in ks:
        results[f"image_to_text_recall@{k}"] = hits[k] / images.shape[0]

    k_texts = {k: min(k, images.shape[0]) for k in ks}
    hits = {k: 0 for k in ks}
    for start in range(0, texts.shape[0], chunk_size):
        chunk = texts[start : start + chunk_size]
        top = (chunk @ images.T).topk(max(k_texts.values()), dim=1).indices
        is_own_image = top == owner[start : start + chunk.shape[0], None]
        for k, k_used in k_texts.items():
            hits[k] += int(is_own_image[:, :k_used].any(dim=1).sum())
    for k in ks:
        results[f"text_to_image_recall@{k}"] = hits[k] / texts.shape[0]
    return results


@torch.no_grad()
def zero_shot_classifier(
    embed_texts: Callable[[list[str]], Tensor],
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> Tensor:
    """Class embeddings [C, D]: per class, the normalised mean of its normalised prompt embeddings.

    Templates hold one ``{}`` where the class name goes (``"a photo of a {}."``).
    """
    if not class_names or not templates:
        raise ValueError("zero-shot classification needs at least one class name and one template")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must contain exactly one '{{}}' for the class name")
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = F.normalize(embed_texts(prompts).float(), dim=1)
    if embeddings.shape[0] != len(prompts):
        raise ValueError(f"embed_texts returned {embeddings.shape[0]} rows for {len(prompts)} prompts")
    per_class = embeddings.view(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=1)


@torch.no_grad()
def zero_shot_classify(
    image_embeddings: Tensor, class_embeddings: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Top-k accuracy (fractions) of argmax cosine similarity to the class embeddings [C, D]."""
    images = _normalised(image_embeddings, "image_embeddings")
    classes = _normalised(class_embeddings, "class_embeddings").to(images.device)
    labels = torch.as_tensor(labels, device=images.device).long()
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be [{images.shape[0]}], got {tuple(labels.shape)}")
    top = (images @ classes.T).topk(min(max(ks), classes.shape[0]), dim=1).indices
    correct = top == labels[:, None]
    return {f"top{k}_accuracy": float(correct[:, : min(k, classes.shape[0])].any(dim=1).float().mean()) for k in ks}


def _tokenizer_of(encoder: Any) -> Callable[[list[str]], dict[str, Tensor]]:
    tokenizer = encoder.processor
    if tokenizer is None or not callable(tokenizer):
        raise ValueError("this side's encoder carries no tokenizer (encoder.processor); pass tokenize=")
    return lambda texts: dict(tokenizer(texts, padding=True, truncation=True, return_tensors="pt"))


@torch.no_grad()
def joint_zero_shot_classifier(
    clip: Any,
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    *,
    text_side: int = 1,
    tokenize: Callable[[list[str]], dict[str, Tensor]] | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Class embeddings [C, projection_dim] in the joint space of a cross-modal objective such as
    :class:`multissl.objectives.clip.CLIP` (anything with ``side(i) -> (encoder, projection)`` and
    ``embed(i, inputs)``), during or after training (CLIP, section 3.1.4).

    Each class name fills every template (one ``{}`` each); the prompts are encoded by the
    ``text_side`` encoder and projected, the L2-normalised prompt embeddings are averaged per class
    and re-normalised (:func:`zero_shot_classifier`, fed the joint-space embedder).
    ``tokenize`` maps a list of strings to that encoder's inputs (default: the encoder's own
    tokenizer, ``encoder.processor``, padding and truncating). ``templates`` None:
    ``DEFAULT_TEMPLATES`` ("a photo of a {}." ...). Runs in eval mode (no dropout) and restores the
    mode it found.
    """
    encoder = clip.side(text_side)[0]
    tokenize = tokenize or _tokenizer_of(encoder)
    device = next(clip.parameters()).device

    def embed_prompts(prompts: list[str]) -> Tensor:
        parts = []
        for start in range(0, len(prompts), batch_size):
            inputs = {k: v.to(device) for k, v in tokenize(prompts[start : start + batch_size]).items()}
            parts.append(clip.embed(text_side, inputs))
        return torch.cat(parts)

    was_training = clip.training
    clip.eval()
    try:
        return zero_shot_classifier(embed_prompts, list(class_names), list(templates or DEFAULT_TEMPLATES))
    finally:
        clip.train(was_training)


@torch.no_grad()
def joint_zero_shot_predict(clip: Any, inputs: dict[str, Tensor], class_embeddings: Tensor, *,
                      side: int = 0) -> tuple[Tensor, Tensor]:
    """Classify one side's encoder inputs by cosine similarity to ``class_embeddings`` [C, P].

    Returns (predicted class Long[B], cosine similarities [B, C]). Runs in eval mode.
    """
    was_training = clip.training
    clip.eval()
    try:
        similarities = clip.embed(side, inputs) @ F.normalize(class_embeddings.float(), dim=-1).T
    finally:
        clip.train(was_training)
    return similarities.argmax(dim=1), similarities
