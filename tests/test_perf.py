"""``make perf``'s parts: the bare loop trains the harness's own batches in a process of its own."""

from __future__ import annotations

import json

import pytest

from bench import perf
from tests.conftest import compose_cfg


def test_perf_config_composes_every_case():
    cfg = compose_cfg()   # the run config every case starts from
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(str(CONF), version_base="1.3"):
        pcfg = compose("perf").perf
    assert {c.model for c in pcfg.cases} >= {"tiny_llama", "smollm2_135m"} and int(pcfg.repeats) >= 3
    assert cfg.train.cpu_mmap_threshold   # the tracking-on side is the default


def test_bare_loop_trains_the_harness_batches(tiny_cfg, tmp_path):
    cfg = tiny_cfg("method=lora")
    folder = tmp_path / "bare"
    model_dir, peft_dir, ds, tokens = perf.bare_inputs(cfg, folder, 3)
    assert tokens > 0 and peft_dir is not None and json.loads((peft_dir / "adapter_config.json").read_text())["r"] == 8
    seconds = perf._bare(model_dir, folder, peft_dir, ds, float(cfg.method.lr))
    assert len(seconds) == 3 and all(s > 0 for s in seconds)


def test_gpu_cases_count_the_published_flops(tmp_path):
    """bench.gpuperf's inputs at the real shapes, on the meta device: TinyLlama-1.1B and LLaMA-2-7B's N and the
    FLOP per token (6N full, 4N + 2T LoRA), without a GPU and without training."""
    from hydra import compose, initialize_config_dir

    from bench import gpuperf
    from tests.conftest import CONF

    with initialize_config_dir(str(CONF), version_base="1.3"):
        pcfg = compose("perf_gpu").perf
        found = {}
        for case in pcfg.cases:
            cfg = compose("config", overrides=[f"model={case.model}", f"method={case.method}", "model.source=replica",
                                                *case.overrides, "model.dtype=float32"])
            found[case.name] = gpuperf.case_inputs(cfg, tmp_path / case.name, 2)
    tiny, full, big = found["tinyllama_1.1b-lora"], found["tinyllama_1.1b-full"], found["llama2_7b-lora"]
    assert tiny["n_base"] == full["n_base"] and tiny["n_base"] / 1e9 == pytest.approx(1.1 - 0.0655, rel=0.01)
    assert full["flops_per_token"] == 6 * full["n_base"]
    assert tiny["flops_per_token"] == 4 * tiny["n_base"] + 2 * tiny["trainable_params"] and tiny["peft_dir"]
    assert big["n_base"] / 1e9 == pytest.approx(6.74 - 0.131, rel=0.005)
    assert (tmp_path / "llama2_7b-lora" / "model" / "config.json").is_file() and big["tokens"] > 0
