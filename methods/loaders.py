"""Loading what a run saved onto a fresh base, the way a user would: each method YAML names its ``loader``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file


def peft_adapter(base: Any, run_dir: Path, method_cfg: Any) -> Any:  # noqa: ARG001  (the loaders share a shape)
    """Plain ``PeftModel.from_pretrained`` of the run's ``adapter/`` folder."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(run_dir / "adapter"))


def trainable_state(base: Any, run_dir: Path, method_cfg: Any) -> Any:  # noqa: ARG001
    """The trained tensors (``adapter/trained.safetensors``) loaded into the base; every one must land."""
    state = load_file(str(run_dir / "adapter" / "trained.safetensors"))
    missing = sorted(set(state) - {n for n, _ in base.named_parameters()})
    if missing:
        raise ValueError(f"{run_dir}/adapter/trained.safetensors holds tensors the base lacks: {missing[:5]}")
    base.load_state_dict(state, strict=False)
    return base
