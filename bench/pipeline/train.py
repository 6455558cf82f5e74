"""The training loop: optimizer steps to a budget, losses logged, memory windows and learning-curve probes on their
steps; method quirks arrive as hooks, never as branches."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from bench.pipeline.distributed import any_rank, sum_over_ranks, total_over_ranks
from bench.pipeline.engine_setup import loss_scale
from bench.pipeline.losses import token_cross_entropy
from bench.pipeline.trackers import NONE, Trackers
from bench.taskdata import encoding, family

log = logging.getLogger(__name__)


@dataclass
class StepHooks:
    """A method's per-step hooks (``fn(engine, step, state)``, named in its YAML) and the scratch ``state`` they
    share: ``pre_step`` sees this step's gradients before the optimizer uses them, ``post_step`` the updated
    weights (e.g. AdaLoRA scores importance from the gradients and masks after the step, as PEFT's loop does)."""

    pre: Callable[[Any, int, dict], None] | None = None
    post: Callable[[Any, int, dict], None] | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def pre_step(self, engine: Any, step: int) -> None:
        """After backward, before ``engine.step()``: gradients are this step's (loss-scaled under fp16)."""
        if self.pre is not None:
            self.pre(engine, step, self.state)

    def post_step(self, engine: Any, step: int) -> None:
        """After ``engine.step()``: the optimizer has updated the weights and zeroed the gradients."""
        if self.post is not None:
            self.post(engine, step, self.state)


def final_window(steps: int) -> int:
    """How many last steps ``final_loss`` averages over: a tenth of the run, at least one."""
    return max(1, math.ceil(steps / 10))


Probe = Callable[[dict[str, float]], bool]   # fn({step, tokens, seconds}) -> stop? (a learning-curve point)
Watch = Callable[[int], contextlib.AbstractContextManager]   # fn(step) -> a context around that optimizer step


def _optimizer_step(engine: Any, stream: Iterator[dict[str, torch.Tensor]], *, grad_accum: int, hooks: StepHooks,
                    step: int, kind: Any) -> tuple[torch.Tensor, int]:
    """One optimizer step over ``grad_accum`` micro-batches: [ce sum, answer tokens, objective sum] and the tokens."""
    sums = torch.zeros(3, dtype=torch.float64, device=engine.device)
    tokens = 0
    for _ in range(grad_accum):
        batch = next(stream)
        tokens += kind.tokens(batch)   # on the host: no device sync
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        out = engine(**encoding.model_inputs(batch))   # a packed batch: no padding mask, no cache
        with torch.no_grad():
            ce, n = token_cross_entropy(out.logits.detach(), batch["labels"], shift=kind.label_shift)
            sums += torch.stack([ce.double(), n.double(), out.loss.detach().double() * n])
        engine.backward(out.loss)
        boundary = engine.is_gradient_accumulation_boundary()
        if boundary:
            hooks.pre_step(engine, step)
        engine.step()
        if boundary:
            hooks.post_step(engine, step)
    return sums, tokens


def fit(engine: Any, stream: Iterator[dict[str, torch.Tensor]], *, steps: int, grad_accum: int, log_every: int,
        hooks: StepHooks | None = None, desc: str = "train", seconds: float | None = None, every: int = 0,
        probe: Probe | None = None, watch: Watch | None = None, tracker: Trackers = NONE) -> dict[str, Any]:
    """Run up to ``steps`` optimizer steps; the losses are read back from the device every ``log_every`` steps only.

    Training stops early at ``seconds`` of training time (the ranks decide together) or when ``probe`` (called
    every ``every`` steps with the steps, tokens and training seconds spent so far, on every rank; its own time is
    not training time) says so. ``watch(step)``: a context around each optimizer step (the memory measurement's
    windows, ``bench.pipeline.costs.CpuTracker``). ``tracker`` gets each step's values as they are read back
    (``bench.pipeline.trackers``). ``loss_curve`` is the task's token cross-entropy per optimizer step
    (token-weighted over micro-batches and ranks) for every method; ``objective_curve`` is what the optimizer
    minimised (the cross-entropy plus any term the method adds, e.g. AdaLoRA's orthogonality regularizer).
    ``final_loss`` is the token-weighted cross-entropy of the last ``final_loss_steps`` steps.
    """
    engine.train()
    hooks = hooks or StepHooks()
    kind = family.of_model(engine.module)
    sums: list[torch.Tensor] = []   # per step: [ce sum, answer tokens, objective sum]
    tokens, probing, stopped_by = 0, 0.0, "steps"
    start = time.perf_counter()
    rank0 = int(os.environ.get("RANK", 0)) == 0
    progress = tqdm(total=steps, desc=desc, mininterval=2.0) if rank0 else None
    live = tracker.stream(engine, every=log_every, clock=lambda: time.perf_counter() - start - probing)
    for step in range(steps):
        with watch(step) if watch else contextlib.nullcontext():
            step_sums, step_tokens = _optimizer_step(engine, stream, grad_accum=grad_accum, hooks=hooks, step=step,
                                                     kind=kind)
        tokens += step_tokens
        sums.append(step_sums)
        live.add(step_sums, step_tokens)
        if progress is not None:
            progress.update()
        if (step + 1) % log_every == 0 and progress is not None:   # one device read per log_every steps
            recent = torch.stack(sums[-log_every:]).sum(dim=0)
            loss = float(recent[0] / recent[1])
            progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
            log.info("%s: step %d/%d, loss %.4f (last %d steps), %.1f s", desc, step + 1, steps, loss, log_every,
                     time.perf_counter() - start - probing)   # run.log's record of the progress bar
        if probe is not None and every and (step + 1) % every == 0 and step + 1 < steps:
            spent = {"step": step + 1, "tokens": total_over_ranks(tokens, engine.device),
                     "seconds": time.perf_counter() - start - probing}
            begun = time.perf_counter()
            stop = probe(spent)
            engine.train()
            probing += time.perf_counter() - begun
            if stop:
                stopped_by = "early_stopping"
                break
        if seconds is not None and any_rank(time.perf_counter() - start - probing >= seconds, engine.device):
            stopped_by = "seconds"
            break
    if progress is not None:
        progress.close()
    live.send()
    done = len(sums)
    totals = sum_over_ranks(torch.stack(sums)).cpu()
    elapsed = time.perf_counter() - start - probing
    tokens = total_over_ranks(tokens, engine.device)
    window = final_window(done)
    last = totals[-window:].sum(dim=0)
    overflow = int(getattr(engine, "skipped_steps", 0))
    scale = loss_scale(engine)
    if overflow:
        log.warning("fp16 loss scaling: %d of %d optimizer steps skipped on overflow; final loss scale %s",
                    overflow, done, scale)
    return {"steps": done, "train_tokens": tokens, "train_time_s": elapsed, "tokens_per_s": tokens / elapsed,
            "loss_curve": (totals[:, 0] / totals[:, 1]).tolist(),
            "objective_curve": (totals[:, 2] / totals[:, 1]).tolist(),
            "final_loss": float(last[0] / last[1]), "final_loss_steps": window, "skipped_steps": overflow,
            "loss_scale_final": scale, "stopped_by": stopped_by, "probe_time_s": probing}


