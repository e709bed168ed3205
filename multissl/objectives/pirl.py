"""PIRL: Pretext-Invariant Representation Learning (Misra & van der Maaten 2019, arXiv:1912.01991;
official code in VISSL: ``pirl_jigsaw_4node_resnet50.yaml`` and ``NCELossWithMemory``).

Instead of predicting the jigsaw permutation (which makes features covary with the transform),
PIRL makes the representation of an image and of its jigsaw-shuffled tiles agree, through a memory
bank of image representations (the bank of instance discrimination, Wu et al. 2018):

    f = normalize(W_i h(I))                         image branch: one augmented view, linear to 128
    g = normalize(W_t [W_p h(t_1); ...; W_p h(t_9)]) tile branch: 9 tiles of the image in shuffled
                                                    order, each linear to 128, concatenated, to 128
    L = lambda * NCE(m_I, g) + (1 - lambda) * NCE(m_I, f)        eq. 5, lambda = 0.5
    m_I <- normalize(0.5 m_I + 0.5 f)               the bank holds the image branch only

Each NCE term scores its embedding against the image's own bank row m_I and 32,000 noise rows
drawn uniformly (each term draws its own, as VISSL does) at tau = 0.07 with the constant Z of the
first batch (:func:`multissl.losses.memory_bank_nce`). Views: the image domain's ``pretext`` view
(task "jigsaw", its shuffled tiles) with one augmented view of the same rows.

Where VISSL and the paper differ, VISSL's defaults are kept: its NCE (Wu et al.'s, with Z)
replaces the paper's h(v_I, v_It) = exp(s / tau) / (exp(s / tau) + N / |D_N|); the bank starts
L2-normalised (``norm_init``); heads are linear (the paper's later MLP variant is not the
default). VISSL crops the tiles from a second random resized crop (scale 0.6-1) with colour
jitter; here the domain's jigsaw tiles are cut from the whole image and standardised one by one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from multissl.features import Encoder, encode_views
from multissl.modules import MemoryBank, sample_ids
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import PositiveFloat, PositiveInt, Probability, Range
from multissl.views import ViewRequest

__all__ = ["PIRL"]

TILES = 9


class PIRL(Objective):
    name = "pirl"

    def __init__(
        self,
        encoder: Encoder,
        *,
        bank_size: PositiveInt,
        projection_dim: PositiveInt = 128,
        num_negatives: PositiveInt = 32_000,
        temperature: PositiveFloat = 0.07,
        momentum: Annotated[float, Range(0, 1)] = 0.5,
        loss_weight: Probability = 0.5,
        loss: Literal["nce", "softmax"] = "nce",
        policy: str | None = None,
    ) -> None:
        """``bank_size``: the number of training rows; ``loss_weight``: lambda, the weight of the
        tiles' term; ``loss="softmax"``: the cross-entropy over the sampled rows (VISSL's
        ``cross_entropy``) instead of NCE; ``policy``: the domain's augmentation of the image branch."""
        super().__init__()
        self.encoder = encoder
        self.image_head = nn.Linear(encoder.dim, projection_dim)
        self.tile_head = nn.Linear(encoder.dim, projection_dim)
        self.tiles_head = nn.Linear(TILES * projection_dim, projection_dim)
        self.bank = MemoryBank(bank_size, projection_dim, momentum, normalize_init=True)
        self.num_negatives, self.temperature, self.loss_weight = num_negatives, temperature, loss_weight
        self.loss, self.policy = loss, policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        options: dict[str, Any] = {"task": "jigsaw", "views": 1}
        if self.policy is not None:
            options["policy"] = self.policy
        return (ViewRequest("pretext", options),)

    def embed(self, image: dict[str, torch.Tensor], tiles: list[dict[str, torch.Tensor]]) -> tuple:
        """Unit embeddings of the image branch ``f`` and the tile branch ``g``, each [B, projection_dim]."""
        if len(tiles) != TILES:
            raise ValueError(f"pirl reads the {TILES} jigsaw tiles of a 3 x 3 grid, the view has {len(tiles)}")
        features = encode_views(self.encoder, [image, *tiles])
        f = self.image_head(features[0].pooled)
        g = self.tiles_head(torch.cat([self.tile_head(t.pooled) for t in features[1:]], dim=1))
        return F.normalize(f.float(), dim=1), F.normalize(g.float(), dim=1)

    def _term(self, embedding: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.bank.scores(embedding, self.bank.sample(indices, self.num_negatives), self.temperature)
        accuracy = (scores[:, 0] >= scores[:, 1:].amax(dim=1)).float().mean().detach()
        return self.bank.loss(scores, self.loss), accuracy

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        indices = sample_ids(views, self.name)
        f, g = self.embed(views["views"][0], views["parts"])
        tiles_loss, tiles_accuracy = self._term(g, indices)  # first, as VISSL: its scores set Z
        image_loss, image_accuracy = self._term(f, indices)
        self.bank.update(f, indices)
        loss = self.loss_weight * tiles_loss + (1 - self.loss_weight) * image_loss
        logs = {"loss_tiles": tiles_loss.detach(), "loss_image": image_loss.detach(),
                "positive_accuracy_tiles": tiles_accuracy, "positive_accuracy_image": image_accuracy}
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(f, g))
