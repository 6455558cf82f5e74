"""The pre-flight memory check: a run's estimate against the memory free on its device (CPU RAM or the GPU), before
training allocates anything. A run that cannot fit is refused in seconds, naming the largest micro-batch that fits,
instead of being ended by the kernel's OOM killer hours later (``train.memory_check``: refuse | warn | off)."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from bench.core.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("refuse", "warn", "off")
MARGIN = 0.10    # an estimate within this share of the free memory is warned about: the estimate is ±20 %
GIB = 2**30
# CPU training between the measured steps runs at glibc's speed (bench.pipeline.costs.CpuTracker's fast mode), where
# the heap keeps freed activations resident: the process's peak exceeds the tensors' by this share of the activations
# and backward's working set. Measured (the worker's RSS sampled every 0.25 s), SmolLM2-135M LoRA: micro-batch 8 ×
# 315 tokens, 7.68 GiB in the measured (exact) steps, 9.95 in the next: +2.27 GiB, 0.33 of their 6.89; micro-batch
# 16 × 192 (triples_synth), 9.38 against 12.26: +2.88, 0.34 of 8.40. Rounded up.
CPU_HEAP_SHARE = 0.35


def local_ranks() -> int:
    """Processes of this run on this machine: on CPU they share its RAM (the launcher sets LOCAL_SIZE)."""
    return int(os.environ.get("LOCAL_SIZE") or os.environ.get("LOCAL_WORLD_SIZE") or 1)


def free_bytes() -> tuple[int, str]:
    """Memory free for one rank now, and where: the GPU's free memory, or CPU RAM available (page cache it can
    drop included) shared by this machine's ranks."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0]), f"GPU {torch.cuda.current_device()}"
    import psutil

    ranks = local_ranks()
    return int(psutil.virtual_memory().available) // ranks, "CPU RAM" + (f" (a {ranks}th each)" if ranks > 1 else "")


def heap_share() -> float:
    """What the allocator keeps beyond the tensors, as a share of the per-row memory: glibc's heap on CPU (measured,
    ``CPU_HEAP_SHARE``); CUDA's caching allocator is what the GPU estimate was measured against (0)."""
    import torch

    return 0.0 if torch.cuda.is_available() else CPU_HEAP_SHARE


def per_sample(est: dict[str, Any], share: float = 0.0) -> float:
    """Bytes each row of a micro-batch adds: the activations and backward's working set grow with the batch (and
    with them what the allocator keeps, ``share`` of it)."""
    return (1 + share) * (est["activations_bytes"] + est["backward_transient_bytes"]) / max(int(est["batch"]), 1)


def needed_bytes(est: dict[str, Any], share: float = 0.0) -> int:
    """The estimate's total plus what the allocator keeps beyond the tensors."""
    return int(est["total_bytes"] + share * (est["activations_bytes"] + est["backward_transient_bytes"]))


def fitting_batch(est: dict[str, Any], free: int, share: float = 0.0) -> int:
    """The largest micro-batch whose estimate fits in ``free`` bytes at the same sequence length (0: none does)."""
    static = est["weights_bytes"] + est["master_weights_bytes"] + est["optimizer_states_bytes"]
    if static + est["optimizer_step_bytes"] > free:
        return 0
    return max(0, math.floor((free - static - est["gradients_bytes"]) / per_sample(est, share)))


def figures(est: dict[str, Any], *, held: int = 0) -> dict[str, Any]:
    """What the run needs with the allocator's share, the memory free for it (free now plus ``held``, what it already
    holds), where, and the largest micro-batch that fits there."""
    free, where = free_bytes()
    usable, share = free + max(held, 0), heap_share()
    return {"needed_bytes": needed_bytes(est, share), "free_bytes": usable, "free_where": where,
            "fitting_micro_batch": fitting_batch(est, usable, share)}


def check(est: dict[str, Any], *, held: int, mode: str, grad_accum: int) -> dict[str, Any]:
    """Compare the estimate with the memory free for this run (free now plus what it already holds: the loaded
    weights count in both); refuse (``ConfigError``: the run is invalid) or warn where it does not fit, warn where
    it is within ``MARGIN``. Returns the figures recorded beside the estimate."""
    if mode not in MODES:
        raise ConfigError(f"train.memory_check={mode!r} must be one of {', '.join(MODES)}")
    if mode == "off" or "total_bytes" not in est:
        if mode != "off":
            log.warning("no memory check: the run has no estimate (%s)", est.get("error"))
        return {}
    found = figures(est, held=held)
    total, usable, where, fits = (found[k] for k in ("needed_bytes", "free_bytes", "free_where", "fitting_micro_batch"))
    batch = int(est["batch"])
    if total <= usable * (1 - MARGIN):
        return found
    message = describe(total=total, heap=total - est["total_bytes"], usable=usable, where=where, batch=batch,
                       length=int(est["length"]), fits=fits, grad_accum=grad_accum)
    if total > usable and mode == "refuse":
        raise ConfigError(f"{message}; train.memory_check=warn runs it anyway (the OOM killer may end it)")
    log.warning("%s", message if total > usable else f"{message} (within {MARGIN:.0%}: it may not fit)")
    return found


def describe(*, total: int, heap: int, usable: int, where: str, batch: int, length: int, fits: int,
             grad_accum: int) -> str:
    """The estimate, the free memory and the micro-batch that fits, in one sentence."""
    kept = f", {heap / GIB:.2f} of it what glibc's heap keeps on CPU" if heap else ""
    head = (f"memory: the run needs an estimated {total / GIB:.2f} GiB per rank (micro-batch {batch} × {length} "
            f"tokens{kept}) and {usable / GIB:.2f} GiB is free on {where} (what the run holds already included)")
    if fits >= batch:
        return head
    if fits == 0:
        return (f"{head}; no micro-batch fits at this length: lower task.max_length (or the records' length), use "
                f"gradient checkpointing, a smaller model or more ranks")
    accum = math.ceil(batch * grad_accum / fits)
    return (f"{head}; train.micro_batch_size={fits} fits (with train.grad_accum={accum} for a batch of "
            f"{fits * accum}, at least the {batch * grad_accum} asked)")
