"""Cost figures: parameters and peak memory, with the kind of memory that was measured."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from pathlib import Path
from typing import Any

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


def parameter_counts(model: torch.nn.Module) -> dict[str, Any]:
    """Trainable and total parameters (each shared tensor counted once)."""
    seen, trainable, total = set(), 0, 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return {"trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total}


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes; None where there is no procfs."""
    try:
        line = next(x for x in STATUS.read_text().splitlines() if x.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter


def track_cpu_tensors(threshold: int | None) -> bool:
    """On CPU, make RSS follow live tensors: glibc maps every allocation of ``threshold`` bytes or more on
    its own and unmaps it when freed (by default it keeps freed memory of up to 32 MiB for reuse, so RSS
    peaks say more about the heap's history than about what a run needs). False where it does not apply.
    """
    if threshold is None or torch.cuda.is_available() or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


def current_memory() -> int:
    """Memory in use now: CUDA bytes allocated on GPU, else the resident set size (0 where unknown)."""
    if torch.cuda.is_available():
        return int(torch.cuda.memory_allocated())
    return _status_bytes("VmRSS") or 0


def reset_peak() -> bool:
    """Start a fresh peak: CUDA's statistics, or Linux's RSS high-water mark; False where it cannot be reset."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_memory(*, was_reset: bool) -> dict[str, Any]:
    """CUDA max allocated/reserved on GPU; on CPU the RSS peak since ``reset_peak`` (else the process's)."""
    if torch.cuda.is_available():
        return {"peak_mem_bytes": int(torch.cuda.max_memory_allocated()), "mem_kind": "cuda_allocated",
                "peak_mem_reserved_bytes": int(torch.cuda.max_memory_reserved())}
    hwm = _status_bytes("VmHWM") if was_reset else None
    if hwm is not None:
        return {"peak_mem_bytes": hwm, "mem_kind": "cpu_rss_train_peak"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mem_bytes": int(rss if sys.platform == "darwin" else rss * 1024), "mem_kind": "cpu_peak_rss"}


def estimate_check(estimate: dict[str, Any], peak: int, baseline: int, at_start: int) -> dict[str, Any]:
    """The estimate beside what the run used above its baseline (memory in use before the model loaded);
    ``measured_static_bytes``: what was in use when training started (weights, optimizer set-up)."""
    used = peak - baseline
    total = estimate.get("total_bytes")   # absent where the estimate failed (its "error" says why)
    return {**estimate, "measured_bytes": used, "measured_static_bytes": at_start - baseline,
            "ratio": total / used if total and used > 0 else None}
