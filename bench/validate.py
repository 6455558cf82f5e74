"""Cheap checks before any model is loaded: each error names the field, the bad value and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value the run cannot use."""


def _positive(cfg: Any, dotted: str) -> None:
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    if value is None or float(value) <= 0:
        raise ConfigError(f"{dotted}={value} must be > 0")


def check(cfg: Any) -> None:
    """Raise ``ConfigError`` for the first problem found in the composed config."""
    for key in ("train.steps", "train.micro_batch_size", "train.grad_accum", "method.lr", "eval.batch_size",
                "task.max_length", "task.max_new_tokens"):
        _positive(cfg, key)
    for i, group in enumerate(cfg.method.param_groups or []):
        if "match" not in group or float(group.get("lr", 0)) <= 0:
            raise ConfigError(f"method.param_groups[{i}]={dict(group)} needs a 'match' substring and an lr > 0")
    if Path(cfg.out_dir).is_file():
        raise ConfigError(f"out_dir={cfg.out_dir} is a file; point out_dir at a directory")
    if cfg.model.source not in ("tiny", "hub", "local"):
        raise ConfigError(f"model.source={cfg.model.source!r} must be tiny, hub or local")
    if cfg.model.source == "tiny" and not cfg.model.get("arch"):
        raise ConfigError(f"model.source=tiny needs model.arch (the architecture to build) in {cfg.model.name}")
    if cfg.model.source == "local" and not Path(str(cfg.model.path)).is_dir():
        raise ConfigError(f"model.path={cfg.model.path} is not a folder (model.source=local)")
    if cfg.train.gradient_checkpointing and not cfg.method.supports_gradient_checkpointing:
        raise ConfigError(f"train.gradient_checkpointing=true is not supported by method={cfg.method.name}; "
                          "set train.gradient_checkpointing=false")
    layers = cfg.model.arch.get("num_hidden_layers") if cfg.model.get("arch") else None
    n = cfg.method.get("layers")
    if n is not None and (int(n) <= 0 or (layers is not None and int(n) > int(layers))):
        raise ConfigError(f"method.layers={n} must be in 1..{layers or 'the model’s layer count'}")
    if cfg.task.get("generator") is None:
        for split in ("train_file", "eval_file"):
            if not Path(str(cfg.task[split])).is_file():
                raise ConfigError(f"task.{split}={cfg.task[split]} does not exist; point it at a JSON/JSONL file")
