"""The DeepSpeed engine of a run: its JSON config, the optimizer's parameter groups, the schedule, and the loss
scale."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.core.errors import ConfigError


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


def loss_scale(engine: Any) -> float | None:
    """The dynamic loss scale the run ended with (None without fp16 loss scaling)."""
    if not engine.fp16_enabled():
        return None
    return float(getattr(engine.optimizer, "loss_scale", None) or getattr(engine.optimizer, "cur_scale", 0.0))


def warm_up() -> None:
    """A throwaway engine for a 20-parameter model: DeepSpeed loads its code (imports, the CPU accelerator's
    shared-memory op) here, ~130 MB of RSS that would otherwise count as the run's memory. ~2 s, once."""
    with torch.random.fork_rng(devices=[]):   # runs after the seed is set: the run's random numbers stay its own
        module = torch.nn.Linear(4, 4)
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 1, "reduce_bucket_size": 20},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}
    engine_for(module, [{"params": list(module.parameters()), "lr": 0.0}], config, total_steps=1,
               train_cfg=type("Warm", (), {"warmup_ratio": 0.0, "schedule": "constant"}))


def deepspeed_extra(ds_cfg: Any) -> dict[str, Any]:
    """``deepspeed.extra`` over the parsed ``json_file``: the settings merged into the generated DeepSpeed JSON."""
    from omegaconf import OmegaConf

    extra = ds_cfg.get("extra") or {}
    return {**deepspeed_json(ds_cfg), **(OmegaConf.to_container(extra, resolve=True) if OmegaConf.is_config(extra)
                                         else dict(extra))}


def deepspeed_json(ds_cfg: Any) -> dict[str, Any]:
    """The parsed ``deepspeed.json_file`` ({} when unset); errors name the file and line."""
    name = ds_cfg.get("json_file")
    if not name:
        return {}
    path = Path(str(name))
    if not path.is_file():
        raise ConfigError(f"deepspeed.json_file={path} does not exist or is not a file; point it at a DeepSpeed JSON")
    try:
        parsed = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"deepspeed.json_file={path}: malformed JSON at line {err.lineno}, column {err.colno}: "
                          f"{err.msg}; fix the file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"deepspeed.json_file={path} cannot be read as UTF-8 text ({err})") from err
    if not isinstance(parsed, dict):
        raise ConfigError(f"deepspeed.json_file={path} holds a JSON {type(parsed).__name__}; expected an object "
                          "of DeepSpeed settings")
    return parsed
