"""MoCHi: synthetic hard negatives mixed from a MoCo queue (Kalantidis, Sariyildiz, Pion,
Weinzaepfel, Larlus 2020, "Hard Negative Mixing for Contrastive Learning", arXiv:2010.01028,
section 4).

For each query q (L2-normalised) the queue's negatives are ranked by similarity to q and the
``hardest`` (the paper's N) closest kept, Q^N. Two kinds of points are then synthesised, per query:

    h_k  = normalize(alpha_k n_i + (1 - alpha_k) n_j),  n_i, n_j in Q^N,  alpha_k ~ U(0, 1)     ``pairs`` (s) of them
    h'_k = normalize(beta_k q + (1 - beta_k) n_j),      n_j in Q^N,       beta_k ~ U(0, 0.5)   ``query_mixes`` (s')

(n_i, n_j drawn uniformly from Q^N, independently). They are extra negatives of that query only
(``info_nce(..., query_negatives=...)``); they are not enqueued and carry no gradient (the query
inside h' is detached: mixing it in must make a harder negative, not move the query).

The draws come from the ``generator`` passed in and are made for every row of the global batch,
of which this rank keeps its own (``row_offset``): one process and N processes give each query the
same synthetic negatives, and a run resumed with the same generator seed draws the same ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mix_hard_negatives"]


@torch.no_grad()
def mix_hard_negatives(queries: Tensor, queue: Tensor, hardest: int, pairs: int, query_mixes: int,
                       generator: torch.Generator, row_offset: int = 0, total_rows: int | None = None) -> Tensor:
    """MoCHi's synthetic negatives ``[n, pairs + query_mixes, D]`` (unit rows, detached) for
    ``queries`` [n, D] from ``queue`` [K, D] (see the module doc). ``row_offset``: where these
    queries start among ``total_rows`` of the global batch (draws are made for all of them on the
    CPU ``generator``, this rank keeps its slice)."""
    if queries.dim() != 2 or queue.dim() != 2 or queries.shape[1] != queue.shape[1]:
        raise ValueError(f"queries [n, D] and queue [K, D] must share D, got {tuple(queries.shape)} and {tuple(queue.shape)}")
    if not 1 <= hardest <= queue.shape[0]:
        raise ValueError(f"hardest (MoCHi's N) must lie in [1, queue size {queue.shape[0]}], got {hardest}")
    if pairs < 0 or query_mixes < 0:
        raise ValueError(f"pairs and query_mixes must be >= 0, got {pairs} and {query_mixes}")
    rows = queries.shape[0]
    total = rows if total_rows is None else total_rows
    if not 0 <= row_offset <= total - rows:
        raise ValueError(f"rows [{row_offset}, {row_offset + rows}) do not lie in a global batch of {total}")
    mine = slice(row_offset, row_offset + rows)
    device = queries.device

    def draw_indices(count: int) -> Tensor:
        return torch.randint(hardest, (total, count), generator=generator)[mine].to(device)

    def draw_uniform(count: int) -> Tensor:
        return torch.rand((total, count, 1), generator=generator, dtype=torch.float64)[mine].to(device, queue.dtype)

    q = F.normalize(queries.detach().to(queue.dtype), dim=1)
    negatives = F.normalize(queue, dim=1)
    closest = (q @ negatives.T).topk(hardest, dim=1).indices  # [n, hardest]: Q^N of each query, hardest first

    def pick(index: Tensor) -> Tensor:  # [n, S] positions in Q^N -> [n, S, D] negatives
        return negatives[closest.gather(1, index)]

    first, second, alpha = draw_indices(pairs), draw_indices(pairs), draw_uniform(pairs)
    mixed_pairs = alpha * pick(first) + (1 - alpha) * pick(second)
    partner, beta = draw_indices(query_mixes), 0.5 * draw_uniform(query_mixes)
    mixed_query = beta * q[:, None, :] + (1 - beta) * pick(partner)
    return F.normalize(torch.cat([mixed_pairs, mixed_query], dim=1), dim=2)
