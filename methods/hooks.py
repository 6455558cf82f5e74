"""Per-step and end-of-run hooks that a method YAML names; the loop calls them for any method."""

from __future__ import annotations

from typing import Any


def adalora_update_and_allocate(model: Any, step: int) -> None:
    """AdaLoRA's budget update: needs this step's gradients, so it runs before they are zeroed.

    ZeRO keeps gradients in its own partitioned buffers (``param.grad`` is None after backward), so the
    full gradient of each LoRA parameter is lent to ``param.grad`` for the update and taken back after.
    """
    from deepspeed.utils import safe_get_full_grad

    lent = []
    for name, param in model.named_parameters():
        if "lora_" in name and param.requires_grad and param.grad is None:
            grad = safe_get_full_grad(param)
            if grad is None:
                raise RuntimeError(f"no gradient for {name}: AdaLoRA's update must run after backward")
            param.grad = grad.to(param.dtype)
            lent.append(param)
    try:
        model.base_model.update_and_allocate(step)
    finally:
        for param in lent:
            param.grad = None


def adalora_rank_allocation(model: Any) -> dict[str, Any]:
    """The final rank of every adapted module, as AdaLoRA allocated it."""
    config = model.peft_config[model.active_adapter]
    pattern = config.rank_pattern or {}
    ranks = {name: int(sum(bool(x) for x in mask)) for name, mask in pattern.items()}
    return {"rank_allocation": ranks, "total_rank": sum(ranks.values()), "init_r": config.init_r,
            "target_r": config.target_r}
