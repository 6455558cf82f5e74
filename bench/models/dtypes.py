"""Precisions: the dtype a model YAML loads in, the precision a run trains in, and the dtype that leaves a base in."""

from __future__ import annotations

from typing import Any

import torch

TRAINED_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}   # DeepSpeed casts the parameters to these


def dtype_of(model_cfg: Any) -> torch.dtype:
    """The torch dtype a model YAML names."""
    return getattr(torch, model_cfg.dtype)


def resolve(ds_cfg: Any) -> str:
    """The training precision: fp16 on an accelerator and fp32 on CPU for ``auto``; otherwise what the YAML says."""
    from deepspeed.accelerator import get_accelerator

    if ds_cfg.precision != "auto":
        return ds_cfg.precision
    return "fp32" if get_accelerator().device_name() == "cpu" else "fp16"


def trained_dtype(model_cfg: Any, precision: str) -> torch.dtype:
    """The dtype the base's weights had in training (a run's ``train_info.precision``): what a user reloads the base
    in to get what the run reported. fp32 leaves the YAML's dtype."""
    return TRAINED_DTYPES.get(precision, dtype_of(model_cfg))
