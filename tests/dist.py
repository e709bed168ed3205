"""Run a function in N real processes joined in a gloo group, the way torchrun starts them.

Each process gets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT in its environment,
joins ``torch.distributed`` with the gloo backend on the CPU, runs ``fn(*args)`` with one thread,
and returns what ``fn`` returned (a dict of tensors / numbers) to the parent, rank by rank.
Keep ``fn`` at module level (it is pickled by name into freshly spawned interpreters) and do as
many checks per call as you can: every start costs a few seconds of imports.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str, fn: Callable, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        assert dist.get_world_size() == world_size
        result = fn(*args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_in_processes(fn: Callable[..., Any], *args: Any, world_size: int = 2) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` gloo processes; return each rank's result in rank order."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(
            _worker, args=(world_size, free_port(), out_dir, fn, args), nprocs=world_size,
            join=True, start_method="spawn",
        )
        return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
