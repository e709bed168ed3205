"""SwAV: swapping assignments between views (Caron et al. 2020), with multi-crop.

Cluster the embeddings online onto learnable prototypes under an equipartition constraint, and
predict the code of one view from another view of the same sample.

    z_v  = normalize(projector(encoder(v)))           every view, globals then locals, [B, 128]
    s_v  = z_v C^T                                    C: K unit prototypes, [B, K]
    q_g  = sinkhorn_knopp([queue_g C^T ; s_g])[-B:]   codes of the 2 global views only, global batch
    loss = mean_g mean_{v != g} swapped_prediction(s_v, q_g, temperature=0.1)
    after each step: C <- rows of C normalised; C gets no gradient for the first steps

Prototypes: a linear layer without bias whose rows are kept at unit norm (normalised at build and
after every optimiser step, i.e. before every forward, as the reference). For the first
``freeze_prototypes_steps`` steps their gradient is zero (the reference drops it: "freezing the
prototypes during the first epoch helps"); the gate is a buffer-driven product, so no process
sync and no unused parameter for DDP. An optimiser's weight decay on them only shrinks their
norm then, which the re-normalisation undoes.

Queue (small batches, ``queue_size`` > 0): a FIFO of past global-view embeddings per global view,
shared by all processes (:class:`MomentumQueue` gathers), filled from step ``queue_start_step`` and
used once full; its rows join the Sinkhorn problem as extra samples (codes discarded). Each
process adds a disjoint slice of the queue, so every queue row is counted once in the global
problem, as one process would count it. The reference keeps a queue per GPU instead; the
content (the last ``queue_size`` embeddings of the global stream) is the same. Deciding whether to
use it reads two 0-d buffers on the host (one sync per step, only when a queue is configured).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl import distributed
from multissl.features import Encoder
from multissl.losses import sinkhorn_knopp, swapped_prediction
from multissl.modules import MomentumQueue, ProjectionHead
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules import ProjectedEncoder
from multissl.views import ViewRequest

GLOBAL_VIEWS = 2


class SwAV(Objective):
    name = "swav"
    steps_done: Tensor

    def __init__(
        self,
        encoder: Encoder,
        *,
        projection_dim: int = 128,
        hidden_dim: int = 2048,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        freeze_prototypes_steps: int = 313,
        local_views: int = 0,
        queue_size: int = 0,
        queue_start_step: int = 0,
        policy: str | None = None,
    ) -> None:
        """Paper defaults (ImageNet, batch 4096): 2048 -> 128 projector with BN, 3000 prototypes,
        temperature 0.1, epsilon 0.05, 3 Sinkhorn iterations, prototypes frozen for 313 steps (one
        epoch); ``local_views`` 6 with the image domain's multi-crop (0 elsewhere); queue 3840 from
        epoch 15 at batch 256. ``policy``: the domain's augmentation policy (None: its default)."""
        super().__init__()
        for name, value in (("num_prototypes", num_prototypes), ("sinkhorn_iterations", sinkhorn_iterations)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, value in (("freeze_prototypes_steps", freeze_prototypes_steps), ("local_views", local_views),
                            ("queue_size", queue_size), ("queue_start_step", queue_start_step)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not temperature > 0 or not epsilon > 0:
            raise ValueError(f"temperature and epsilon must be positive, got {temperature}, {epsilon}")
        self.online = ProjectedEncoder(encoder, ProjectionHead(encoder.dim, hidden_dim, projection_dim, num_layers=2))
        self.prototypes = nn.Linear(projection_dim, num_prototypes, bias=False)
        self.normalize_prototypes()
        self.queues = nn.ModuleList(MomentumQueue(queue_size, projection_dim, seed=view)
                                    for view in range(GLOBAL_VIEWS if queue_size else 0))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.temperature, self.epsilon, self.sinkhorn_iterations = temperature, epsilon, sinkhorn_iterations
        self.freeze_prototypes_steps, self.queue_start_step = freeze_prototypes_steps, queue_start_step
        self.local_views, self.policy = local_views, policy

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest.augmented(self.policy, num_views=GLOBAL_VIEWS, local_views=self.local_views),)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        crops = views["views"]
        if len(crops) != GLOBAL_VIEWS + self.local_views:
            raise ValueError(f"swav expects {GLOBAL_VIEWS} global + {self.local_views} local views, got {len(crops)}")
        projections = self.online(crops)
        # Scores feed exp(s / 0.05) in Sinkhorn: computed in fp32 even under autocast.
        with torch.autocast(projections[0].device.type, enabled=False):
            embeddings = [F.normalize(z.float(), dim=1) for z in projections]
            prototypes = self._prototypes_with_gated_gradient().float()
            scores = [z @ prototypes.T for z in embeddings]
        fill_queue, use_queue = self._queue_state()
        loss = scores[0].new_zeros(())
        for g in range(GLOBAL_VIEWS):
            codes = self._codes(scores[g], g, prototypes.detach() if use_queue else None)
            loss = loss + sum(swapped_prediction(scores[v], codes, self.temperature)
                              for v in range(len(crops)) if v != g) / (len(crops) - 1)
        if fill_queue:
            for queue, z in zip(self.queues, embeddings):
                queue.enqueue(z.detach())
        logs = {"prototypes_frozen": (self.steps_done < self.freeze_prototypes_steps).float(),
                "queue_used": float(use_queue)}
        return ObjectiveOutput(loss=loss / GLOBAL_VIEWS, logs=logs, embeddings=(embeddings[0], embeddings[1]))

    @torch.no_grad()
    def _codes(self, scores: Tensor, view: int, prototypes: Tensor | None) -> Tensor:
        """Codes of this process's rows of global view ``view``; queue rows join when given prototypes."""
        if prototypes is None:
            return sinkhorn_knopp(scores, self.sinkhorn_iterations, self.epsilon)
        queue = self.queues[view].keys
        start, stop = (len(queue) * r // distributed.world_size() for r in (distributed.rank(), distributed.rank() + 1))
        queued = queue[start:stop].to(scores.dtype) @ prototypes.T
        codes = sinkhorn_knopp(torch.cat([queued, scores]), self.sinkhorn_iterations, self.epsilon)
        return codes[queued.shape[0]:]

    def _prototypes_with_gated_gradient(self) -> Tensor:
        """The prototype matrix [K, D]; same value always, zero gradient while frozen."""
        weight = self.prototypes.weight
        trainable = (self.steps_done >= self.freeze_prototypes_steps).to(weight.dtype)
        return weight * trainable + weight.detach() * (1 - trainable)

    def _queue_state(self) -> tuple[bool, bool]:
        """(enqueue this step, use the queue this step): filled from queue_start_step, used once full."""
        if not self.queues:
            return False, False
        steps, enqueued = torch.stack([self.steps_done, self.queues[0].total_enqueued]).tolist()
        fill = steps >= self.queue_start_step
        return fill, fill and enqueued >= self.queues[0].size

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.steps_done.fill_(step)
        self.normalize_prototypes()
