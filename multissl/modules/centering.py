"""The teacher's centre of DINO and iBOT: a running mean of the teacher's outputs over the global batch.

Caron et al. 2021 (DINO, section 3.1, eq. 4): ``c <- m c + (1 - m) (1 / B) sum_i g_t(x_i)``, with
``m = 0.9``; subtracting ``c`` from the teacher's logits before its sharpened softmax keeps one
prototype from dominating (collapse to a constant), while sharpening keeps the output from
collapsing to uniform. iBOT keeps a second centre for patch tokens (Zhou et al. 2022).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multissl.distributed import all_reduce_sum

__all__ = ["TeacherCentering"]


class TeacherCentering(nn.Module):
    """The centre ``c`` [dim] as a persistent buffer (zeros at the start, float32), checkpointed
    with the objective that owns it.

    :meth:`update` takes the teacher's logits of this step (``[..., dim]``, every row one output:
    DINO's two global crops, iBOT's masked patches) and moves ``c`` towards their mean over the
    **global** batch: one all-reduce of the per-process sums and row counts, so unequal per-process
    batches average exactly (the reference divides by ``len(x) * world_size``, which assumes equal
    ones). A step whose global batch holds no rows leaves ``c`` as it is. No gradient; call it after
    the loss has used the old centre, as the reference does.
    """

    center: Tensor

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"centre momentum must be in [0, 1], got {momentum}")
        self.dim, self.momentum = dim, momentum
        self.register_buffer("center", torch.zeros(dim))

    @torch.no_grad()
    def update(self, teacher_logits: Tensor) -> None:
        if teacher_logits.shape[-1] != self.dim:
            raise ValueError(f"teacher logits must end in {self.dim}, got shape {tuple(teacher_logits.shape)}")
        rows = teacher_logits.detach().reshape(-1, self.dim).to(self.center.dtype)
        totals = all_reduce_sum(torch.cat([rows.sum(dim=0), rows.new_tensor([rows.shape[0]])]))
        count = totals[-1]
        batch_mean = totals[:-1] / count.clamp_min(1.0)
        updated = self.center * self.momentum + batch_mean * (1.0 - self.momentum)
        self.center.copy_(torch.where(count > 0, updated, self.center))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, momentum={self.momentum}"
