"""End to end through the real ``deepspeed`` launcher: determinism and reloading the saved adapter."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, child_env, deepspeed_cmd

pytestmark = pytest.mark.slow


def launch(out: Path, cache: Path, *overrides: str) -> dict:
    """One run through ``deepspeed --no_local_rank --module bench.run``; returns its result JSON."""
    cmd = [*deepspeed_cmd(), "bench.run", *TINY,
           f"cache_dir={cache}", f"out_dir={out}", *overrides]
    env = child_env()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, cache_dir):
    """The same LoRA command twice with the same seed."""
    root = tmp_path_factory.mktemp("launch")
    return [(root / name, launch(root / name, cache_dir, "method=lora", "train.steps=20")) for name in ("a", "b")]


def test_launcher_run_succeeds_with_world_size_one(lora_runs):
    _, result = lora_runs[0]
    assert result["run_info"]["status"] == "success"
    assert result["meta_info"]["world_size"] == 1
    assert result["train_info"]["precision"] == "fp32"


def test_same_seed_same_numbers(lora_runs):
    (_, a), (_, b) = lora_runs
    assert a["eval_info"]["f1_micro"] == b["eval_info"]["f1_micro"]
    assert a["train_info"]["final_loss"] == b["train_info"]["final_loss"]
    assert a["train_info"]["loss_curve"] == b["train_info"]["loss_curve"]


def test_saved_adapter_reloads_with_plain_peft_and_reproduces_predictions(lora_runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.pipeline import evaluate
    from tests.conftest import compose_cfg

    out, result = lora_runs[0]
    base = AutoModelForCausalLM.from_pretrained(result["base_info"]["path"])
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    model = PeftModel.from_pretrained(base, out / "adapter")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    task = compose_cfg().task
    prompts = [task.prompt_template.format(instruction=r["instruction"], input=r["input"]) for r in rows]
    answers, _, _ = evaluate.generate(model, tokenizer, prompts,
                                      batch_size=result["run_info"]["config"]["eval"]["batch_size"],
                                      max_new_tokens=task.max_new_tokens,
                                      max_prompt_tokens=task.max_length - task.max_new_tokens)
    assert answers == [r["prediction"] for r in rows]
