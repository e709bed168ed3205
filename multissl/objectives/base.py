"""The contract every self-supervised method fulfils.

An objective is an ``nn.Module`` built around the encoder(s) it trains (passed in, shared by
reference, as moco-v3's builder takes its base encoder). It owns the trainable parts the method
adds (heads, predictors, EMA teachers, queues, learnable temperature) and maps the views a domain
made for it to a loss. It never imports a domain: it states what it needs as a ``ViewRequest``.

State that must survive a resume is a parameter or a persistent buffer, so
``accelerator.save_state`` captures it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from multissl.views import ViewRequest

__all__ = ["Objective", "ObjectiveOutput"]


@dataclass
class ObjectiveOutput:
    """loss: scalar to minimise (fp32). logs: scalars worth plotting (detached floats or 0-d
    tensors). embeddings: the two aligned batches [B, D] the method pulls together, when it has
    them, for collapse telemetry (std, effective rank, alignment, uniformity)."""

    loss: Tensor
    logs: dict[str, Any] = field(default_factory=dict)
    embeddings: tuple[Tensor, Tensor] | None = None


class Objective(nn.Module):
    #: registry name used in recipes (``objective.name``)
    name: ClassVar[str]
    #: the smallest global batch (rows over all processes) the loss is defined for; the engine
    #: refuses a smaller ``train.batch_size`` at start-up and skips (and counts) a micro batch that
    #: bad-sample skips left smaller. 1: a per-sample loss. In-batch contrastive losses need 2 (a
    #: row's negatives are the other rows: with one row the loss is exactly 0). Batch-norm layers
    #: need 2 rows per process; the engine finds those itself (``multissl.guards``).
    min_batch_size: ClassVar[int] = 1

    def view_requests(self) -> tuple[ViewRequest, ...]:
        """One ``ViewRequest`` per domain this objective reads (recipe order), asked every step.

        Single-domain methods return one request and take one views dict in ``forward``;
        cross-modal methods (CLIP) return one per domain and take as many views dicts.
        """
        raise NotImplementedError

    def forward(self, *views: dict[str, Any]) -> ObjectiveOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after each optimiser step (EMA teacher updates, schedules). Default: nothing."""

    def joint_projections(self) -> tuple[nn.Module | None, ...]:
        """Per domain read (recipe order), the linear map from that encoder's pooled features into
        a space shared with the other domains (CLIP's W_a, W_b), or None. The engine hands them to
        the encoders (``Encoder.joint_projection``) so retrieval and zero-shot probes, in the run
        and from a saved folder, compare embeddings in the space they were trained in. Default:
        none (single-domain methods: their heads are training-only)."""
        return ()
