"""Out of memory, said before it happens or recorded after: a run whose estimate exceeds the free memory is refused in
seconds naming the micro-batch that fits (and the override lets it through); a run the OOM killer ends under
``make run`` (``bench.launch``) is recorded failed with the signal, never left ``running``; DeepSpeed's op build is
logged where it happens."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.core.errors import ConfigError
from bench.pipeline import distributed, headroom
from bench.run import execute
from tests.conftest import ROOT, child_env, compose_cfg
from tests.test_bad_inputs import save_random_tiny

GIB = 2**30
SMALL = ["train.steps=3", "eval.max_records=4", "task.max_new_tokens=8", "eval.latency.records=2",
         "forgetting.measure=none"]


def estimate_of(*, batch: int, static: int, per_row: int, step: int = 0) -> dict[str, Any]:
    """An estimate's figures: ``static`` bytes of weights, ``per_row`` bytes of activations per micro-batch row."""
    return {"weights_bytes": static, "master_weights_bytes": 0, "optimizer_states_bytes": 0, "gradients_bytes": 0,
            "activations_bytes": per_row * batch, "backward_transient_bytes": 0, "optimizer_step_bytes": step,
            "total_bytes": static + per_row * batch, "batch": batch, "length": 300}


def test_the_largest_fitting_micro_batch_and_the_refusal(monkeypatch, caplog):
    monkeypatch.setattr(headroom, "free_bytes", lambda: (10 * GIB, "CPU RAM"))
    monkeypatch.setattr(headroom, "heap_share", lambda: 0.0)   # the allocator's share: its own test below
    est = estimate_of(batch=32, static=2 * GIB, per_row=GIB // 2)   # 18 GiB: 2 static + 16 at batch 32
    assert headroom.fitting_batch(est, 10 * GIB) == 16
    with pytest.raises(ConfigError) as refused:
        headroom.check(est, held=0, mode="refuse", grad_accum=1)
    message = str(refused.value)
    assert "18.00 GiB" in message and "10.00 GiB is free on CPU RAM" in message
    assert "train.micro_batch_size=16 fits (with train.grad_accum=2" in message and "train.memory_check=warn" in message
    with caplog.at_level(logging.WARNING, logger="bench.pipeline.headroom"):
        found = headroom.check(est, held=GIB, mode="warn", grad_accum=1)   # what the run holds counts as usable
    assert found == {"needed_bytes": 18 * GIB, "free_bytes": 11 * GIB, "free_where": "CPU RAM",
                     "fitting_micro_batch": 18}
    assert "train.micro_batch_size=18 fits" in caplog.text
    assert headroom.check(est, held=0, mode="off", grad_accum=1) == {}
    assert headroom.check(estimate_of(batch=8, static=GIB, per_row=GIB // 2), held=0, mode="refuse",
                          grad_accum=1)["fitting_micro_batch"] == 18   # 5 GiB of 10: fits, no warning
    assert headroom.fitting_batch(estimate_of(batch=8, static=11 * GIB, per_row=1), 10 * GIB) == 0
    with pytest.raises(ConfigError, match="train.memory_check='maybe' must be one of refuse, warn, off"):
        headroom.check(est, held=0, mode="maybe", grad_accum=1)


def test_on_cpu_what_glibc_keeps_counts_against_the_free_memory(monkeypatch):
    monkeypatch.setattr(headroom, "free_bytes", lambda: (10 * GIB, "CPU RAM"))
    monkeypatch.setattr(headroom, "heap_share", lambda: 0.5)
    est = estimate_of(batch=8, static=2 * GIB, per_row=GIB // 2)   # 6 GiB of tensors; 8 with the heap's half of 4
    assert headroom.needed_bytes(est, 0.5) == 8 * GIB and headroom.fitting_batch(est, 10 * GIB, 0.5) == 10
    assert headroom.check(est, held=0, mode="refuse", grad_accum=1)["needed_bytes"] == 8 * GIB
    with pytest.raises(ConfigError, match=r"needs an estimated 14.00 GiB per rank \(micro-batch 16 × 300 tokens, "
                                          r"4.00 of it what glibc's heap keeps on CPU\)"):
        headroom.check(estimate_of(batch=16, static=2 * GIB, per_row=GIB // 2), held=0, mode="refuse", grad_accum=1)


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides for a random tiny LLaMA saved as a ``local`` model (no cached base needed)."""
    return save_random_tiny(tmp_path_factory.mktemp("local_model"))


def test_a_run_that_cannot_fit_is_refused_in_seconds_and_the_override_runs_it(tmp_path: Path, local_model, monkeypatch):
    monkeypatch.setattr(headroom, "free_bytes", lambda: (256 << 20, "CPU RAM"))   # 256 MiB free
    distributed.ensure_distributed()   # a first process group builds DeepSpeed's op once (cached): not the check's time
    out = tmp_path / "refused"
    start = time.perf_counter()
    code = execute(compose_cfg(*local_model, *SMALL, "train.micro_batch_size=128", f"out_dir={out}"))
    took = time.perf_counter() - start
    info = json.loads((out / "result.json").read_text())["run_info"]
    assert code == 2 and info["status"] == "invalid", info
    assert info["error"].startswith("ConfigError: memory: the run needs an estimated"), info["error"]
    assert "micro-batch 128 ×" in info["error"] and "train.micro_batch_size=" in info["error"]
    assert "train.memory_check=warn runs it anyway" in info["error"]
    assert took < 30, f"refused after {took:.0f} s"
    fits = int(info["error"].split("train.micro_batch_size=")[1].split()[0])
    assert 1 <= fits < 128

    out = tmp_path / "warned"
    assert execute(compose_cfg(*local_model, *SMALL, "train.micro_batch_size=128", "train.memory_check=warn",
                               f"out_dir={out}")) == 0
    estimate = json.loads((out / "result.json").read_text())["train_info"]["mem_estimate"]
    assert abs(estimate["fitting_micro_batch"] - fits) <= 2 and estimate["free_where"] == "CPU RAM"   # RSS moves


def worker_of(launcher: psutil.Process) -> psutil.Process | None:
    """The ``python -u -m bench.run`` process under a ``bench.launch`` (None until it exists)."""
    for child in launcher.children(recursive=True):
        try:
            args = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "-m" in args and args[args.index("-m") + 1:args.index("-m") + 2] == ["bench.run"]:
            return child
    return None


def test_make_run_records_a_run_killed_by_sigkill_as_failed(tmp_path: Path, local_model):
    """What the OOM killer does to a ``make run``: the worker dies of SIGKILL mid-training, the launcher passes its
    exit on, and ``bench.launch`` records the failure with the signal and its likely cause."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bench.launch", "--num_gpus", "1", "--", *local_model, *SMALL,
           "train.micro_batch_size=4", "train.steps=100000", f"out_dir={out}"]
    with open(tmp_path / "launch.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while "train lora" not in (tmp_path / "launch.log").read_text(errors="replace"):   # the progress bar: training
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "launch.log").read_text()[-3000:]
        time.sleep(0.5)
    assert json.loads((out / "result.json").read_text())["run_info"]["status"] == "running"
    worker = worker_of(psutil.Process(proc.pid))
    assert worker is not None
    os.kill(worker.pid, signal.SIGKILL)
    code = proc.wait(timeout=120)
    info = json.loads((out / "result.json").read_text())["run_info"]
    assert code != 0 and info["status"] == "failed" and info["recorded_by"] == "bench.launch", info
    assert "killed by SIGKILL" in info["error"] and "likely out of memory" in info["error"], info["error"]
    assert info["config"]["method"]["name"] == "lora"          # the record the run wrote, completed


def test_an_op_build_is_logged_with_its_time(tmp_path: Path, caplog):
    with caplog.at_level(logging.INFO, logger="bench.pipeline.distributed"):
        with distributed._op_builds_logged(tmp_path):
            (tmp_path / "deepspeed_shm_comm").mkdir()
            (tmp_path / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").write_bytes(b"")
        with distributed._op_builds_logged(tmp_path):   # loaded from the cache: nothing said
            pass
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["DeepSpeed built deepspeed_shm_comm"]
    assert str(tmp_path) in caplog.records[0].getMessage()
    assert distributed.extensions_dir().is_relative_to(ROOT / ".cache" / "peftbench" / "torch_extensions")
