"""Cost figures: parameters and peak memory, with the kind of memory that was measured."""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch


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


def reset_peak() -> None:
    """Start a fresh CUDA peak; CPU RSS peaks cannot be reset and cover the whole process."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, Any]:
    """CUDA max allocated/reserved on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available():
        return {"peak_mem_bytes": int(torch.cuda.max_memory_allocated()), "mem_kind": "cuda_allocated",
                "peak_mem_reserved_bytes": int(torch.cuda.max_memory_reserved())}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mem_bytes": int(rss if sys.platform == "darwin" else rss * 1024), "mem_kind": "cpu_peak_rss"}
