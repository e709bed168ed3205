"""The online network of a joint-embedding method and its momentum (EMA) teacher, written once for
MoCo v2, MoCo v3 and BYOL.

    ProjectedEncoder(encoder, head):  views -> encoder -> pooled h -> head -> z, one z [B, D] per view
    MomentumTeacher(online, m, m_final):  a frozen copy of the online network that follows it by
        theta_teacher <- m * theta_teacher + (1 - m) * theta_online  (MoCo eq. 2, BYOL sec. 3.1)
        after every optimiser step, with m constant (MoCo v1/v2) or on BYOL's cosine schedule from
        m to m_final (BYOL, MoCo v3).

The teacher copies the whole online network (encoder and head), as MoCo's key encoder and BYOL's
target do; a predictor, where the method has one, stays outside on the online side.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from multissl.modules import MomentumEncoder, cosine_momentum
from multissl.objectives.gradcache import encode_pooled

__all__ = ["ProjectedEncoder", "MomentumTeacher"]


class ProjectedEncoder(nn.Module):
    """An encoder followed by a head on its pooled features: ``f`` then ``g`` of SimCLR/MoCo/BYOL.

    ``forward(views)`` takes a list of input dicts (the ``augmented`` views, each ``B`` rows) and
    returns one projection ``[B, out_dim]`` per view. Views of equal shapes share one encoder call
    (:func:`encode_views`) and all views share one head call, so batch norm anywhere in the network
    normalises the views together, as SimCLR's reference does. Outputs are not normalised.
    ``chunk_size`` routes the encoder through GradCache (that many rows per encoder call).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, chunk_size: int | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.chunk_size = chunk_size

    def forward(self, views: list[dict[str, Any]]) -> list[Tensor]:
        pooled = encode_pooled(self.encoder, views, self.chunk_size)
        return list(self.head(torch.cat(pooled)).split([p.shape[0] for p in pooled]))


class MomentumTeacher(nn.Module):
    """A frozen EMA copy of ``online`` with its momentum schedule.

    ``momentum`` is the EMA rate at step 0; ``final_momentum=None`` keeps it constant (MoCo v2:
    0.999), a value anneals it with :func:`multissl.modules.cosine_momentum` to ``final_momentum``
    at the last step (BYOL: 0.996 -> 1, MoCo v3: 0.99 -> 1). Call :meth:`update` from
    ``Objective.on_step_end(step, total_steps)``: after optimiser step ``step`` (1-based) it applies
    the rate of step ``step``, which is what MoCo v3 applies before the forward of that (0-based)
    iteration. The rate last applied is the persistent buffer ``momentum`` (0-d float32), so it is
    logged and checkpointed with the weights; the schedule itself is a pure function of the step.

    Forward runs the copy under ``no_grad`` (see :class:`multissl.modules.MomentumEncoder`).
    """

    momentum: Tensor

    def __init__(self, online: nn.Module, momentum: float, final_momentum: float | None = None) -> None:
        super().__init__()
        for name, value in (("momentum", momentum), ("final_momentum", final_momentum)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.network = MomentumEncoder(online)
        self.base_momentum, self.final_momentum = momentum, final_momentum
        self.register_buffer("momentum", torch.tensor(momentum, dtype=torch.float32))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.network(*args, **kwargs)

    def rate(self, step: int, total_steps: int) -> float:
        """The EMA rate of optimiser step ``step`` out of ``total_steps``."""
        if self.final_momentum is None:
            return self.base_momentum
        return cosine_momentum(step, total_steps, self.base_momentum, self.final_momentum)

    @torch.no_grad()
    def update(self, online: nn.Module, step: int, total_steps: int) -> None:
        """One EMA step of the copy towards ``online`` (the module it was copied from, unwrapped)."""
        rate = self.rate(step, total_steps)
        self.network.update(online, rate)
        self.momentum.fill_(rate)

    def extra_repr(self) -> str:
        schedule = "constant" if self.final_momentum is None else f"cosine to {self.final_momentum}"
        return f"momentum={self.base_momentum}, schedule={schedule}"
