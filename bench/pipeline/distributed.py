"""Distributed plumbing: the process group a run (or a test, in-process) needs, sums over ranks, and the shared-memory
buffer DeepSpeed's CPU all-reduce leaves behind."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bench import free_port
from bench.core.paths import CACHE_ROOT

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")


def shm_buffer() -> Path:
    """Where DeepSpeed's CPU accelerator maps this rank's all-reduce buffer (~66 MB; ops/csrc/cpu/comm/shm.cpp
    names it after the user, the rendezvous and the rank; it does so under the launcher, which sets LOCAL_SIZE)."""
    env = os.environ
    return SHM_DIR / (f"deepspeed_allreduce_buffer_{os.getuid()}_{env['MASTER_ADDR']}_{env['MASTER_PORT']}_"
                      f"{env['RANK']}")


def extensions_dir() -> Path:
    """Where torch compiles the ops DeepSpeed builds at run time (on CPU its shared-memory all-reduce: ~30-60 s on
    two cores): the checkout's cache, a folder per environment (interpreter, torch, deepspeed) and per ``ninja`` on
    the PATH, so every later run loads the build. In torch's one default folder the venv's ninja (1.13, log v7) and
    the system's (1.11, log v5) each discarded the other's log and rebuilt the op whenever a process with the other
    PATH came (``TORCH_EXTENSIONS_DIR`` set by the user wins)."""
    import shutil
    from importlib import metadata

    key = f"{sys.prefix}|{metadata.version('torch')}|{metadata.version('deepspeed')}|{shutil.which('ninja')}"
    return CACHE_ROOT / "torch_extensions" / hashlib.sha256(key.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _op_builds_logged(folder: Path) -> Iterator[None]:
    """One log line for each op compiled inside the block (a new or rebuilt shared library), with its time."""
    def libraries() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in folder.glob("*/*.so")} if folder.is_dir() else {}

    before, start = libraries(), time.perf_counter()
    yield
    built = sorted(p.parent.name for p, stamp in libraries().items() if before.get(p) != stamp)
    if built:
        log.info("DeepSpeed built %s in %.0f s; cached in %s, later runs load it", ", ".join(built),
                 time.perf_counter() - start, folder)


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
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))
    import deepspeed
    import torch.distributed as dist

    fresh = not dist.is_initialized()
    with _op_builds_logged(Path(os.environ["TORCH_EXTENSIONS_DIR"])):
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
