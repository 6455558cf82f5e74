"""DeepSpeed engine set-up and the training loop; method quirks arrive as hooks, never as branches."""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench import family, free_port
from bench.data import IGNORE

log = logging.getLogger(__name__)

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


def precision(ds_cfg: Any) -> str:
    """fp16 on an accelerator and fp32 on CPU for ``auto``; otherwise what the YAML says."""
    from deepspeed.accelerator import get_accelerator

    if ds_cfg.precision != "auto":
        return ds_cfg.precision
    return "fp32" if get_accelerator().device_name() == "cpu" else "fp16"


def deepspeed_config(ds_cfg: Any, *, micro_batch_size: int, grad_accum: int, grad_clip: float,
                     prec: str, trainable: int | None = None) -> dict[str, Any]:
    """The DeepSpeed JSON: ZeRO stage from the YAML, dynamic loss scaling under fp16.

    The gradient reduction bucket is no larger than the trainable parameters: DeepSpeed's default
    (5e8 elements) would hold 1 GB of GPU memory for a LoRA adapter of a few million.
    """
    zero: dict[str, Any] = {"stage": int(ds_cfg.zero_stage)}
    if trainable:
        zero["reduce_bucket_size"] = min(500_000_000, trainable)
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": grad_clip,
        "zero_optimization": zero,
        "fp16": {"enabled": prec == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "bf16": {"enabled": prec == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }
    config.update(dict(ds_cfg.get("extra") or {}))
    return config


def param_groups(model: torch.nn.Module, *, lr: float, overrides: list[Any], weight_decay: float) -> list[dict]:
    """Trainable parameters grouped by learning rate: the first override whose ``match`` is in the name wins."""
    groups = [{"params": [], "lr": float(o["lr"]), "match": o["match"]} for o in overrides]
    default = {"params": [], "lr": float(lr), "match": None}
    for name, param in model.named_parameters():
        if param.requires_grad:
            target = next((g for g in groups if g["match"] in name), default)
            target["params"].append(param)
    chosen = [g for g in [*groups, default] if g["params"]]
    for g in chosen:
        g.pop("match")
        g["weight_decay"] = weight_decay
    return chosen


def lr_lambda(total: int, *, warmup_ratio: float, schedule: str) -> Callable[[int], float]:
    """Linear warmup, then cosine, linear or constant decay, as a multiplier of each group's LR."""
    warm = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return {"cosine": 0.5 * (1 + math.cos(math.pi * progress)), "linear": 1 - progress}.get(schedule, 1.0)

    return factor


def engine_for(model: torch.nn.Module, groups: list[dict], config: dict[str, Any], *, total_steps: int,
               train_cfg: Any) -> Any:
    """``deepspeed.initialize`` with our AdamW and schedule."""
    import deepspeed

    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    factor = lr_lambda(total_steps, warmup_ratio=train_cfg.warmup_ratio, schedule=train_cfg.schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    return engine


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


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the data-parallel ranks (itself in a single process)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def warm_up() -> None:
    """A throwaway engine for a 20-parameter model: DeepSpeed loads its code (imports, the CPU accelerator's
    shared-memory op) here, ~130 MB of RSS that would otherwise count as the run's memory. ~2 s, once."""
    with torch.random.fork_rng(devices=[]):   # runs after the seed is set: the run's random numbers stay its own
        module = torch.nn.Linear(4, 4)
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 1, "reduce_bucket_size": 20},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}
    engine_for(module, [{"params": list(module.parameters()), "lr": 0.0}], config, total_steps=1,
               train_cfg=type("Warm", (), {"warmup_ratio": 0.0, "schedule": "constant"}))


