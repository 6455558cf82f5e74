"""The pre-flight memory estimate: its activation count, and its total against measured peaks on CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import peft
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from bench.pipeline import estimate
from tests.conftest import ROOT, child_env, compose_cfg

SHAPE = dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, vocab_size=300)


def build(device: str, method: peft.PeftConfig | None) -> torch.nn.Module:
    config = AutoConfig.for_model("llama", **SHAPE)
    with torch.device(device):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
        return peft.get_peft_model(model, method) if method else model


def real_saved_bytes(model: torch.nn.Module, batch: int, length: int) -> int:
    """What autograd keeps in a real CPU forward (each storage once, weights excluded)."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage()._cdata not in params:
            kept[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    model.train()
    ids = torch.randint(0, SHAPE["vocab_size"], (batch, length))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(kept.values())


@pytest.mark.parametrize("method", [None,
                                    peft.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"]),
                                    peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8)],
                         ids=["full", "lora", "prefix"])
def test_meta_count_matches_a_real_forward(method):
    counted = estimate.saved_activation_bytes(build("meta", method), batch=4, length=96, label_length=96)
    real = real_saved_bytes(build("cpu", method), 4, 96)
    assert counted == pytest.approx(real, rel=0.1)


def test_estimate_parts_follow_zero_and_precision():
    model = build("meta", peft.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    est = estimate.estimate(model, precision="fp16", ds_config={"zero_optimization": {"stage": 1}}, world_size=2,
                          batch=2, length=32, label_length=32, vocab=300, layers=2)
    assert est["weights_bytes"] == 2 * total and est["gradients_bytes"] == 2 * trainable   # bucket ≤ trainable
    assert est["master_weights_bytes"] == 4 * trainable // 2 and est["optimizer_states_bytes"] == 8 * trainable // 2
    assert est["optimizer_step_bytes"] == 8 * trainable // 2          # fp32 gradient partition + one temporary
    static = est["weights_bytes"] + est["master_weights_bytes"] + est["optimizer_states_bytes"]
    backward = est["gradients_bytes"] + est["activations_bytes"] + est["backward_transient_bytes"]
    assert est["total_bytes"] == static + max(backward, est["optimizer_step_bytes"])


def test_preflight_sizes_real_models_without_their_weights():
    lora = estimate.preflight(compose_cfg("model=codellama_34b", "method=lora", "train.micro_batch_size=1",
                                        "task.max_length=512", "deepspeed.precision=fp16"))
    assert 2 * 33e9 < lora["weights_bytes"] < 2 * 35e9            # 34B parameters in fp16
    assert lora["optimizer_states_bytes"] < 1e9 < lora["activations_bytes"]   # q/v adapters; 48 layers × 512
    full = estimate.preflight(compose_cfg("model=llama2_7b", "method=full", "train.micro_batch_size=1",
                                        "task.max_length=512", "deepspeed.precision=fp16"), world_size=8)
    assert full["optimizer_states_bytes"] == pytest.approx(8 * 6.74e9 / 8, rel=0.01)   # AdamW moments, sharded


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora", "prefix_tuning"])
def test_estimate_within_a_quarter_of_the_measured_peak(cache_dir, tmp_path, method):
    """A 45M-parameter LLaMA on CPU (tensors dominate the process's growth), every batch of the data seen."""
    overrides = ["model.arch.hidden_size=512", "model.arch.intermediate_size=1376", "model.arch.num_hidden_layers=4",
                 "model.arch.num_attention_heads=8", "model.arch.num_key_value_heads=8", "model.pretrain.steps=2",
                 "task.generator.n_train=64", "task.base_task.generator.n_train=64",
                 "task.base_task.generator.n_test=4", "task.base_task.min_score=null", "train.steps=10",
                 "train.micro_batch_size=8", "eval.max_records=4", "eval.latency.records=4", "eval.latency.repeats=1",
                 "forgetting.measure=none",
                 f"method={method}", f"cache_dir={cache_dir}", f"out_dir={tmp_path}"]
    done = subprocess.run([sys.executable, "-m", "bench.run", *overrides], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    train = json.loads((tmp_path / "result.json").read_text())["train_info"]
    assert train["mem_kind"] == "cpu_rss_train_peak" and train["cpu_rss_tracks_tensors"]
    assert 0.75 <= train["mem_estimate"]["ratio"] <= 1.25, train["mem_estimate"]
