"""Saving what a method trained, as safetensors, and measuring its tensors' size on disk."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

# Files that hold tensors. save_pretrained also writes adapter_config.json and a ~5 KiB model card, both
# holding absolute paths: counting them made a prompt-tuning adapter half boilerplate, and its size
# depended on where the run wrote (a CI clone's longer paths read as a regression).
TENSOR_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def tensor_bytes(path: Path) -> int:
    """Total size of the tensor files under ``path`` (the weights a user ships, not the metadata)."""
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in TENSOR_SUFFIXES)
    if total == 0:
        raise RuntimeError(f"no tensor file ({', '.join(TENSOR_SUFFIXES)}) was written under {path}")
    return total


def peft_adapter(model: Any, out_dir: Path, method_cfg: Any) -> dict[str, int]:
    """``save_pretrained`` the adapter, plus each variant the YAML asks for (e.g. VB-LoRA top-k only)."""
    sizes = {}
    model.save_pretrained(out_dir / "adapter")
    sizes["adapter"] = tensor_bytes(out_dir / "adapter")
    config = model.peft_config[model.active_adapter]
    for variant, attrs in (method_cfg.adapter_variants or {}).items():
        original = copy.copy(config)
        for key, value in attrs.items():
            setattr(config, key, value)
        model.save_pretrained(out_dir / f"adapter_{variant}")
        model.peft_config[model.active_adapter] = original
        sizes[variant] = tensor_bytes(out_dir / f"adapter_{variant}")
    return sizes


def trainable_state(model: Any, out_dir: Path, method_cfg: Any) -> dict[str, int]:
    """The trained tensors only (all of them for full fine-tuning), as one safetensors file."""
    path = out_dir / "adapter"
    path.mkdir(parents=True, exist_ok=True)
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(state, str(path / "trained.safetensors"))
    return {"adapter": tensor_bytes(path)}