CE_CHUNK_BYTES = 4 * 2**20   # fp32 logits scored at once: a real vocabulary's rows one by one, a tiny one's in a few


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the answer tokens, and their count: the task's loss for every method.

    Prompt-learning methods put virtual positions before the text, so only the last ``labels.shape[1]``
    logits are the text's. ``shift`` (the model family's ``label_shift``): 1 where the logits at a position score
    the next token (decoder-only), 0 where they score the label at the same position (an encoder–decoder's
    decoder; its virtual tokens are the encoder's). Rows are upcast to fp32 a few at a time, at most
    ``CE_CHUNK_BYTES`` (a real vocabulary's logits are large; a tiny model's 32 rows one by one cost ~2 ms a step).
    """
    logits = logits[:, logits.shape[1] - labels.shape[1]:logits.shape[1] - shift]
    target = labels[:, shift:]
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    rows = max(1, CE_CHUNK_BYTES // max(1, logits[0].numel() * 4))
    for lo in range(0, logits.shape[0], rows):
        chunk = logits[lo:lo + rows].float()
        total += torch.nn.functional.cross_entropy(chunk.reshape(-1, chunk.shape[-1]), target[lo:lo + rows].reshape(-1),
                                                   ignore_index=IGNORE, reduction="sum")
    return total, (target != IGNORE).sum()


def final_window(steps: int) -> int:
    """How many last steps ``final_loss`` averages over: a tenth of the run, at least one."""
    return max(1, math.ceil(steps / 10))


Probe = Callable[[dict[str, float]], bool]   # fn({step, tokens, seconds}) -> stop? (a learning-curve point)
Watch = Callable[[int], contextlib.AbstractContextManager]   # fn(step) -> a context around that optimizer step


def _any_rank(flag: bool, device: Any) -> bool:
    """True on every rank when it is true on one (a decision all ranks must take together)."""
    return bool(sum_over_ranks(torch.tensor([float(flag)], device=device)) > 0)


def _optimizer_step(engine: Any, stream: Iterator[dict[str, torch.Tensor]], *, grad_accum: int, hooks: StepHooks,
                    step: int, kind: Any) -> tuple[torch.Tensor, int]:
    """One optimizer step over ``grad_accum`` micro-batches: [ce sum, answer tokens, objective sum] and the tokens."""
    sums = torch.zeros(3, dtype=torch.float64, device=engine.device)
    tokens = 0
    for _ in range(grad_accum):
        batch = next(stream)
        tokens += kind.tokens(batch)   # on the host: no device sync
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        out = engine(**batch)
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
        probe: Probe | None = None, watch: Watch | None = None) -> dict[str, Any]:
    """Run up to ``steps`` optimizer steps; the losses are read back from the device every ``log_every`` steps only.

    Training stops early at ``seconds`` of training time (the ranks decide together) or when ``probe`` (called
    every ``every`` steps with the steps, tokens and training seconds spent so far, on every rank; its own time is
    not training time) says so. ``watch(step)``: a context around each optimizer step (the memory measurement's
    windows, ``bench.measure.CpuTracker``). ``loss_curve`` is the task's token cross-entropy per optimizer step
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
    for step in range(steps):
        with watch(step) if watch else contextlib.nullcontext():
            step_sums, step_tokens = _optimizer_step(engine, stream, grad_accum=grad_accum, hooks=hooks, step=step,
                                                     kind=kind)
        tokens += step_tokens
        sums.append(step_sums)
        if progress is not None:
            progress.update()
        if (step + 1) % log_every == 0 and progress is not None:   # one device read per log_every steps
            recent = torch.stack(sums[-log_every:]).sum(dim=0)
            progress.set_postfix(loss=f"{float(recent[0] / recent[1]):.4f}", refresh=False)
        if probe is not None and every and (step + 1) % every == 0 and step + 1 < steps:
            spent = {"step": step + 1, "tokens": _total(tokens, engine.device),
                     "seconds": time.perf_counter() - start - probing}
            begun = time.perf_counter()
            stop = probe(spent)
            engine.train()
            probing += time.perf_counter() - begun
            if stop:
                stopped_by = "early_stopping"
                break
        if seconds is not None and _any_rank(time.perf_counter() - start - probing >= seconds, engine.device):
            stopped_by = "seconds"
            break
    if progress is not None:
        progress.close()
    done = len(sums)
    totals = sum_over_ranks(torch.stack(sums)).cpu()
    elapsed = time.perf_counter() - start - probing
    tokens = _total(tokens, engine.device)
    window = final_window(done)
    last = totals[-window:].sum(dim=0)
    overflow = int(getattr(engine, "skipped_steps", 0))
    scale = loss_scale(engine)
    if overflow:
        log.warning("fp16 loss scaling: %d of %d optimizer steps skipped on overflow; final loss scale %s",
                    overflow, done, scale)
    return {"steps": done, "train_tokens": tokens, "train_time_s": elapsed, "tokens_per_s": tokens / elapsed,
            "loss_curve": (totals[:, 0] / totals[:, 1]).tolist(), "objective_curve": (totals[:, 2] / totals[:, 1]).tolist(),
            "final_loss": float(last[0] / last[1]), "final_loss_steps": window, "skipped_steps": overflow,
            "loss_scale_final": scale, "stopped_by": stopped_by, "probe_time_s": probing}


def _total(tokens: int, device: Any) -> int:
    """Tokens trained on by all ranks together."""
    return int(sum_over_ranks(torch.tensor(tokens, dtype=torch.long, device=device)))


def loss_scale(engine: Any) -> float | None:
    """The dynamic loss scale the run ended with (None without fp16 loss scaling)."""
    if not engine.fp16_enabled():
        return None
    return float(getattr(engine.optimizer, "loss_scale", None) or getattr(engine.optimizer, "cur_scale", 0.0))
