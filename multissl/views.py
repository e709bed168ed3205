"""The vocabulary objectives and domains share: which views an objective asks for.

An objective states what it needs as a :class:`ViewRequest`; a domain builds it on whole batches
on the training device (``multissl.domain.Domain.make_views``). Neither imports the other.

View kinds and the keys of the dict they return (``Inputs`` is a dict of tensors the domain's
encoder takes as ``encoder(**inputs)``):

``plain``          {"inputs": Inputs}  deterministic, for probes and evaluation.
``augmented``      {"views": list[Inputs]}  ``num_views`` independently augmented views of each row,
                   random parameters drawn per sample. Options: ``num_views`` (2), ``policy``
                   ("simclr", "byol": asymmetric blur/solarize; "dropout": identical copies for
                   SimCSE, dropout in the encoder makes them differ; images also "randaugment"),
                   ``local_views`` (multi-crop: globals first, then locals at ``local_size``; images
                   only). Images: ``mix`` ("mixup" | "cutmix", ``mix_alpha``) mixes the first view of
                   row b with row "mix_partner"[b] (Long[B], a row of the same batch) and adds
                   "mix_lambda" (Float[B], the weight of row b's own image); ``replay`` leaves the
                   generator where it was, so the next request draws the same crops;
                   ``mask_probability`` (iBOT, DINOv2: > 0 masks each row of each global view with
                   that probability, ``round(r T)`` random patches, r ~ U(``mask_ratio_range``)) then
                   adds "masks" (Bool[B, T] per global view) and "masked_views" (the global views'
                   Inputs with the mask inside, for the student; "views" stay unmasked).
``masked``         {"inputs": Inputs, "mask": Bool[B, T], "targets": Tensor, "clean": Inputs} mask
                   True on the positions to predict (patches, frames, tokens); targets per position
                   (pixels of the patch [B, T, P], frame features [B, T, F], or token ids [B, T] with
                   -100 off the mask); "clean" the same rows unmasked (what an EMA teacher encodes:
                   data2vec, I-JEPA; HuBERT's labeler). Options ``mask_ratio``, ``mask_token``: with true, the
                   encoder sees every position and the masked ones are replaced in place by a
                   learned embedding (audio and text always do: wav2vec2's masked_spec_embed, BERT's
                   [MASK]; an image ViT needs the domain's ``vit_mask_token``). Images add "grid"
                   (rows, columns) of the patches and, without ``mask_token``, "keep_index"
                   Long[B, T_keep] among the inputs: the visible patches a patch encoder (ViT) runs
                   on alone (MAE). Image option ``masking="multiblock"`` (I-JEPA) makes
                   "keep_index" the context block and adds "target_index" Long[B, M, K], the M
                   target blocks, whose union is "mask" (options ``num_targets``, ``target_scale``,
                   ``target_aspect_ratio``, ``context_scale``, ``min_keep``); images also take
                   ``crop_scale`` and ``flip`` for the crop before masking.
                   Audio option ``targets="mfcc"``: MFCCs with deltas (HuBERT's first targets).
``sequence``       {"inputs": Inputs, "valid": Bool[B, L]} ordered inputs for CPC (crops long
                   enough for K steps), "valid" True where position l of the inputs holds content;
                   or, for 2-D inputs (images), {"parts": list[Inputs], "grid": (rows, columns)}:
                   one Inputs per patch of a grid, row-major.
``pretext``        {"parts": list[Inputs], "labels": Long[B], "num_classes": int} for rotation,
                   jigsaw and relative position (option ``task``); ``parts`` holds one Inputs
                   per tile/patch, each with B rows, in the order the label refers to.
``corrupted``      {"inputs": Inputs, "targets": Tensor, "mask": Bool or None} for denoising,
                   inpainting and colorization (option ``task``); ``targets`` in the layout the
                   encoder's decoder must produce; mask True where the input was corrupted.
                   Colorization (option ``output_stride``) classifies: "targets" Long[B, k, h, w]
                   are each pixel's k nearest classes, "target_weights" [B, k, h, w] their soft
                   weights, "class_values" [Q, P] each class's coordinates, "values" [B, P, h, w]
                   the continuous targets.

What an objective may know beyond its views is ``Features`` and the encoder's ``dim`` and
``geometry`` (:class:`multissl.features.InputGeometry`, for decoders built at construction):
never a pixel, a processor or a Hugging Face config field.

Cross-modal objectives (CLIP) read several domains: every domain collates the same dataset rows,
so row i of each domain's views describes one thing; the objective asks each of its domains for
a view (``Objective.view_requests`` returns one request per domain, in recipe order).

Every view dict may also carry "labels" (Long[B]) when the dataset has a label column, and the
raw batch's "skipped" count passes through so the engine can log it.

Every view dict of every domain also carries "indices" (Long[B]) when the rows are numbered (every
domain's ``load`` adds ``row_index``, the row's position in the rows it loaded): a stable id per
training sample, row b of the batch (bad samples skipped at collation are left out of it too).
Methods with a memory bank (instance discrimination, PIRL, CMC) index the bank with it. It is per
collated row: views that repeat rows (the rotation task's ``all_rotations``) keep B ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multissl.options import closest

__all__ = ["ViewRequest", "VIEW_KINDS"]

VIEW_KINDS = ("plain", "augmented", "masked", "sequence", "pretext", "corrupted")


@dataclass
class ViewRequest:
    """What an objective needs from a domain: a view ``kind`` and its options (see module doc)."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ValueError(f"unknown view kind {self.kind!r}; known kinds: {list(VIEW_KINDS)}")

    @classmethod
    def augmented(cls, policy: str | None = None, num_views: int = 2, local_views: int = 0) -> "ViewRequest":
        """``num_views`` augmented views (+ ``local_views`` multi-crop locals), the request of the
        joint-embedding methods. ``policy`` None leaves the choice to the domain (text has no
        "simclr" or "byol" policy, so a method must not impose one); ``local_views`` is sent only
        when multi-crop is asked for, since only the image domain offers it."""
        options: dict[str, Any] = {"num_views": num_views}
        if policy is not None:
            options["policy"] = policy
        if local_views:
            options["local_views"] = local_views
        return cls("augmented", options)

    def checked_options(self, domain: str, known: dict[str, Any]) -> dict[str, Any]:
        """This request's options over the domain's defaults for its kind (``known``: option ->
        default); an unknown option is an error naming it, the close matches and the known ones."""
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            raise ValueError(f"{domain} view {self.kind!r} has no option(s) {unknown}{closest(unknown[0], known)}; "
                             f"it takes {sorted(known)}")
        return {**known, **self.options}
