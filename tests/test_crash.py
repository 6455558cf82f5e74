"""Crashes and kills lose nothing: a crash is recorded as failed, a kill leaves no success, a rerun finishes.

The runs here are real (``bench.run`` training a random tiny LLaMA saved as a ``local`` model, so no
cached base is needed); the crash is injected through the config, as a ``pre_step`` hook that runs
out of memory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.run import execute
from tests.conftest import ROOT, child_env, compose_cfg
from tests.test_bad_inputs import save_random_tiny

EXPLODE = "method.hooks.pre_step=tests.test_crash.explode"
SMALL = ["train.steps=3", "train.micro_batch_size=4", "eval.max_records=4", "task.max_new_tokens=8"]


def explode(engine: Any, step: int, state: dict) -> None:
    """A ``pre_step`` hook that runs out of memory at the second step, as a too-large batch does on a GPU."""
    if step >= 1:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by tests)")


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides for a random tiny LLaMA saved as a ``local`` model."""
    return save_random_tiny(tmp_path_factory.mktemp("local_model"))


def record(out: Path) -> dict[str, Any]:
    """The run's result.json ({} where there is none)."""
    path = out / "result.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_out_of_memory_in_a_run_is_recorded_as_failed(tmp_path: Path, local_model: list[str]) -> None:
    out = tmp_path / "run"
    code = execute(compose_cfg(*local_model, *SMALL, EXPLODE, f"out_dir={out}"))
    info = record(out)["run_info"]
    assert code == 1 and info["status"] == "failed"
    assert info["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert "in explode" in info["traceback"] and info["log_path"] == str(out / "run.log")
    assert "meta_info" in record(out) and "train_info" not in record(out)


def test_a_crashing_cell_fails_alone_in_a_real_sweep(tmp_path: Path, local_model: list[str]) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "bench.sweep", "methods=[lora,full]", f"sweep_dir={sweep_dir}",
           "cell_cmd=[python,-m,bench.run]", "base_cmd=null", f"method_overrides={{full:['{EXPLODE}']}}",
           "--", *local_model, *SMALL]
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    cells = {m: record(sweep_dir / "tiny_llama" / "triples_synth" / m / "seed0")["run_info"] for m in ("lora", "full")}
    assert cells["lora"]["status"] == "success"
    assert cells["full"]["status"] == "failed" and "OutOfMemoryError" in cells["full"]["error"]
    assert "explode" in cells["full"]["traceback"]
    assert "[2/2] full seed0 (tiny_llama/triples_synth): failed" in output and "1/2 cells successful" in output
    table = (sweep_dir / "report" / "table.md").read_text()
    assert "| full" in table and "| lora" in table and "OutOfMemoryError: CUDA out of memory" in table


def start_long_run(out: Path, local_model: list[str]) -> tuple[subprocess.Popen, Path]:
    """``python -m bench.run`` with a budget it will not finish, in its own process group, logging to a file."""
    log = out.parent / "stdout.log"
    cmd = [sys.executable, "-m", "bench.run", *local_model, *SMALL, "train.steps=100000", f"out_dir={out}"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, log


def wait_for_training(proc: subprocess.Popen, log: Path, *, timeout: float = 120) -> None:
    """Until the log shows the training loop's progress bar (and a moment of training after it)."""
    deadline = time.monotonic() + timeout
    while "train lora" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None and "train lora" in log.read_text(), log.read_text()[-3000:]
    time.sleep(1.0)


def test_sigkill_mid_training_leaves_no_success_and_a_rerun_succeeds(tmp_path: Path, local_model: list[str]) -> None:
    out = tmp_path / "run"
    proc, log = start_long_run(out, local_model)
    wait_for_training(proc, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert record(out)["run_info"]["status"] == "running"         # what bench.sweep records as failed and reruns

    assert execute(compose_cfg(*local_model, *SMALL, f"out_dir={out}")) == 0
    assert record(out)["run_info"]["status"] == "success"
    weights = sorted(p.name for p in (out / "adapter").iterdir())
    assert "adapter_model.safetensors" in weights and not any(w.endswith((".bin", ".pt")) for w in weights)
    assert [p for p in out.rglob("*.tmp")] == []


def test_sigterm_mid_training_is_recorded_as_failed(tmp_path: Path, local_model: list[str]) -> None:
    out = tmp_path / "run"
    proc, log = start_long_run(out, local_model)
    wait_for_training(proc, log)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 1
    info = record(out)["run_info"]
    assert info["status"] == "failed" and info["error"] == "Interrupted: stopped by SIGTERM", info


def test_a_cell_killed_by_sigkill_is_recorded_as_failed_naming_the_signal(tmp_path: Path) -> None:
    """What the kernel's OOM killer leaves (no record, exit -9): the sweep records a failure that names SIGKILL and
    its likely cause, never a run left ``running``."""
    sweep_dir = tmp_path / "sweep"
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    cmd = [sys.executable, "-m", "bench.sweep", "methods=[lora]", f"sweep_dir={sweep_dir}",
           f"cell_cmd=[python,-c,'{kill}']", "base_cmd=null", "report=false"]
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    info = record(sweep_dir / "tiny_llama" / "triples_synth" / "lora" / "seed0")["run_info"]
    assert info["status"] == "failed" and "killed by SIGKILL" in info["error"], info
    assert "likely out of memory" in info["error"] and "train.micro_batch_size" in info["error"]
