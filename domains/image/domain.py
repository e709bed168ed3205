"""``ImageDomain``: the image modality adapter (loading, collate, batched views, encoders)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from domains.base import DataConfig, Domain, EncoderConfig, RawBatch, Views
from multissl.features import Encoder
from multissl.views import ViewRequest

from . import views
from .config import ImageConfig
from .encoders import build_image_encoder
from .loading import collate_images, load_image_dataset

__all__ = ["ImageDomain"]


class ImageDomain(Domain):
    """Images: ``load`` -> ``collate`` (uint8 [B, C, S, S], CPU) -> ``make_views`` (on device).

    ``load`` remembers the DataConfig's ``on_bad_sample`` policy; ``collate`` (which the engine hands
    to DataLoader workers, where the domain is pickled with that setting) applies it. Rows carry
    their ``row_index`` (and file path) so a bad sample is named. Call ``load`` before building the
    DataLoader; without it collate stops at the first bad sample ("error").
    """

    name: ClassVar[str] = "image"
    config_class: ClassVar[type] = ImageConfig
    view_kinds: ClassVar[tuple[str, ...]] = ("plain", "augmented", "masked", "pretext", "corrupted")

    def __init__(self, config: ImageConfig | None = None) -> None:
        super().__init__(config)
        self.on_bad_sample = "error"

    def load(self, data: DataConfig):
        if data.on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {data.on_bad_sample!r}")
        dataset = load_image_dataset(data)
        self.on_bad_sample = data.on_bad_sample
        return dataset

    def collate(self, rows: list[dict[str, Any]]) -> RawBatch:
        return collate_images(rows, self.config, self.on_bad_sample)

    def make_views(self, batch: RawBatch, request: ViewRequest, generator: torch.Generator) -> Views:
        self.check_view_kind(request)
        if "images" not in batch:
            raise KeyError(f"image batch has no 'images' (keys: {sorted(batch)}); build it with ImageDomain.collate")
        images = batch["images"]
        if request.kind == "plain":
            if request.options:
                raise ValueError(f"view kind 'plain' takes no options, got {sorted(request.options)}")
            result = views.plain_views(images, self.config)
        else:
            builder = {"augmented": views.augmented_views, "masked": views.masked_views,
                       "pretext": views.pretext_views, "corrupted": views.corrupted_views}[request.kind]
            result = builder(images, self.config, request, generator)
        # pretext views use "labels" for the pretext target; dataset labels pass through elsewhere
        if request.kind != "pretext" and batch.get("labels") is not None:
            result["labels"] = batch["labels"]
        result["skipped"] = batch.get("skipped", 0)
        return result

    def build_encoder(self, config: EncoderConfig) -> Encoder:
        return build_image_encoder(config, self.config)
