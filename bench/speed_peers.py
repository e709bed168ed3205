"""multissl's contrastive losses against the same losses in peer libraries, side by side.

Three pairs, each on identical inputs (the same leaf tensors), forward + backward, float32:

* ``nt_xent``  vs lightly's ``lightly.loss.NTXentLoss`` (SimCLR, temperature 0.5, no memory bank);
* ``clip_loss`` vs open_clip's ``open_clip.loss.ClipLoss`` (logit scale 1 / 0.07, a learnable 0-d
  tensor as in CLIP). ``ClipLoss`` expects unit-norm features, which open_clip's model produces
  before calling it, so the peer's timed step is ``F.normalize`` on both sides + ``ClipLoss``;
  multissl's ``clip_loss`` normalises inside;
* ``info_nce`` (in-batch negatives, cosine, temperature 0.05) vs sentence-transformers'
  ``MultipleNegativesRankingLoss`` (scale 20 = 1 / 0.05, its default), called through its own
  ``compute_loss_from_embeddings`` on the precomputed embeddings (no model forward).

Before timing, every case checks that both sides return the same value (within 1e-4) and the
same input gradients; the differences are recorded in each row. Each pair is timed beside its
*floor*: the similarity matmul(s) that loss needs and their backward (``bench/losses.py``'s
floors). The three steps alternate repetition by repetition so they see the same machine load;
medians are reported, all samples kept. Ratios are multissl / peer (below 1: multissl faster).

    python bench/speed_peers.py             # batch 8 x dim 8, then batches 256/1024/4096 x dims 128/512
    python bench/speed_peers.py --quick     # smoke run: batch 8 x dim 8 and 256 x 128, 3 repetitions

The batch 8 x dim 8 case has almost no arithmetic: its time is each implementation's fixed cost
per call (argument checks, Python, autograd bookkeeping), which decides the small cases.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS_DIR, alternate_timings, describe_machine, machine_info, median, write_results  # noqa: E402
from bench.losses import build_step  # noqa: E402
from multissl.losses import clip_loss, info_nce, nt_xent  # noqa: E402

NT_XENT_TEMPERATURE = 0.5  # SimCLR's and lightly's default
CLIP_LOGIT_SCALE = 1 / 0.07  # CLIP's initial exp(logit_scale)
MNRL_SCALE = 20.0  # sentence-transformers' default; temperature 1 / 20 = 0.05
TOLERANCE = 1e-4
MEASURED = ("multissl/losses/contrastive.py", "multissl/distributed.py", "bench/speed_peers.py", "bench/losses.py")

#: Why a row may go to the peer: each note names the structural difference (from both sources);
#: the batch 8 x dim 8 row of each loss measures the fixed cost per call, where there is no real work.
NOTES = {
    "nt_xent": (
        "lightly builds four [N, N] blocks with einsum, drops their diagonals by boolean indexing (copies) and "
        "concatenates a [2N, 2N-1] matrix before F.cross_entropy; multissl makes one [2N, 2N] matmul and a "
        "softmax cross-entropy in place, so it does less work at every size. A row it loses has little work "
        "(compare the batch 8 row, the fixed cost per call) or was timed under changing load (see the header)."
    ),
    "clip_loss": (
        "open_clip on one process makes two matmuls (a->b and b->a) and two F.cross_entropy calls; multissl makes "
        "one matmul, copies its transpose, and runs its in-place cross-entropy twice. That saves work on large "
        "batches, but its fixed cost per call is higher (argument checks, the autocast guard, two calls of its "
        "autograd.Function, the copy: see the batch 8 row), and that decides rows with little work."
    ),
    "info_nce": (
        "sentence-transformers computes cos_sim (normalise, matmul), scales, and takes logsumexp minus the "
        "positive score with autograd's own backward; multissl normalises, matmuls and runs its in-place "
        "softmax cross-entropy. Both are one [N, N] pass; multissl's fixed cost per call is slightly higher "
        "(argument checks, the autocast guard, its autograd.Function: see the batch 8 row), which decides rows "
        "with little work."
    ),
}
#: Appended to every note: on a shared machine the load, not the code, can decide a row.
LOAD_CAVEAT = (" The three steps alternate, but load that changes within a repetition still moves single rows: a "
               "row whose ratio stands apart from its neighbours' is more likely load than code (see the load "
               "averages in the header).")
#: A case with almost no arithmetic: its time is each implementation's fixed cost per call.
OVERHEAD_CASE = (8, 8)


@dataclass
class Pair:
    """One loss and its peer on the same inputs: each builds a scalar loss from the leaves."""

    loss: str
    peer: str
    leaves: int  # how many [N, D] leaf tensors the loss takes
    ours: Callable[..., torch.Tensor]
    theirs: Callable[..., torch.Tensor]
    floor_of: str  # the bench/losses.py floor with the same matmuls
    settings: str


def build_pairs() -> dict[str, Pair]:
    """Import the peers (each optional: a missing library names itself) and pair them."""
    pairs: dict[str, Pair] = {}
    from lightly.loss import NTXentLoss

    lightly_loss = NTXentLoss(temperature=NT_XENT_TEMPERATURE, memory_bank_size=0)
    pairs["nt_xent"] = Pair(
        "nt_xent", "lightly NTXentLoss", 2,
        lambda z1, z2: nt_xent(z1, z2, NT_XENT_TEMPERATURE),
        lambda z1, z2: lightly_loss(z1, z2),
        "nt_xent", f"temperature {NT_XENT_TEMPERATURE}, mean over the 2N anchors (both)",
    )
    from open_clip.loss import ClipLoss

    open_clip_loss = ClipLoss()
    pairs["clip_loss"] = Pair(
        "clip_loss", "open_clip ClipLoss", 3,
        lambda a, b, scale: clip_loss(a, b, scale),
        lambda a, b, scale: open_clip_loss(F.normalize(a, dim=-1), F.normalize(b, dim=-1), scale),
        "clip_loss", f"logit scale {CLIP_LOGIT_SCALE:.4g} (learnable 0-d tensor); open_clip gets unit-norm "
        "features (F.normalize timed with it, as its model does before the loss)",
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    # The model is only used by forward() to embed sentences; the loss on embeddings never reads it.
    mnrl = MultipleNegativesRankingLoss(model=None, scale=MNRL_SCALE)
    pairs["info_nce"] = Pair(
        "info_nce", "sentence-transformers MultipleNegativesRankingLoss", 2,
        lambda q, k: info_nce(q, k, None, 1 / MNRL_SCALE),
        lambda q, k: mnrl.compute_loss_from_embeddings([q, k], None),
        "clip_loss",  # the same single [N, N] matmul q @ k.T
        f"in-batch negatives, cosine, scale {MNRL_SCALE:g} = temperature {1 / MNRL_SCALE:g}; the peer is "
        "called through compute_loss_from_embeddings (its own code, no model forward)",
    )
    return pairs


def make_leaves(pair: Pair, batch: int, dim: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    leaves = [torch.randn(batch, dim, generator=generator).requires_grad_(True) for _ in range(2)]
    if pair.leaves == 3:
        leaves.append(torch.tensor(CLIP_LOGIT_SCALE, requires_grad=True))
    return leaves


def agreement(pair: Pair, leaves: list[torch.Tensor]) -> tuple[float, float, float, float]:
    """(our value, their value, |value difference|, max |gradient difference|) on the same leaves;
    raises when the values or any gradient entry differ by more than ``TOLERANCE`` (absolute)."""
    results = []
    for side in (pair.ours, pair.theirs):
        for leaf in leaves:
            leaf.grad = None
        value = side(*leaves)
        value.backward()
        results.append((value.item(), [leaf.grad.clone() for leaf in leaves]))
    (ours, our_grads), (theirs, their_grads) = results
    value_diff = abs(ours - theirs)
    grad_diff = max(float((a - b).abs().max()) for a, b in zip(our_grads, their_grads))
    if value_diff > TOLERANCE or grad_diff > TOLERANCE:
        raise AssertionError(
            f"{pair.loss} and {pair.peer} disagree on {tuple(leaves[0].shape)}: values {ours:.6f} vs {theirs:.6f}, "
            f"max gradient difference {grad_diff:.2e}: not the same loss, the timing would compare different things")
    for leaf in leaves:
        leaf.grad = None
    return ours, theirs, value_diff, grad_diff


def measure(pair: Pair, batch: int, dim: int, repetitions: int, seed: int) -> dict:
    leaves = make_leaves(pair, batch, dim, seed)
    ours_value, theirs_value, value_diff, grad_diff = agreement(pair, leaves)

    def step(side: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            for leaf in leaves:
                leaf.grad = None
            side(*leaves).backward()

        return run

    floor = build_step(pair.floor_of, batch, dim, "floor", queue=0)
    samples = alternate_timings({"multissl": step(pair.ours), "peer": step(pair.theirs), "floor": floor},
                                repetitions, warmup=1)
    ours_ms, peer_ms, floor_ms = (median(samples[k]) for k in ("multissl", "peer", "floor"))
    row = {
        "loss": pair.loss, "peer": pair.peer, "batch": batch, "dim": dim, "repetitions": repetitions,
        "multissl_ms": round(ours_ms, 3), "peer_ms": round(peer_ms, 3), "floor_ms": round(floor_ms, 3),
        "multissl_over_peer": round(ours_ms / peer_ms, 3),
        "multissl_over_floor": round(ours_ms / floor_ms, 3), "peer_over_floor": round(peer_ms / floor_ms, 3),
        "value": round(ours_value, 6), "value_difference": value_diff, "max_gradient_difference": grad_diff,
        "notes": NOTES[pair.loss] + LOAD_CAVEAT if ours_ms > peer_ms else "",
    }
    row.update({f"{name}_ms_samples": [round(t, 3) for t in times] for name, times in samples.items()})
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8 x dim 8 and 256 x 128, few repetitions")
    parser.add_argument("--losses", nargs="+", default=["nt_xent", "clip_loss", "info_nce"],
                        choices=["nt_xent", "clip_loss", "info_nce"])
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--dims", type=int, nargs="+", default=None)
    parser.add_argument("--repetitions", type=int, default=None, help="timed repetitions per case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "speed_peers.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batches or ([256] if args.quick else [256, 1024, 4096])
    dims = args.dims or ([128] if args.quick else [128, 512])
    cases = [(batch, dim) for batch in batches for dim in dims]
    if not (args.batches or args.dims):
        cases.insert(0, OVERHEAD_CASE)

    started = time.perf_counter()
    info = machine_info(MEASURED)
    print(describe_machine(info))
    pairs = build_pairs()
    print(f"{'loss':<10}{'batch':>6}{'dim':>5}{'multissl ms':>13}{'peer ms':>10}{'floor ms':>10}"
          f"{'ours/peer':>11}{'ours/floor':>11}  peer")
    rows = []
    for name in args.losses:
        for batch, dim in cases:
            small = batch * dim <= OVERHEAD_CASE[0] * OVERHEAD_CASE[1]
            repetitions = args.repetitions or (21 if small else 3 if args.quick else 7 if batch <= 1024 else 3)
            row = measure(pairs[name], batch, dim, repetitions, args.seed)
            rows.append(row)
            print(f"{name:<10}{batch:>6}{dim:>5}{row['multissl_ms']:>13.2f}{row['peer_ms']:>10.2f}"
                  f"{row['floor_ms']:>10.2f}{row['multissl_over_peer']:>11.2f}{row['multissl_over_floor']:>11.2f}"
                  f"  {row['peer']}", flush=True)
    import lightly
    import open_clip
    import sentence_transformers

    write_results(
        args.output, benchmark="bench/speed_peers.py", argv=None if argv is None else ["bench/speed_peers.py", *argv],
        title="Loss kernels against peer libraries", kind="speed", machine=info,
        description="Forward + backward median wall time of multissl's contrastive losses and the same losses "
        "in lightly, open_clip and sentence-transformers, on identical float32 inputs (checked to give the same "
        "value and gradients first), each beside the matmul floor that loss needs. multissl_over_peer below 1 "
        "means multissl is faster.",
        seeds={"inputs": args.seed},
        budget={"quick": bool(args.quick), "warmup": 1,
                "repetitions": args.repetitions or ("21 (batch 8 x dim 8), " + ("3" if args.quick
                                                    else "7 (batch <= 1024), 3 (batch 4096)")),
                "wall_seconds": round(time.perf_counter() - started, 1)},
        settings={"dtype": "float32", "device": "cpu", "tolerance": TOLERANCE,
                  "pairs": {name: pair.settings for name, pair in pairs.items()},
                  "peer_versions": {"lightly": lightly.__version__, "open_clip": open_clip.__version__,
                                    "sentence_transformers": sentence_transformers.__version__},
                  "floor": "bench/losses.py floors: nt_xent z @ z.T over the 2N projections; clip_loss and "
                  "info_nce one a @ b.T; backward with preallocated incoming gradients"},
        notes=["Same definitions checked: lightly's NTXentLoss is SimCLR's Algorithm 1 (self excluded, mean over "
               "2N anchors) like nt_xent; open_clip's ClipLoss is (CE(a->b) + CE(b->a)) / 2 like clip_loss; "
               "MultipleNegativesRankingLoss (default directions, joint partition) is in-batch InfoNCE with "
               "cosine x scale like info_nce with temperature 1 / scale."],
        comparisons=[{"multissl": "multissl_ms", "peer": "peer_ms", "better": "lower", "peer_label": "peer"}],
        key_columns=("loss", "batch", "dim"), rows=rows,
    )
    return rows


if __name__ == "__main__":
    main()
