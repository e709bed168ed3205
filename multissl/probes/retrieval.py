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

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["retrieval_recall", "DEFAULT_TEMPLATES", "zero_shot_classifier", "zero_shot_classify"]

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
