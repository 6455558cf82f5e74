"""AdaLoRA's hooks keep PEFT's semantics around a DeepSpeed step: unscaled fp32 importance, overflow steps
skipped, masks after the step and on the master weights, the final budget met exactly."""

from __future__ import annotations

import types

import pytest
import torch
from peft import AdaLoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from methods import adalora

SCALE = 2.0**16   # DeepSpeed's initial fp16 loss scale (initial_scale_power 16)


def fake_engine(model: torch.nn.Module, *, fp16: bool) -> types.SimpleNamespace:
    """The parts of a DeepSpeed engine the hooks read: the module, fp16 on/off and the loss scale."""
    return types.SimpleNamespace(module=model, fp16_enabled=lambda: fp16,
                                 optimizer=types.SimpleNamespace(loss_scale=SCALE if fp16 else 1.0))


@pytest.fixture
def peft_model() -> torch.nn.Module:
    """A two-layer LLaMA with AdaLoRA on q/v: 4 modules × init_r 6, budget 4 modules × target_r 3."""
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2))
    config = AdaLoraConfig(task_type="CAUSAL_LM", init_r=6, target_r=3, target_modules=["q_proj", "v_proj"],
                           total_step=12, tinit=1, tfinal=3, deltaT=1)
    model = get_peft_model(base, config)
    with torch.no_grad():   # lora_E starts at zero in PEFT; give every singular value a distinct size
        for name, param in model.named_parameters():
            if "lora_E" in name:
                param.copy_(torch.rand_like(param) + 0.1)
    return model


def lora_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The adapter's tensors by the allocator's names."""
    return dict(adalora._adapter_params(model.base_model))


def set_grads(model: torch.nn.Module, grads: dict[str, torch.Tensor], scale: float) -> None:
    """Gradients as DeepSpeed's fp16 engine holds them before its step: multiplied by the loss scale."""
    for name, param in lora_params(model).items():
        param.grad = (grads[name] * scale).to(param.dtype)


def test_importance_comes_from_unscaled_gradients_and_an_overflow_step_is_skipped(peft_model):
    engine, state = fake_engine(peft_model, fp16=True), {}
    params = lora_params(peft_model)
    torch.manual_seed(1)
    grads = {n: torch.randn_like(p) * 1e-3 for n, p in params.items()}
    set_grads(peft_model, grads, SCALE)
    adalora.pre_step(engine, 0, state)
    adalora.post_step(engine, 0, state)
    allocator = peft_model.base_model.rankallocator
    beta1 = allocator.beta1
    for name, param in params.items():
        expected = (1 - beta1) * (param.detach().float() * grads[name]).abs()
        torch.testing.assert_close(allocator.exp_avg_ipt[name], expected, rtol=1e-5, atol=1e-12)
    before = {n: t.clone() for n, t in allocator.exp_avg_ipt.items()}
    overflow = {n: g.clone() for n, g in grads.items()}
    next(iter(overflow.values()))[0, 0] = float("inf")   # one non-finite gradient: DeepSpeed skips this step
    set_grads(peft_model, overflow, SCALE)
    adalora.pre_step(engine, 1, state)
    adalora.post_step(engine, 1, state)
    assert state["skipped_updates"] == 1 and state["updates"] == 1
    for name, value in allocator.exp_avg_ipt.items():
        assert torch.isfinite(value).all() and torch.equal(value, before[name]), name
    assert all(torch.isfinite(t).all() for t in allocator.exp_avg_unc.values())


@pytest.mark.parametrize("half", [False, True])
def test_final_allocation_meets_the_budget_with_pruned_values_exactly_zero(peft_model, half):
    model = peft_model.half() if half else peft_model
    engine, state = fake_engine(model, fp16=half), {}
    config = model.peft_config["default"]
    torch.manual_seed(2)
    for step in range(config.total_step):
        grads = {n: torch.randn_like(p, dtype=torch.float32) * 1e-2 for n, p in lora_params(model).items()}
        set_grads(model, grads, SCALE if half else 1.0)
        adalora.pre_step(engine, step, state)
        with torch.no_grad():   # the optimizer "regrows" every value, as AdamW's momentum does
            for name, param in lora_params(model).items():
                param.add_(0.01)
                param.grad = None
        adalora.post_step(engine, step, state)
    summary = adalora.summary(model, state)
    assert summary["total_rank"] == summary["target_total_rank"] == 4 * 3
    assert summary["pruned_nonzero"] == 0
    pruned = sum(len(mask) - sum(mask) for mask in config.rank_pattern.values())
    zeros = sum(int((p == 0).sum()) for n, p in lora_params(model).items() if "lora_E" in n)
    assert pruned == 4 * (6 - 3) and zeros == pruned
