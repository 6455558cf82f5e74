"""Cost figures: parameters and peak memory, with the kind of memory that was measured."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import resource
import sys
from collections.abc import Callable, Iterator
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
        count = logical_numel(param)
        total += count
        trainable += count if param.requires_grad else 0
    return {"trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total}


def logical_numel(param: torch.Tensor) -> int:
    """The weights a parameter holds: a 4-bit bitsandbytes weight packs two in a byte (its ``quant_state`` keeps the
    shape), so its storage's numel would halve the model and inflate every percentage of it."""
    state = getattr(param, "quant_state", None)
    shape = getattr(state, "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else param.numel()


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes; None where there is no procfs."""
    try:
        line = next(x for x in STATUS.read_text().splitlines() if x.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters
FAST_MMAP, FAST_TRIM = 32 << 20, 64 << 20      # where glibc's own dynamic thresholds settle (its 64-bit maximum)
DEFAULT_TRIM = 128 << 10


def _libc() -> Any:
    """glibc, where there is one (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


class CpuTracker:
    """Makes RSS follow live tensors (on CPU, glibc) only while memory is measured, which costs nothing elsewhere.

    In ``exact`` mode glibc maps every allocation of ``threshold`` bytes or more on its own and unmaps it when freed
    (by default it keeps freed memory of up to 32 MiB for reuse, so RSS says more about the heap's history than about
    what a run needs). That mode costs CPU training ~20 % (page faults on every large tensor), so training runs in
    ``fast`` mode (glibc's own steady state) and only the steps that bound the peak
    (``bench.taskdata.encoding.peak_steps``) are measured in ``exact`` mode, after ``malloc_trim`` has returned the
    freed heap, from a reset high-water mark.
    """

    def __init__(self, threshold: int | None) -> None:
        self.threshold = threshold
        self.libc = None if threshold is None or torch.cuda.is_available() else _libc()
        self.active = bool(self.libc) and bool(self.libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
        self.step_peaks: dict[int, int] = {}   # each measured step's RSS high-water mark, in the order measured

    @property
    def peak(self) -> int | None:
        """The highest of the measured steps' peaks (None before any)."""
        return max(self.step_peaks.values(), default=None)

    @property
    def measured_steps(self) -> list[int]:
        """The steps measured so far."""
        return list(self.step_peaks)

    def exact(self) -> None:
        """Freed memory back to the OS now, and from now on large tensors mapped on their own."""
        if self.active:
            self.libc.malloc_trim(0)
            self.libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM)
            self.libc.mallopt(M_MMAP_THRESHOLD, int(self.threshold))

    def fast(self) -> None:
        """glibc's steady state: freed memory of up to 32 MiB kept for reuse (no page faults)."""
        if self.active:
            self.libc.mallopt(M_MMAP_THRESHOLD, FAST_MMAP)
            self.libc.mallopt(M_TRIM_THRESHOLD, FAST_TRIM)

    @contextlib.contextmanager
    def window(self, step: int) -> Iterator[None]:
        """Measure the RSS peak of this step (exact mode, from a reset high-water mark); the max is ``peak``."""
        self.exact()
        reset = reset_peak()
        try:
            yield
        finally:
            hwm = _status_bytes("VmHWM") if reset else None
            if hwm is not None:
                self.step_peaks[step] = hwm
            self.fast()

    def watcher(self, steps: set[int]) -> Callable[[int], contextlib.AbstractContextManager] | None:
        """``watch(step)`` for ``bench.pipeline.train.fit``: a measuring window on ``steps``, nothing elsewhere (None
        off CPU tracking, where the peak is CUDA's own statistic or the process's)."""
        if not self.active:
            return None
        self.fast()
        return lambda step: self.window(step) if step in steps else contextlib.nullcontext()


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


def peak_memory(*, was_reset: bool, tracker: CpuTracker | None = None) -> dict[str, Any]:
    """CUDA max allocated/reserved on GPU; on CPU the RSS peak of the tracker's measured steps, else since
    ``reset_peak`` (else the process's)."""
    if torch.cuda.is_available():
        return {"peak_mem_bytes": int(torch.cuda.max_memory_allocated()), "mem_kind": "cuda_allocated",
                "peak_mem_reserved_bytes": int(torch.cuda.max_memory_reserved())}
    if tracker is not None and tracker.peak is not None:
        return {"peak_mem_bytes": tracker.peak, "mem_kind": "cpu_rss_train_peak",
                "mem_measured_steps": tracker.measured_steps}
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


class MemoryBook:
    """A run's memory accounting in one place: the baseline before the model exists (DeepSpeed's own set-up
    excluded), the peak of the steps that bound it, and the pre-flight estimate beside what was measured."""

    def __init__(self, cpu_mmap_threshold: int | None) -> None:
        self.tracker = CpuTracker(cpu_mmap_threshold)   # exact RSS through set-up
        self.baseline = 0
        self.at_start = 0
        self.was_reset = False

    def start(self) -> None:
        """Memory in use before the model loads: the estimate covers what comes after."""
        self.baseline = current_memory()

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """What the block allocates counts as baseline (DeepSpeed's code and process group, not the run's tensors)."""
        before = current_memory()
        yield
        self.baseline += current_memory() - before

    def arm(self, steps: set[int]) -> Callable[[int], contextlib.AbstractContextManager] | None:
        """Just before training: memory at the start, a fresh peak, and the watcher of the steps that bound it."""
        self.at_start = current_memory()
        self.was_reset = reset_peak()
        return self.tracker.watcher(steps)

    def record(self, estimate: dict[str, Any]) -> dict[str, Any]:
        """After training: the peak and the estimate beside the measured use (``train_info``'s memory fields)."""
        peak = {**peak_memory(was_reset=self.was_reset, tracker=self.tracker),
                "cpu_rss_tracks_tensors": self.tracker.active}
        check = estimate_check(estimate, peak["peak_mem_bytes"], self.baseline, self.at_start)
        return {**peak, "mem_estimate": check, "mem_estimate_bytes": check.get("total_bytes"),
                "mem_measured_bytes": check["measured_bytes"]}
