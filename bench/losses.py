"""Contrastive losses against their floor: forward + backward wall time and peak memory on the CPU.

For each loss (``nt_xent``, ``info_nce`` with a 65,536-key queue, ``clip_loss``) at batch
256 / 1024 / 4096 and dimension 128 / 512, the same run measures the *floor*: the similarity
matmul(s) that loss needs and their backward, nothing else (no normalisation, no softmax):

* ``nt_xent``:  ``z @ z.T`` for the 2N projections ``z`` (one [2N, D] leaf);
* ``info_nce``: ``q @ k.T`` and ``q @ queue.T`` (the queue is a constant, as in MoCo);
* ``clip_loss``: ``a @ b.T``.

The floor's incoming gradients are allocated before timing and before the memory baseline: the
floor is the matmuls' own cost. The loss and its floor alternate repetition by repetition so both
see the same machine load; medians are reported, with every sample in the JSON.

Peak memory: each (case, variant) runs in its own fresh subprocess: one warm-up step, then freed
heap pages are returned to the kernel (``malloc_trim``) and the kernel's resident-set high-water
mark is reset (``/proc/self/clear_refs``); the figure is that mark after one more step (VmHWM,
exact, not sampled) minus the resident set just before it (inputs and incoming gradients built).

    python bench/losses.py            # full grid, writes bench/results/losses.json
    python bench/losses.py --quick    # smoke run: one small case, prints only
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import alternate_timings, describe_machine, machine_info, write_results  # noqa: E402
from multissl.losses import clip_loss, info_nce, nt_xent  # noqa: E402

LOSSES = ("nt_xent", "info_nce_queue", "clip_loss")
QUEUE = 65_536
TEMPERATURE = 0.1
LOGIT_SCALE = 1 / 0.07  # CLIP's initial exp(logit_scale)


#: where the cases run (``--device``); inputs are drawn on the CPU with one seed, then moved
DEVICE = torch.device("cpu")


def build_step(loss: str, batch: int, dim: int, variant: str, queue: int) -> Callable[[], None]:
    """Inputs for one case, and a closure running one forward + backward of ``variant``.

    Each step starts with the inputs' gradients set to None, as after ``zero_grad()``.
    """
    g = torch.Generator().manual_seed(0)
    leaves: list[torch.Tensor] = []
    def randn(*shape: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(DEVICE)

    def leaf(*shape: int) -> torch.Tensor:
        leaves.append(randn(*shape, generator=g).requires_grad_(True))
        return leaves[-1]

    def fresh(run: Callable[[], None]) -> Callable[[], None]:
        def step() -> None:
            for tensor in leaves:
                tensor.grad = None
            run()

        return step

    if loss == "nt_xent":
        if variant == "loss":
            z1, z2 = leaf(batch, dim), leaf(batch, dim)
            return fresh(lambda: nt_xent(z1, z2, TEMPERATURE).backward())
        z, upstream = leaf(2 * batch, dim), randn(2 * batch, 2 * batch, generator=g)
        return fresh(lambda: (z @ z.T).backward(upstream))
    if loss == "info_nce_queue":
        q, k = leaf(batch, dim), leaf(batch, dim)
        negatives = F.normalize(randn(queue, dim, generator=g), dim=1)
        if variant == "loss":
            return fresh(lambda: info_nce(q, k, negatives, TEMPERATURE).backward())
        upstream = [randn(batch, batch, generator=g), randn(batch, queue, generator=g)]
        return fresh(lambda: torch.autograd.backward([q @ k.T, q @ negatives.T], upstream))
    if loss == "clip_loss":
        a, b = leaf(batch, dim), leaf(batch, dim)
        if variant == "loss":
            return fresh(lambda: clip_loss(a, b, LOGIT_SCALE).backward())
        upstream = randn(batch, batch, generator=g)
        return fresh(lambda: (a @ b.T).backward(upstream))
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: resident high-water mark)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def release_and_reset_peak() -> None:
    """Hand freed heap pages back to the kernel, then restart the high-water mark from here."""
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)


def measure_memory_here(loss: str, batch: int, dim: int, variant: str, queue: int) -> dict:
    """Run in a fresh process: peak resident memory of one step above the resident set before it.

    A first step at full size pages in code, thread stacks and BLAS buffers; its freed memory is
    returned to the kernel (malloc_trim) and the high-water mark reset before the measured step,
    so the figure is that step's own working memory.
    """
    step = build_step(loss, batch, dim, variant, queue)
    step()
    release_and_reset_peak()
    before = status_bytes("VmRSS")
    step()
    peak = status_bytes("VmHWM")
    return {"before_bytes": before, "peak_bytes": peak, "step_peak_bytes": max(peak - before, 0)}


def measure_memory(loss: str, batch: int, dim: int, variant: str, queue: int) -> float:
    """Peak MiB of one step, measured in a subprocess so earlier cases cannot hide it (on a GPU:
    the allocator's peak above what was allocated before the step, in this process)."""
    if DEVICE.type == "cuda":
        step = build_step(loss, batch, dim, variant, queue)
        step()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return max(torch.cuda.max_memory_allocated() - before, 0) / 2**20
    spec = json.dumps([loss, batch, dim, variant, queue])
    command = [sys.executable, __file__, "--memory-case", spec, "--threads", str(torch.get_num_threads())]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["step_peak_bytes"] / 2**20


def time_pair(loss: str, batch: int, dim: int, queue: int, repetitions: int) -> tuple[list[float], list[float]]:
    """Wall times (ms) of the loss and its floor, alternating, after one warm-up each."""
    steps = {variant: build_step(loss, batch, dim, variant, queue) for variant in ("loss", "floor")}
    samples = alternate_timings(steps, repetitions, warmup=1,
                                synchronize=torch.cuda.synchronize if DEVICE.type == "cuda" else None)
    return samples["loss"], samples["floor"]


@dataclass
class CaseResult:
    loss: str
    batch: int
    dim: int
    queue: int | None
    repetitions: int
    loss_ms_median: float
    floor_ms_median: float
    time_ratio: float
    loss_peak_mib: float
    floor_peak_mib: float
    memory_ratio: float
    loss_ms_samples: list[float]
    floor_ms_samples: list[float]


MEASURED = ("multissl/losses/contrastive.py", "multissl/distributed.py", "bench/losses.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 256, dim 128, small queue")
    parser.add_argument("--repetitions", type=int, default=None, help="timed repetitions per case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON path (full run default: bench/results/losses.json)"
    )
    parser.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 256 1024 4096)")
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="dimensions (default 128 512)")
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_case:  # child process of measure_memory
        print(json.dumps(measure_memory_here(*json.loads(args.memory_case))))
        return

    batches, dims, queue = ((256,), (128,), 4096) if args.quick else ((256, 1024, 4096), (128, 512), QUEUE)
    batches, dims = tuple(args.batches or batches), tuple(args.dims or dims)
    output = args.output or (None if args.quick else ROOT / "bench" / "results" / "losses.json")
    info = machine_info(MEASURED)
    print(describe_machine(info))
    print(f"{'loss':<16}{'batch':>6}{'dim':>5}{'loss ms':>10}{'floor ms':>10}{'ratio':>7}"
          f"{'loss MiB':>10}{'floor MiB':>10}{'ratio':>7}")
    results = []
    for loss in args.losses:
        for batch in batches:
            for dim in dims:
                repetitions = args.repetitions or (3 if args.quick else (7 if batch <= 1024 else 3))
                loss_ms, floor_ms = time_pair(loss, batch, dim, queue, repetitions)
                loss_mib = measure_memory(loss, batch, dim, "loss", queue)
                floor_mib = measure_memory(loss, batch, dim, "floor", queue)
                result = CaseResult(
                    loss=loss, batch=batch, dim=dim, queue=queue if loss == "info_nce_queue" else None,
                    repetitions=repetitions,
                    loss_ms_median=round(statistics.median(loss_ms), 2),
                    floor_ms_median=round(statistics.median(floor_ms), 2),
                    time_ratio=round(statistics.median(loss_ms) / statistics.median(floor_ms), 3),
                    loss_peak_mib=round(loss_mib, 1), floor_peak_mib=round(floor_mib, 1),
                    memory_ratio=round(loss_mib / max(floor_mib, 1e-9), 3),
                    loss_ms_samples=[round(t, 2) for t in loss_ms],
                    floor_ms_samples=[round(t, 2) for t in floor_ms],
                )
                results.append(result)
                print(f"{loss:<16}{batch:>6}{dim:>5}{result.loss_ms_median:>10.1f}{result.floor_ms_median:>10.1f}"
                      f"{result.time_ratio:>7.2f}{result.loss_peak_mib:>10.1f}{result.floor_peak_mib:>10.1f}"
                      f"{result.memory_ratio:>7.2f}", flush=True)
    print("time: median wall ms of forward + backward; memory: peak resident set (VmHWM) of one step above "
          "the resident set before it, in a fresh subprocess per case after a warm-up step")
    if output is not None:
        write_results(
            output, benchmark="bench/losses.py", title="Contrastive loss kernels against their matmul floor",
            kind="speed", machine=info,
            description="Forward + backward wall time (median) and peak memory of multissl's contrastive losses "
            f"against the similarity matmul(s) each needs and their backward (the floor), float32 on "
            f"{'the GPU (' + torch.cuda.get_device_name(DEVICE) + ')' if DEVICE.type == 'cuda' else 'the CPU'}. "
            "Ratios are loss / floor: 1.0 would be a loss costing nothing beyond its matmuls.",
            seeds={"inputs": 0},
            budget={"quick": bool(args.quick), "warmup_repetitions": 1,
                    "repetitions": args.repetitions or ("3" if args.quick else "7 (batch <= 1024), 3 (batch 4096)")},
            settings={
                "dtype": "float32", "queue": queue, "temperature": TEMPERATURE, "logit_scale": LOGIT_SCALE,
                "device": str(DEVICE), "device_name": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda"
                else "cpu", "batches": list(batches), "dims": list(dims),
                "timing": "time.perf_counter around forward + backward; loss and floor alternate each repetition; "
                "medians",
                "memory_method": "fresh subprocess per case and variant: warm-up step, malloc_trim, VmHWM "
                "reset via /proc/self/clear_refs, then VmHWM after one step minus VmRSS before it",
                "floor": "the similarity matmul(s) each loss needs and their backward; incoming gradients "
                "allocated beforehand",
            },
            notes=["The floor is not a peer: a loss is always at least its floor; the ratio says how much the "
                   "softmax, normalisation and bookkeeping add."],
            key_columns=("loss", "batch", "dim"),
            rows=[asdict(r) for r in results],
        )


if __name__ == "__main__":
    main()
