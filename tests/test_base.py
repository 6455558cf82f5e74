"""The cached tiny base: reused for the same key, rebuilt for a new one, built once under concurrency."""

from __future__ import annotations

import subprocess
import sys

from bench.pipeline import tinybase
from tests.conftest import ROOT, TINY, child_env, compose_cfg

FAST = [*TINY, "model.pretrain.steps=5"]


def test_same_key_reuses_and_changed_key_rebuilds(tmp_path):
    cfg = compose_cfg(*FAST, f"cache_dir={tmp_path}")
    first = tinybase.ensure(cfg)
    again = tinybase.ensure(cfg)
    assert first["built_in_this_run"] and not again["built_in_this_run"]
    assert first["key"] == again["key"] and first["path"] == again["path"]
    changed = tinybase.ensure(compose_cfg(*FAST, f"cache_dir={tmp_path}", "model.pretrain.lr=0.001"))
    assert changed["built_in_this_run"] and changed["key"] != first["key"]
    other_arch = tinybase.ensure(compose_cfg(*FAST, f"cache_dir={tmp_path}", "model=tiny_codellama"))
    assert other_arch["key"] not in (first["key"], changed["key"])
    for info in (first, changed):
        assert info["source_metric"] == "f1_micro" and 0.0 <= info["source_score"] <= 1.0 and info["build_time_s"] > 0


def test_two_processes_build_once(tmp_path):
    cmd = [sys.executable, "-m", "bench.base", *FAST, f"cache_dir={tmp_path}", f"hydra.run.dir={tmp_path}/h"]
    env = child_env()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert sum(log.count("building tiny base") for log in logs) == 1, logs
    assert len(list((tmp_path / "bases").glob("tiny_llama-*"))) == 1
