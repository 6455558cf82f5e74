"""Every method trains a few steps in-process on a tiny cached base and writes a complete result; what each reports
is what its saved weights give, reloaded in one fresh process for all of them."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import execute
from tests.conftest import ROOT, TINY, child_env, compose_cfg

METHODS = ["full", "freeze", "prompt_tuning", "p_tuning", "prefix_tuning", "p_tuning_v2", "lora", "adalora", "vblora"]
REQUIRED = {
    "run_info": ["run_id", "status", "config", "config_hash", "git_sha", "seed"],
    "train_info": ["steps", "train_time_s", "tokens_per_s", "loss_curve", "final_loss", "eval_loss", "peak_mem_bytes",
                   "mem_kind", "mem_estimate_bytes", "mem_measured_bytes", "trainable_params", "total_params",
                   "trainable_pct", "adapter_bytes"],
    "eval_info": ["precision", "recall", "f1_micro", "f1_macro", "exact_match", "parse_fail_rate", "n",
                  "latency_ms_mean", "latency_ms_p50", "latency_ms_p95", "gen_tokens_per_s", "infer_ms_adapter"],
    "meta_info": ["versions", "device", "world_size"],
    "base_info": ["key", "build_time_s", "source_metric", "source_score"],
    "task_info": ["name", "primary_metric", "metric_list", "splits"],
}


def run(cfg) -> dict:
    assert execute(cfg) == 0
    return json.loads((Path(cfg.out_dir) / "result.json").read_text())


def reproduce(out: Path, *batch_sizes: int, more: tuple[Path, ...] = ()) -> dict:
    """``bench.pipeline.reload`` in a fresh process: the saved weights reloaded as a user would, regenerated,
    re-scored (with ``more`` runs: one process, a report per run directory)."""
    sizes = [arg for b in batch_sizes for arg in ("--batch-size", str(b))]
    done = subprocess.run([sys.executable, "-m", "bench.reproduce", str(out), *map(str, more), *sizes, "--plain"],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return json.loads(done.stdout)


BF16 = ["prompt_tuning", "adalora"]   # the two an H200 caught in fp16


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> dict[str, tuple[dict, dict | None]]:
    """Every method in fp32 and ``BF16`` in bf16, trained in this process; each successful run's saved weights
    reloaded in one fresh process (batch 1, the eval batch of 8, plain generate). Name → (result, its report)."""
    root = tmp_path_factory.mktemp("methods")
    runs = {**{m: [f"method={m}"] for m in METHODS}, **{f"{m}-bf16": [f"method={m}", "deepspeed=bf16"] for m in BF16}}
    results = {}
    for name, overrides in runs.items():
        cfg = compose_cfg(*TINY, f"cache_dir={cache_dir}", f"out_dir={root / name}", *overrides)
        execute(cfg)
        results[name] = json.loads((root / name / "result.json").read_text())
    done = [root / name for name, result in results.items() if result["run_info"]["status"] == "success"]
    reports = reproduce(done[0], 1, 8, more=tuple(done[1:])) if len(done) > 1 else {}
    if len(done) == 1:   # one run directory: bench.reproduce prints that run's report
        reports = {str(done[0]): reproduce(done[0], 1, 8)}
    return {name: (result, reports.get(str(root / name))) for name, result in results.items()}


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_and_records_everything(trained, method):
    result, report = trained[method]
    assert result["run_info"]["status"] == "success", result["run_info"]["error"]
    for section, keys in REQUIRED.items():
        for key in keys:
            assert result[section][key] is not None, f"{section}.{key} is null"
    train = result["train_info"]
    curve = train["loss_curve"]
    assert len(curve) == 12 and all(x == x for x in curve)
    assert statistics.mean(curve[-3:]) < statistics.mean(curve[:3]), f"{method} loss did not fall: {curve}"
    # The loss is the task's cross-entropy for every method; a method's own term (AdaLoRA's) is recorded beside it.
    extra = [o - c for o, c in zip(train["objective_curve"], curve)]
    assert all(x > 1e-3 for x in extra) if method == "adalora" else all(abs(x) < 1e-4 for x in extra), extra
    assert train["final_loss_steps"] == 2 and min(curve[-2:]) <= train["final_loss"] <= max(curve[-2:])
    # What the run reports is what its saved weights give, reloaded in a fresh process: at batch 1, at batch 8 (the
    # 8 records of different lengths in one left-padded batch, as the run's eval.batch_size batched them) and with
    # plain generate.
    assert int(result["run_info"]["config"]["eval"]["batch_size"]) >= 8
    assert report["rescored_equal"], "re-scoring predictions.jsonl does not give eval_info"
    for setup, outcome in report["setups"].items():
        assert outcome["identical"] == 8 and outcome["metrics_equal"], f"{method} {setup}: {outcome}"
    assert 0 < train["trainable_params"] <= train["total_params"]
    assert (train["trainable_pct"] == 100.0) == (method == "full")
    assert train["adapter_bytes"] > 0 and result["eval_info"]["n"] == 8
    written = sum(f.stat().st_size for f in (Path(result["run_info"]["config"]["out_dir"]) / "adapter").iterdir()
                  if f.suffix == ".safetensors")
    assert train["adapter_bytes"] == written, "the adapter size counts files other than the tensors"
    # Latency rows: merged only where the YAML says the adapter merges, the base wherever peft can disable it.
    ev = result["eval_info"]
    mergeable = method in ("lora", "adalora", "vblora")
    assert (ev["infer_ms_merged"] is not None) == mergeable and (ev["infer_ms_base"] is not None) == (method not in
                                                                                                    ("full", "freeze"))
    assert ev["merged_agreement"] == (1.0 if mergeable else None)   # fp32: merging changes no greedy token
    assert 0 < train["mem_estimate_bytes"] and train["mem_estimate"]["activations_bytes"] > 0


@pytest.mark.parametrize("method", BF16)
def test_a_bf16_run_reports_what_its_saved_weights_give_in_bf16(trained, method):
    """Reported = reloaded in the run's own precision: DeepSpeed trains in bf16 (fp16 has no CPU kernel here), the
    reload puts the base in bf16 and the adapter through plain ``from_pretrained`` (tests/test_precision.py)."""
    result, report = trained[f"{method}-bf16"]
    assert result["run_info"]["status"] == "success", result["run_info"]["error"]
    assert result["train_info"]["precision"] == "bf16"
    assert report["rescored_equal"]
    for setup, outcome in report["setups"].items():
        assert outcome["identical"] == 8 and outcome["metrics_equal"], f"{method} bf16 {setup}: {outcome}"


def test_adalora_meets_its_budget_with_pruned_values_exactly_zero(tiny_cfg):
    summary = run(tiny_cfg("method=adalora", "train.steps=20"))["train_info"]["method_summary"]
    ranks = summary["rank_allocation"]
    assert ranks and all(0 <= r <= summary["init_r"] for r in ranks.values())
    assert summary["total_rank"] == summary["target_total_rank"] == summary["target_r"] * len(ranks)
    assert summary["pruned_nonzero"] == 0, "pruned singular values are not zero in the evaluated model"
    assert summary["importance_updates"] == 16 and summary["importance_updates_skipped"] == 0


def test_gradient_checkpointing_trains_the_adapter_as_without_it(tiny_cfg, tmp_path):
    curves = []
    for checkpointing in ("false", "true"):
        cfg = tiny_cfg("method=lora", "train.steps=4", f"train.gradient_checkpointing={checkpointing}",
                       out=tmp_path / checkpointing)
        curves.append(run(cfg)["train_info"]["loss_curve"])
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)


def test_vblora_topk_variant_is_smaller(trained):
    train = trained["vblora"][0]["train_info"]
    assert 0 < train["adapter_bytes_variants"]["topk_only"] < train["adapter_bytes"]


def test_freeze_trains_only_the_last_layers(tiny_cfg, trained):
    full = trained["full"][0]["train_info"]["trainable_params"]
    cfg = tiny_cfg("method=freeze", "method.layers=1")
    frozen = run(cfg)["train_info"]["trainable_params"]
    assert 0 < frozen < full / 2


def test_invalid_budget_is_refused_without_success(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=0")
    assert execute(cfg) == 2
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["run_info"]["status"] == "invalid" and "train.steps" in result["run_info"]["error"]


def test_unknown_method_lists_choices():
    with pytest.raises(Exception, match="lora"):
        compose_cfg("method=nope")


def test_adapter_size_does_not_depend_on_the_paths_in_its_metadata(tmp_path):
    from omegaconf import OmegaConf
    from peft import PromptTuningConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from methods.savers import peft_adapter

    base = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    method = OmegaConf.create({"adapter_variants": None})
    sizes = []
    for where in ("/b", "/" + "long/" * 40 + "base"):
        model.peft_config["default"].base_model_name_or_path = where
        sizes.append(peft_adapter(model, tmp_path / where.replace("/", "_"), method)["adapter"])
    assert sizes[0] == sizes[1] < 4 * 16 * 4 + 1024   # 4 virtual tokens × hidden 16 in fp32, plus the header
