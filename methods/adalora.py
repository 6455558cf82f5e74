"""AdaLoRA's budget update under DeepSpeed ZeRO-1, with PEFT's semantics.

PEFT's loop is backward → optimizer step → ``update_and_allocate`` → zero_grad: importance is scored
from this step's gradients and the updated weights, and the pruned singular values are zeroed after
the step. ``engine.step()`` steps and zeroes in one call, so the gradients are kept in ``pre_step``
and used in ``post_step``. Three things differ from a plain PyTorch loop and are handled here:

- ZeRO keeps each gradient in its own buffers (``param.grad`` is None) and, under fp16, multiplied by
  the loss scale: the full gradient is gathered and divided by the scale; a step whose gradients are
  not finite (an fp16 overflow, which DeepSpeed skips too) does not touch the importance scores.
- The optimizer steps fp32 master weights and copies them into the model: a mask applied to the
  model's weights alone would be undone by the next step, so the masked values are written to the
  master weights as well.
- Scores are computed on the fp32 master weights and gradients, not on fp16 copies where small
  products underflow to ties.

The schedule (``budget_schedule``, ``mask_to_budget``, ``mask_using_rank_pattern``, ``reset_ipt``) is
PEFT's own ``RankAllocator``; only the order of calls around a DeepSpeed step is ours.
"""

from __future__ import annotations

from typing import Any

import torch


def _tuner(engine: Any) -> Any:
    """The ``AdaLoraModel`` inside the engine's PEFT model."""
    return engine.module.base_model


def _adapter_params(tuner: Any) -> list[tuple[str, torch.nn.Parameter]]:
    """The adapter's trainable tensors by the names PEFT's rank allocator uses (``lora_A/B/E.<adapter>``)."""
    name = tuner.trainable_adapter_name
    return [(n, p) for n, p in tuner.model.named_parameters() if "lora_" in n and name in n and p.requires_grad]


def _loss_scale(engine: Any) -> float:
    """The factor DeepSpeed's fp16 loss scaling put into the gradients (1 without it)."""
    if not engine.fp16_enabled():
        return 1.0
    optimizer = engine.optimizer
    return float(getattr(optimizer, "loss_scale", None) or getattr(optimizer, "cur_scale", 1.0))


def _master(param: torch.nn.Parameter) -> torch.Tensor:
    """The fp32 weight the optimizer steps (ZeRO's partition, gathered), or the parameter itself in fp32."""
    from deepspeed.utils import safe_get_full_fp32_param

    full = safe_get_full_fp32_param(param)
    return full if full is not None else param.detach().float()


class _Fp32View(torch.nn.Module):
    """What PEFT's rank allocator reads through ``named_parameters()``: fp32 weights with fp32 gradients."""

    def __init__(self, tensors: dict[str, torch.Tensor], grads: dict[str, torch.Tensor] | None) -> None:
        super().__init__()
        self.tensors = {}
        for name, value in tensors.items():
            param = torch.nn.Parameter(value, requires_grad=False)
            if grads is not None:
                param.grad = grads[name]
            self.tensors[name] = param

    def named_parameters(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ARG002  (same shape as Module's)
        """The adapter's tensors, as the allocator iterates them."""
        return iter(self.tensors.items())


def pre_step(engine: Any, step: int, state: dict[str, Any]) -> None:
    """Keep this step's unscaled fp32 gradients for ``post_step``; None where they are not finite (skipped)."""
    from deepspeed.utils import safe_get_full_grad

    tuner = _tuner(engine)
    config = tuner.peft_config[tuner.trainable_adapter_name]
    if step >= config.total_step - config.tfinal:   # the allocation is final: no more importance updates
        state["grads"] = None
        return
    scale = _loss_scale(engine)
    grads = {}
    for name, param in _adapter_params(tuner):
        grad = safe_get_full_grad(param)
        if grad is None:
            raise RuntimeError(f"no gradient for {name}: AdaLoRA's pre_step must run after backward")
        grads[name] = grad.detach().float() / scale
    finite = all(bool(torch.isfinite(g).all()) for g in grads.values())
    state["grads"] = grads if finite else None
    state["skipped_updates"] = state.get("skipped_updates", 0) + (not finite)
    state["updates"] = state.get("updates", 0) + finite


def post_step(engine: Any, step: int, state: dict[str, Any]) -> None:
    """PEFT's ``update_and_allocate`` for this step, on the stepped weights; masks reach the master weights too."""
    tuner = _tuner(engine)
    config = tuner.peft_config[tuner.trainable_adapter_name]
    allocator = tuner.rankallocator
    grads = state.pop("grads", None)
    params = dict(_adapter_params(tuner))
    view = _Fp32View({n: _master(p) for n, p in params.items()}, grads)
    final = config.total_step - config.tfinal
    masked = False
    if step < final:
        if grads is not None:
            allocator.update_ipt(view)
        budget, mask_now = allocator.budget_schedule(step)
        if mask_now and allocator.exp_avg_ipt:   # nothing to rank before a first finite step
            config.rank_pattern = allocator.mask_to_budget(view, budget)
            masked = True
    elif step == final and allocator.exp_avg_ipt:
        budget, _ = allocator.budget_schedule(step)
        config.rank_pattern = allocator.mask_to_budget(view, budget)
        allocator.reset_ipt()
        masked = True
    elif config.rank_pattern:
        allocator.mask_using_rank_pattern(view, config.rank_pattern)
        masked = True
    if masked:
        _write_back(params, view)


def _write_back(params: dict[str, torch.nn.Parameter], view: _Fp32View) -> None:
    """The masked singular values into the optimizer's master weights and the model's own weights."""
    from deepspeed.utils import safe_set_full_fp32_param

    with torch.no_grad():
        for name, param in params.items():
            if ".lora_E." in f".{name}":
                value = view.tensors[name].data
                safe_set_full_fp32_param(param, value)
                param.data.copy_(value.to(param.dtype))


def summary(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """The final rank of every adapted module, the budget it had to meet, pruned values left non-zero, and how
    many steps scored importance (and how many were skipped for non-finite gradients)."""
    tuner = model.base_model
    config = tuner.peft_config[tuner.trainable_adapter_name]
    pattern = {k.replace(f".{tuner.trainable_adapter_name}", ""): v for k, v in (config.rank_pattern or {}).items()}
    ranks = {name: int(sum(bool(x) for x in mask)) for name, mask in pattern.items()}
    nonzero = 0
    for name, param in _adapter_params(tuner):
        key = name.replace(f".{tuner.trainable_adapter_name}", "")
        if key in pattern:
            pruned = ~torch.tensor(pattern[key], dtype=torch.bool, device=param.device)
            nonzero += int((param.detach().view(-1)[pruned] != 0).sum())
    return {"rank_allocation": ranks, "total_rank": sum(ranks.values()), "init_r": config.init_r,
            "target_r": config.target_r, "target_total_rank": int(tuner.rankallocator.target_bgt),
            "pruned_nonzero": nonzero, "importance_updates": state.get("updates", 0),
            "importance_updates_skipped": state.get("skipped_updates", 0)}
