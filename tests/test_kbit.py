"""k-bit bases (bench/models/kbit.py): refused where they cannot work, in seconds; trained and reproduced where
they can."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from bench.core import labels as method_labels
from bench.core.errors import ConfigError
from bench.pipeline import validate
from tests.conftest import ROOT, child_env, compose_cfg

HAVE_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAVE_BNB, reason="bitsandbytes not installed (make setup installs it)")


@pytest.mark.parametrize(("overrides", "message"), [
    (["method=full", "quantization.bits=4"], "method=full trains the base's own weights"),
    (["method=freeze", "quantization.bits=8"], "method=freeze trains the base's own weights"),
    (["quantization.bits=3"], "quantization.bits=3 must be null"),
    (["quantization.bits=4", "quantization.quant_type=int4"], "quantization.quant_type='int4' must be one of nf4"),
])
def test_bad_combinations_are_refused_before_loading(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate.check(compose_cfg(*overrides, f"out_dir={tmp_path}"))


def test_a_missing_bitsandbytes_names_the_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs bitsandbytes.*pip install 'bitsandbytes>=0.50'"):
        validate.check(compose_cfg("quantization.bits=4", f"out_dir={tmp_path}"))


@needs_bnb
def test_bitsandbytes_is_left_out_of_a_process_whose_runs_are_all_full_precision():
    """peft imports bitsandbytes at its own import (1.3–1.6 s); a process with no k-bit run marks it absent first,
    so peft loads without it and reports it unavailable (a k-bit run's process keeps it: the launched 4-bit runs
    below train through it)."""
    probe = ("import sys; from bench.models import kbit; left = kbit.leave_bitsandbytes_out([{'bits': None}, None]); "
             "kept = kbit.leave_bitsandbytes_out([{'bits': 4}]); import peft.tuners.lora; "
             "from peft.import_utils import is_bnb_available; "
             "print(left, kept, sys.modules.get('bitsandbytes') is not None, is_bnb_available())")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False", "False", "False"]


def test_method_labels_name_the_bits():
    assert method_labels.parse_label("lora@4bit") == ("lora", 4) and method_labels.parse_label("lora") == ("lora", None)
    assert method_labels.method_label("lora", 8) == "lora@8bit"
    assert method_labels.method_order(["lora@4bit", "full", "lora", "lora@8bit"]) == ["full", "lora", "lora@4bit",
                                                                                  "lora@8bit"]
    with pytest.raises(ValueError, match="lora@4bit or lora@8bit"):
        method_labels.parse_label("lora@four")


@pytest.mark.parametrize("k", [4, 8])
def test_memory_estimate_counts_quantized_weights(k):
    from bench.pipeline import estimate

    plain = estimate.preflight(compose_cfg("method=lora"))
    quant = estimate.preflight(compose_cfg("method=lora", f"quantization.bits={k}"))
    assert quant["weights_bytes"] < plain["weights_bytes"] and quant["optimizer_states_bytes"] == \
        plain["optimizer_states_bytes"]


def _sweep_and_reproduce(tmp_path, cache_dir, labels: list[str]) -> None:
    """``labels`` (e.g. lora@4bit) as a sweep's grid names them, at a tiny budget; each saved adapter reloads on a
    base quantized the same way, in a fresh process, and gives the reported predictions."""
    out, env = tmp_path / "sweep", {**child_env(), "PEFTBENCH_CACHE": str(cache_dir)}
    cmd = [sys.executable, "-m", "bench.sweep", f"methods=[{','.join(labels)}]", f"sweep_dir={out}",
           "report=false", "--", "model.pretrain.steps=60", "train.steps=12", "eval.max_records=8",
           "task.generator.n_train=256", "task.base_task.generator.n_train=256", "task.base_task.generator.n_test=8",
           "task.base_task.min_score=null", "eval.latency.records=4", "eval.latency.repeats=1"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for label in labels:
        run = out / "tiny_llama" / "triples_synth" / label / "seed0"
        result = json.loads((run / "result.json").read_text())
        assert result["run_info"]["config"]["quantization"]["bits"] == method_labels.parse_label(label)[1]
        curve = result["train_info"]["loss_curve"]
        assert sum(curve[-3:]) < sum(curve[:3]), curve
        check = subprocess.run([sys.executable, "-m", "bench.reproduce", str(run), "--batch-size", "1", "--plain"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]


@needs_bnb
@pytest.mark.slow
def test_lora_on_a_4_bit_base_trains_through_the_launcher_and_reproduces(tmp_path, cache_dir):
    _sweep_and_reproduce(tmp_path, cache_dir, ["lora@4bit"])


@needs_bnb
@pytest.mark.matrix
def test_lora_adalora_prompt_tuning_on_4_and_8_bit_bases(tmp_path, cache_dir):
    """The issue's set, all six (``make test-models``)."""
    _sweep_and_reproduce(tmp_path, cache_dir, [f"{m}@{k}bit" for m in ("lora", "adalora", "prompt_tuning")
                                               for k in (4, 8)])
