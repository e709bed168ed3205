"""``ImageDomain``: the image modality adapter (loading, collate, batched views, encoders)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from multissl.domain import DataConfig, Domain, EncoderConfig, RawBatch, Views
from multissl.features import Encoder
from multissl.views import ViewRequest

from . import views
from .config import ImageConfig
from .encoders import build_image_encoder, preprocessing_of_processor
from .loading import ROLES, collate_images, image_root_of, load_image_dataset

__all__ = ["ImageDomain"]


class ImageDomain(Domain):
    """Images: ``load`` -> ``collate`` (uint8 [B, C, S, S], CPU) -> ``make_views`` (on device).

    ``load`` remembers what collate needs from the DataConfig: the ``on_bad_sample`` policy and the
    folder relative image paths are read from (``ImageConfig.image_root``, else the data's folder).
    ``collate`` runs in DataLoader workers, where the domain is pickled with both. Rows carry their
    ``row_index`` (and file path) so a bad sample is named. Call ``load`` before building the
    DataLoader; without it collate stops at the first bad sample ("error").
    """

    name: ClassVar[str] = "image"
    config_class: ClassVar[type] = ImageConfig
    roles: ClassVar[tuple[str, ...]] = ROLES
    view_kinds: ClassVar[tuple[str, ...]] = ("plain", "augmented", "masked", "sequence", "pretext", "corrupted")
    preprocessing_fields: ClassVar[tuple[str, ...]] = ("image_size", "channels", "mean", "std", "resize", "resample",
                                                       "patch_size", "color_space")

    def __init__(self, config: ImageConfig | None = None) -> None:
        super().__init__(config)
        self.on_bad_sample = "error"
        self.image_root = self.config.image_root

    def load(self, data: DataConfig):
        if data.on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {data.on_bad_sample!r}")
        dataset = load_image_dataset(data)
        self.on_bad_sample = data.on_bad_sample
        self.image_root = image_root_of(data, self.config.image_root)
        return dataset

    def collate(self, rows: list[dict[str, Any]]) -> RawBatch:
        return collate_images(rows, self.config, self.on_bad_sample, self.image_root)

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
                       "sequence": views.patch_grid_views, "pretext": views.pretext_views,
                       "corrupted": views.corrupted_views}[request.kind]
            result = builder(images, self.config, request, generator)
        # pretext views use "labels" for the pretext target; dataset labels pass through elsewhere
        if request.kind != "pretext" and batch.get("labels") is not None:
            result["labels"] = batch["labels"]
        if batch.get("indices") is not None:  # the rows' sample ids (memory banks)
            result["indices"] = batch["indices"]
        result["skipped"] = batch.get("skipped", 0)
        return result

    def build_encoder(self, config: EncoderConfig) -> Encoder:
        return build_image_encoder(config, self.config)

    @classmethod
    def preprocessing_of_pretrained(cls, folder: str) -> dict[str, Any]:
        return preprocessing_of_processor(folder)
