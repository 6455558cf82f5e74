"""What a sweep checks and cleans on the machines it runs on: the hostfile of a multi-node launch, and the
all-reduce buffers dead DeepSpeed processes left in /dev/shm.

A multi-node cell is launched as ``deepspeed --hostfile H --num_gpus G …``: DeepSpeed reads the hosts and their
slots from H, takes the first host as the rendezvous (master) address, and starts the ranks of the other hosts
through pdsh over ssh. A missing pdsh or an unreachable host would otherwise surface only after ssh's timeouts,
inside the first cell; ``check_hostfile`` finds both in seconds, before any cell runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.core.errors import ConfigError

log = logging.getLogger(__name__)
SHM_DIR = Path("/dev/shm")
PREFIX = "deepspeed_allreduce_buffer_"
SETTLE_S = 60.0      # a buffer younger than this may belong to a process still mapping it: left alone
SSH_TIMEOUT_S = 5


def hosts(path: Path) -> dict[str, int]:
    """``host slots=N`` lines of a DeepSpeed hostfile (comments and blank lines skipped), in order."""
    if not path.is_file():
        raise ConfigError(f"hostfile={path} does not exist; write one line per node, `<host> slots=<gpus>`")
    found: dict[str, int] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#")[0].strip()
        if not line:
            continue
        parts = line.split()
        slots = [p for p in parts[1:] if p.startswith("slots=")]
        if len(parts) != 2 or not slots or not slots[0][6:].isdigit() or int(slots[0][6:]) < 1:
            raise ConfigError(f"hostfile={path} line {lineno}: {raw.strip()!r}; expected `<host> slots=<gpus>`")
        if parts[0] in found:
            raise ConfigError(f"hostfile={path} line {lineno}: host {parts[0]} is listed twice")
        found[parts[0]] = int(slots[0][6:])
    if not found:
        raise ConfigError(f"hostfile={path} names no host; write one line per node, `<host> slots=<gpus>`")
    return found


def _reachable(host: str) -> bool:
    """Whether ssh logs in to ``host`` without a password prompt within the timeout (what pdsh needs)."""
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_TIMEOUT_S}", "-o", "StrictHostKeyChecking=no",
           host, "true"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=SSH_TIMEOUT_S + 2, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def check_hostfile(path: Path, gpus: int) -> dict[str, int]:
    """The hostfile's hosts, checked before any cell: well formed, each with the ``gpus`` slots a cell asks for
    per node; and for several hosts, pdsh and ssh present and every host reachable (in parallel, seconds)."""
    found = hosts(path)
    short = {h: n for h, n in found.items() if n < gpus}
    if short:
        raise ConfigError(f"hostfile={path}: {short} have fewer slots than gpus={gpus} per node; lower gpus or "
                          "fix the slots")
    if len(found) == 1:
        return found     # one node: DeepSpeed starts its ranks locally, no pdsh or ssh
    missing = [tool for tool in ("pdsh", "ssh") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(f"hostfile={path} names {len(found)} nodes, and DeepSpeed starts the other nodes' ranks "
                          f"through pdsh over ssh: {' and '.join(missing)} not found on PATH; install "
                          f"{' and '.join(missing)} (e.g. apt install pdsh openssh-client)")
    with ThreadPoolExecutor(max_workers=min(16, len(found))) as pool:
        down = [h for h, ok in zip(found, pool.map(_reachable, found)) if not ok]
    if down:
        raise ConfigError(f"hostfile={path}: {down} not reachable by ssh without a password within "
                          f"{SSH_TIMEOUT_S} s (pdsh needs that); check the names, the network and the keys "
                          "(ssh-copy-id), then rerun")
    return found


def mapped_buffers() -> set[str]:
    """The /dev/shm all-reduce buffers some live process maps (its /proc/<pid>/maps names them)."""
    live: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:          # gone meanwhile, or another user's
            continue
        live.update(line.split(maxsplit=5)[-1].removesuffix(" (deleted)") for line in text.splitlines()
                    if PREFIX in line)
    return live


def remove_dead_buffers(shm: Path = SHM_DIR) -> int:
    """Unlink this user's DeepSpeed all-reduce buffers that no live process maps (left by a SIGKILLed run, which
    cannot remove its own); returns how many. Buffers younger than ``SETTLE_S`` are left alone."""
    live, now, removed = mapped_buffers(), time.time(), 0
    for path in shm.glob(f"{PREFIX}{os.getuid()}_*"):
        try:
            if str(path) in live or now - path.stat().st_mtime < SETTLE_S:
                continue
            size = path.stat().st_size
            path.unlink()
        except OSError:
            continue
        removed += 1
        log.info("removed %s (%.0f MB), left by a process that no longer runs", path, size / 1e6)
    return removed


@contextlib.contextmanager
def cell_lock(root: Path, cell_dir: Path) -> Iterator[bool]:
    """Whether this process owns the cell while inside: a non-blocking ``flock`` on
    ``<sweep_dir>/.locks/<cell path>.lock``, so two jobs whose slices overlap never write one cell. The kernel
    drops the lock when its process dies (a job the scheduler killed), and the next run redoes the cell."""
    path = root / ".locks" / cell_dir.relative_to(root).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
