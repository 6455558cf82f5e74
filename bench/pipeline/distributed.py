"""Distributed plumbing: the process group a run (or a test, in-process) needs, sums over ranks, and the shared-memory
buffer DeepSpeed's CPU all-reduce leaves behind."""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any

import torch

from bench import free_port

SHM_DIR = Path("/dev/shm")


def shm_buffer() -> Path:
    """Where DeepSpeed's CPU accelerator maps this rank's all-reduce buffer (~66 MB; ops/csrc/cpu/comm/shm.cpp
    names it after the user, the rendezvous and the rank; it does so under the launcher, which sets LOCAL_SIZE)."""
    env = os.environ
    return SHM_DIR / (f"deepspeed_allreduce_buffer_{os.getuid()}_{env['MASTER_ADDR']}_{env['MASTER_PORT']}_"
                      f"{env['RANK']}")


def ensure_distributed() -> None:
    """Single-process defaults so a run also works in-process (tests) without the launcher.

    DeepSpeed never unlinks its CPU all-reduce buffer, and every sweep cell rendezvous on a port of its own:
    each run would leave ~66 MB of RAM in /dev/shm (measured: 310 files, 20 GB, after two days of runs).
    The process removes its own buffer when it exits.
    """
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    import deepspeed
    import torch.distributed as dist

    fresh = not dist.is_initialized()
    deepspeed.init_distributed(verbose=False)
    if fresh:
        atexit.register(shm_buffer().unlink, missing_ok=True)   # peers have long opened it by then


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the data-parallel ranks (itself in a single process)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, device: Any) -> bool:
    """True on every rank when it is true on one (a decision all ranks must take together)."""
    return bool(sum_over_ranks(torch.tensor([float(flag)], device=device)) > 0)


def total_over_ranks(tokens: int, device: Any) -> int:
    """Tokens trained on by all ranks together."""
    return int(sum_over_ranks(torch.tensor(tokens, dtype=torch.long, device=device)))
