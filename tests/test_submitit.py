"""A real sweep through Hydra's submitit launcher (``hydra/launcher=submitit_local``: the machinery SLURM jobs use,
pickled jobs and all): one job per slice, every cell's result in the sweep folder, one report, resume, and a failed
job recorded while the other finishes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, child_env

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")


def sweep(out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m bench.sweep -m hydra/launcher=submitit_local methods=lora,prompt_tuning`` at a tiny budget."""
    run = [o for o in TINY if not o.startswith("eval.max_records")] + ["eval.max_records=4", "eval.latency.records=4",
                                                                       "eval.latency.repeats=1", "train.steps=4"]
    cmd = [sys.executable, "-m", "bench.sweep", "-m", "hydra/launcher=submitit_local", "methods=lora,prompt_tuning",
           f"sweep_dir={out}", "hydra.launcher.timeout_min=20", *extra, "--", *run]
    return subprocess.run(cmd, cwd=ROOT, env={**child_env(), "PEFTBENCH_CACHE": str(cache)}, capture_output=True,
                          text=True, timeout=600)


def result(out: Path, method: str) -> dict:
    return json.loads((out / "tiny_llama" / "triples_synth" / method / "seed0" / "result.json").read_text())


@pytest.mark.slow
def test_a_sweep_through_submitit_lands_resumes_and_records_a_failed_job(tmp_path, cache_dir):
    out = tmp_path / "sweep"
    failing = sweep(out, cache_dir, "method_overrides={prompt_tuning:['train.steps=0']}")   # that job's cell: invalid
    assert failing.returncode == 1, failing.stdout[-2000:] + failing.stderr[-2000:]     # the report says so
    assert result(out, "lora")["run_info"]["status"] == "success"
    assert result(out, "prompt_tuning")["run_info"]["status"] == "invalid"
    assert sorted(p.parent.name for p in out.rglob("result.json")) == ["seed0", "seed0"]   # one record per cell
    assert "prompt_tuning" in (out / "report" / "table.md").read_text()
    jobs = list((out / ".multirun").glob(".submitit/*/*_result.pkl"))
    assert len(jobs) == 2                                                                 # one job per slice
    lora_id = result(out, "lora")["run_info"]["run_id"]
    again = sweep(out, cache_dir)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert result(out, "lora")["run_info"]["run_id"] == lora_id                          # resumed: not rerun
    assert result(out, "prompt_tuning")["run_info"]["status"] == "success"              # the failed cell redone
