"""``make perf``'s parts: the bare loop trains the harness's own batches in a process of its own."""

from __future__ import annotations

import json

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
