"""The two methods peft does not provide: full fine-tuning and freezing all but the last N layers."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from bench.pipeline.validate import ConfigError


def full(model: PreTrainedModel, method_cfg: Any, model_cfg: Any) -> PreTrainedModel:
    """Every parameter trains."""
    model.requires_grad_(True)
    return model


def layer_count(model: PreTrainedModel, model_cfg: Any) -> int:
    """Number of transformer layers under the model YAML's ``layer_prefix``."""
    prefix = model_cfg.layer_prefix + "."
    ids = {name[len(prefix):].split(".")[0] for name, _ in model.named_parameters() if name.startswith(prefix)}
    return len(ids)


def freeze_all_but_last(model: PreTrainedModel, method_cfg: Any, model_cfg: Any) -> PreTrainedModel:
    """Only the last ``method.layers`` layers train (layer naming from ``model.layer_prefix``)."""
    total = layer_count(model, model_cfg)
    n = int(method_cfg.layers)
    if total == 0:
        raise ConfigError(f"model.layer_prefix={model_cfg.layer_prefix} matches no parameter of model="
                          f"{model_cfg.name}; set it so that layer N's parameters start with '<layer_prefix>.N.'")
    if not 0 < n <= total:
        raise ConfigError(f"method.layers={n} must be in 1..{total} (the model has {total} layers under "
                          f"'{model_cfg.layer_prefix}')")
    keep = tuple(f"{model_cfg.layer_prefix}.{i}." for i in range(total - n, total))
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(keep))
    return model
