"""HuBERT: masked prediction of hidden units (Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov, Mohamed
2021, "HuBERT: Self-Supervised Speech Representation Learning by Masked Prediction of Hidden
Units", arXiv:2106.07447).

    frames of the clip are masked in spans (the audio ``masked`` view; the encoder replaces them
        with its learned mask embedding) -> encoder -> o_t
    each frame has a target unit z_t: the k-means cluster of an unmasked feature of that frame
    loss = masked_cluster_prediction(A o_t, e, z, mask): cross-entropy of softmax_c(cos(A o_t, e_c) / 0.1)
           over the masked frames (the paper's L_m; ``unmasked_weight`` adds L_u, 0 in the paper)

Targets, as the paper's iterations:

- ``targets="mfcc"`` (iteration 1): k-means on MFCC frames with deltas (the domain's ``mfcc``
  targets of the masked view: 39 values per frame with the audio option ``n_mfcc: 13``).
- ``targets="features"`` (iteration 2 and later): k-means on the hidden states of layer
  ``target_layer`` of a frozen labeler network reading the clean clip: the encoder as the run
  starts (point the recipe's ``encoder.name_or_path`` at the previous iteration's saved encoder),
  or the encoder folder ``labeler_path`` (same architecture and size; the student then starts from
  the recipe's encoder, e.g. from scratch as in the paper).

Clustering, streamed (the engine gives no pass over the dataset): a bank (:class:`MomentumQueue`,
gathered from every process) collects the target features of every valid frame; when it holds
``bank_size`` frames, ``on_step_end`` runs k-means (:func:`multissl.modules.kmeans.kmeans`, the same
seed and bank on every process) once; from then on each frame's target is its nearest centroid.
Until then the loss is 0 (logged as ``clustered``). The paper clusters a fixed subset of the data
(all of it for MFCCs, 10% for iteration 2) with mini-batch k-means, once per iteration.

As the official code (fairseq's ``HubertModel``): the codeword embeddings start uniform in [0, 1),
the logits are cosines divided by 0.1, and ``final_dim`` is 256. Left out: its L2 penalty on the
convolutional features and cluster ensembles (several k-means at once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from multissl.features import Encoder
from multissl.losses import masked_cluster_prediction
from multissl.modules import MomentumEncoder, MomentumQueue
from multissl.modules.kmeans import kmeans, nearest_centroid
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.options import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability
from multissl.views import ViewRequest

__all__ = ["HuBERT"]


class HuBERT(Objective):
    name = "hubert"
    clustered_at_step: Tensor

    def __init__(
        self,
        encoder: Encoder,
        *,
        targets: Literal["mfcc", "features"] = "mfcc",
        num_clusters: PositiveInt = 100,
        target_dim: PositiveInt = 39,
        target_layer: NonNegativeInt | None = None,
        labeler_path: str | None = None,
        projection_dim: PositiveInt = 256,
        temperature: PositiveFloat = 0.1,
        unmasked_weight: NonNegativeFloat = 0.0,
        bank_size: PositiveInt = 100_000,
        kmeans_iterations: PositiveInt = 20,
        mask_ratio: Probability | None = None,
        mask_span: PositiveInt | None = None,
        seed: int = 0,
    ) -> None:
        """The paper: 100 clusters of MFCCs, then 500 of the 6th of 12 layers. ``target_dim``:
        values per MFCC frame (3 x the audio domain's n_mfcc); ``target_layer``: index into the
        labeler's hidden states, 0 the input embeddings (None: the middle layer). ``mask_ratio`` /
        ``mask_span``: the masked view's options (None: the domain's)."""
        super().__init__()
        if bank_size < num_clusters:
            raise ValueError(f"bank_size ({bank_size}) must hold at least num_clusters ({num_clusters}) frames")
        if targets == "mfcc" and (target_layer is not None or labeler_path is not None):
            raise ValueError("target_layer and labeler_path choose the network behind targets='features'")
        self.encoder, self.targets, self.target_layer = encoder, targets, target_layer
        self.labeler = MomentumEncoder(encoder) if targets == "features" else None
        if self.labeler is not None and labeler_path is not None:
            _load_weights(self.labeler.module, Path(labeler_path))
        self.projection = nn.Linear(encoder.dim, projection_dim)  # the paper's A
        self.codewords = nn.Parameter(torch.rand(num_clusters, projection_dim))  # e_c
        feature_dim = target_dim if targets == "mfcc" else encoder.dim
        self.bank = MomentumQueue(bank_size, feature_dim, seed=seed)
        self.register_buffer("centroids", torch.zeros(num_clusters, feature_dim))
        self.register_buffer("clustered_at_step", torch.full((), -1, dtype=torch.long))
        self.target_dim, self.temperature, self.unmasked_weight = target_dim, temperature, unmasked_weight
        self.kmeans_iterations, self.seed = kmeans_iterations, seed
        view = {"mask_ratio": mask_ratio, "mask_span": mask_span, "targets": "mfcc" if targets == "mfcc" else None}
        self.view_options = {key: value for key, value in view.items() if value is not None}

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("masked", dict(self.view_options)),)

    def train(self, mode: bool = True) -> "HuBERT":
        super().train(mode)
        if self.labeler is not None:  # a fixed labeler: no dropout, no masking
            self.labeler.eval()
        return self

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        features = self.encoder(**views["inputs"])
        if features.sequence.shape[:2] != views["mask"].shape:
            raise ValueError(f"encoder frames {tuple(features.sequence.shape[:2])} do not match the mask "
                             f"{tuple(views['mask'].shape)}")
        valid = features.mask
        with torch.no_grad():
            frames = self.target_features(views)
            clustered = bool(self.clustered_at_step >= 0)
            if self.training and not clustered:
                self.bank.enqueue(frames[valid].float())
            units = nearest_centroid(frames.flatten(0, 1).float(), self.centroids).view(valid.shape)
        masked = views["mask"] & valid
        predictions = self.projection(features.sequence)
        loss = masked_cluster_prediction(predictions, self.codewords, units, masked, self.temperature)
        if self.unmasked_weight:
            loss = loss + self.unmasked_weight * masked_cluster_prediction(
                predictions, self.codewords, units, valid & ~masked, self.temperature)
        with torch.no_grad():  # the unit of highest cosine, on this process's masked frames
            cosines = F.normalize(predictions[masked], dim=1) @ F.normalize(self.codewords, dim=1).T
            hits = cosines.argmax(dim=1) == units[masked]
        logs = {"clustered": float(clustered), "masked_accuracy": hits.float().mean() if hits.numel() else 0.0}
        return ObjectiveOutput(loss=loss * float(clustered), logs=logs)

    @torch.no_grad()
    def target_features(self, views: dict[str, Any]) -> Tensor:
        """[B, T, F] features of every frame that k-means clusters: MFCCs, or the labeler's layer."""
        if self.labeler is None:
            if views["targets"].shape[-1] != self.target_dim:
                raise ValueError(f"the masked view's MFCC targets have {views['targets'].shape[-1]} values per "
                                 f"frame, hubert expects target_dim={self.target_dim}: set it to 3 x the audio "
                                 "domain's n_mfcc (MFCCs and their two deltas)")
            return views["targets"]
        states = self.labeler(**views["clean"], output_hidden_states=True).hidden_states
        layer = len(states) // 2 if self.target_layer is None else self.target_layer
        if not 0 <= layer < len(states):
            raise ValueError(f"target_layer {layer} is not among the labeler's {len(states)} hidden states")
        return states[layer]

    @torch.no_grad()
    def cluster(self, step: int) -> None:
        """k-means on the bank, the same on every process (same bank, same seed)."""
        generator = torch.Generator().manual_seed(self.seed)
        result = kmeans(self.bank.keys, self.centroids.shape[0], self.kmeans_iterations, generator)
        self.centroids.copy_(result.centroids)
        self.clustered_at_step.fill_(step)

    def on_step_end(self, step: int, total_steps: int) -> None:
        clustered_at, enqueued = torch.stack([self.clustered_at_step, self.bank.total_enqueued]).tolist()
        if clustered_at < 0 and enqueued >= self.bank.size:
            self.cluster(step)


def _load_weights(encoder: Encoder, folder: Path) -> None:
    """The saved encoder folder's weights (``save_pretrained``'s model.safetensors) into ``encoder``'s model."""
    file = folder / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"labeler_path {folder} holds no model.safetensors (an encoder folder a run saved)")
    missing, unexpected = encoder.model.load_state_dict(load_file(str(file)), strict=False)
    if missing or unexpected:
        raise ValueError(f"the labeler in {folder} does not fit the recipe's encoder (another architecture or size?): "
                         f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
