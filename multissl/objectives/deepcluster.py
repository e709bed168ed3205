"""DeepCluster: k-means pseudo-labels as classification targets (Caron et al. 2018), streamed.

The paper alternates, once per epoch: (1) the current network's features of the whole dataset,
PCA-whitened to 256 dimensions and L2-normalised, are clustered by k-means; (2) the network plus a
freshly initialised linear classifier learns to predict each image's cluster from an augmented
crop, sampling uniformly over clusters. The engine streams batches and gives no sample ids, so
this objective keeps the algorithm and makes the epoch-wise state explicit (all of it persistent):

    bank      the last ``bank_size`` training features h of the global stream (a FIFO gathered from
              every process, :class:`MomentumQueue`)
    labeler   a frozen copy of encoder + head, the network "as it was when clustered"
    every ``recluster_every`` steps (first: as soon as the bank is full), in ``on_step_end``:
              labeler <- copy of the online network; PCA-whiten the bank and k-means it into
              ``num_clusters`` (empty clusters split as the paper); weight each cluster by
              bank_size / (clusters * its size); re-initialise the classifier (N(0, 0.01), bias 0)
    each step y = nearest centroid of labeler(view 1), whitened (no gradient)
              h = head(encoder(view 2));  loss = weighted cross-entropy(classifier(h), y)

Departures from the paper, and why:

- No stored label per image (there are no ids): the frozen labeler recomputes the label of each
  sample from an augmented view, with the network and centroids of the last clustering, so the
  targets stay fixed between clusterings as the paper's do. (Labels from the online network itself
  would let it move every sample to one cluster, a trivial solution.) The label view is augmented
  like the training view, where the paper labels the unaugmented image.
- The bank is clustered with features from the online networks of the last bank_size / batch
  steps, where the paper recomputes all features with one network; keep the bank a small number
  of steps deep compared with ``recluster_every``.
- The uniform sampling over pseudo-classes becomes its importance weight: a row of cluster c
  counts bank_size / (clusters * n_c), whose mean over the bank is 1.
- The classifier is re-initialised in place; the optimiser keeps its moments for it (the paper
  builds a new layer and optimiser). Until the first clustering the loss is zero (the bank fills).

Every process gathers the same bank and clusters it with the same seed (``seed`` + step), so all
hold the same labeler, centroids and classifier without further communication; the loss is a mean
over the global batch. Cost per step: one forward without gradient for the labeler (and its
weights in memory); per clustering ``kmeans_iterations`` x bank_size x num_clusters x pca_dim.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl.distributed import global_mean
from multissl.features import Encoder
from multissl.modules import MomentumEncoder, MomentumQueue, ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules.kmeans import kmeans, nearest_centroid, pca_whitening, whiten
from multissl.modules import ProjectedEncoder
from multissl.views import ViewRequest


class DeepCluster(Objective):
    name = "deepcluster"
    clustered_at_step: Tensor

    def __init__(
        self,
        encoder: Encoder,
        *,
        num_clusters: int = 1000,
        feature_dim: int = 512,
        hidden_dim: int = 2048,
        pca_dim: int = 128,
        bank_size: int = 16_384,
        recluster_every: int = 1000,
        kmeans_iterations: int = 20,
        policy: str | None = None,
        seed: int = 0,
    ) -> None:
        """The paper: 10,000 clusters for ImageNet's 1.3M images, PCA to 256, 20 k-means iterations,
        re-clustering every epoch; scale ``num_clusters`` to about 10x the classes you expect and
        ``bank_size`` to a good fraction of an epoch. ``policy``: the domain's augmentation policy."""
        super().__init__()
        if not 1 <= pca_dim <= feature_dim:
            raise ValueError(f"pca_dim must be in [1, feature_dim={feature_dim}], got {pca_dim}")
        if bank_size < max(num_clusters, 2):
            raise ValueError(f"bank_size ({bank_size}) must hold at least num_clusters ({num_clusters}) features")
        for name, value in (("num_clusters", num_clusters), ("recluster_every", recluster_every),
                            ("kmeans_iterations", kmeans_iterations)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.online = ProjectedEncoder(encoder, ProjectionHead(encoder.dim, hidden_dim, feature_dim, num_layers=2))
        self.labeler = MomentumEncoder(self.online)
        self.classifier = nn.Linear(feature_dim, num_clusters)
        self.bank = MomentumQueue(bank_size, feature_dim, seed=seed)
        self.register_buffer("pca_mean", torch.zeros(feature_dim))
        self.register_buffer("pca_projection", torch.zeros(feature_dim, pca_dim))
        self.register_buffer("centroids", torch.zeros(num_clusters, pca_dim))
        self.register_buffer("cluster_weights", torch.zeros(num_clusters))
        self.register_buffer("clustered_at_step", torch.full((), -1, dtype=torch.long))
        self.num_clusters, self.pca_dim, self.kmeans_iterations = num_clusters, pca_dim, kmeans_iterations
        self.recluster_every, self.policy, self.seed = recluster_every, policy, seed

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        label_view, train_view = views["views"][:2]
        (h,) = self.online([train_view])
        with torch.no_grad():
            (g,) = self.labeler([label_view])
            targets = self.pseudo_labels(g)
        logits = self.classifier(h).float()
        terms = F.cross_entropy(logits, targets, reduction="none") * self.cluster_weights[targets]
        clustered = (self.clustered_at_step >= 0).to(terms.dtype)  # no targets before the first k-means
        loss = global_mean(terms) * clustered
        self.bank.enqueue(h.detach().float())
        logs = {"clustered": clustered, "classifier_accuracy": (logits.argmax(dim=1) == targets).float().mean()}
        return ObjectiveOutput(loss=loss, logs=logs, embeddings=(h, g))

    @torch.no_grad()
    def pseudo_labels(self, features: Tensor) -> Tensor:
        """Index [N] of the nearest centroid of each feature row [N, feature_dim], in the clustering space."""
        return nearest_centroid(whiten(features.float(), self.pca_mean, self.pca_projection), self.centroids)

    @torch.no_grad()
    def recluster(self, step: int) -> None:
        """Snapshot the labeler, cluster the bank and reset the classifier: the same on every
        process (same bank, same seed)."""
        generator = torch.Generator().manual_seed(self.seed + step)
        self.labeler.update(self.online, momentum=0.0)  # an exact copy: the network being clustered
        points = self.bank.keys
        mean, projection = pca_whitening(points, self.pca_dim)
        result = kmeans(whiten(points, mean, projection), self.num_clusters, self.kmeans_iterations, generator)
        self.pca_mean.copy_(mean)
        self.pca_projection.copy_(projection)
        self.centroids.copy_(result.centroids)
        sizes = result.sizes.to(self.cluster_weights)
        weights = points.shape[0] / ((sizes > 0).sum() * sizes.clamp_min(1))
        self.cluster_weights.copy_(torch.where(sizes > 0, weights, torch.zeros_like(weights)))
        self.classifier.weight.copy_(torch.randn(self.classifier.weight.shape, generator=generator) * 0.01)
        self.classifier.bias.zero_()
        self.clustered_at_step.fill_(step)

    def on_step_end(self, step: int, total_steps: int) -> None:
        clustered_at, enqueued = torch.stack([self.clustered_at_step, self.bank.total_enqueued]).tolist()
        if enqueued >= self.bank.size and (clustered_at < 0 or step - clustered_at >= self.recluster_every):
            self.recluster(step)
