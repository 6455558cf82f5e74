"""Shared fixtures: compose the real config and shrink it so a run takes seconds."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from hydra import compose, initialize_config_dir

import bench  # noqa: F401  (registers resolvers)
from bench import free_port
from bench.sweeping import launching

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared"
# Read at import, before the session fixture below points PEFTBENCH_CACHE at a temporary folder: the checkout's cache
# of tiny bases, which tests launching the shipped presets reuse (only a clean clone builds their base).
CHECKOUT_CACHE = os.environ.get("PEFTBENCH_CACHE") or str(ROOT / ".cache" / "peftbench")

# A small budget: enough for every method's loss to move, small enough for CI.
TINY = ["model.pretrain.steps=60", "train.steps=12", "train.log_every=4", "eval.max_records=8",
        "task.generator.n_train=256", "task.base_task.generator.n_train=256", "task.base_task.generator.n_test=8",
        "task.base_task.min_score=null"]   # 60 steps teach a base little; tests of min_score set it


# `make test` runs two pytest-xdist workers on a 2-core machine. Each worker and every process it starts gets its share
# of the cores as torch threads (OMP_NUM_THREADS, inherited), so the two never oversubscribe the cores (two processes
# at two threads each slowed a SmolLM2 step from 6 s to 54 s). On CPU the thread count moves no number: the reduced
# sweep at one thread matched results/baselines/embedded.json in all 138 rows. An OMP_NUM_THREADS already set wins.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // WORKERS))
    if "torch" in sys.modules:   # imported before this file (a plugin): its pool is sized already
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# `make test` hands whole files to its workers in this order (Makefile: --dist loadfile --no-loadscope-reorder), the
# longest first, so that no worker starts a minute-long file while the other runs out of work. The browser test leads:
# it launches the ci sweep that the regression gate reads (4 min; 6 min 40 s on a clean clone, which builds the base
# first), and the gate comes after ~6 min of other files on the other worker, its fault_class sweep first, so it
# finds the sweep done instead of waiting for it. Files not named follow in their order.
LONG_FIRST = ["test_browser.py", "test_methods.py", "test_seq2seq.py", "test_submitit.py", "test_memory.py",
              "test_own_data.py", "test_regression_ci.py", "test_launcher.py", "test_kbit.py", "test_task_outside.py",
              "test_crash.py", "test_bad_inputs.py", "test_base.py", "test_oom.py", "test_multirank.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files in ``LONG_FIRST``'s order, then the rest; tests keep their order within a file."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env() -> dict[str, str]:
    """Environment for a child run: this process's in-process distributed settings are not inherited; the checkout
    and the launcher's start-up folder on PYTHONPATH, as a sweep's cells have them."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    return launching.env({**env, "PYTHONPATH": str(ROOT)})


def deepspeed_cmd(*options: str) -> list[str]:
    """The head of a one-process ``deepspeed`` launch of a module, on a free rendezvous port: two test workers
    launching at once would otherwise both bind DeepSpeed's default 29500."""
    return [str(Path(sys.executable).parent / "deepspeed"), "--master_port", str(free_port()), "--num_gpus", "1",
            *options, "--no_local_rank", "--module"]


def require_lock() -> None:
    """A baseline gate's first step: where the installed packages are not the lock's, fail on one line naming each
    and the fix, in seconds, instead of minutes later on a moved base key or moved numbers."""
    from bench.core import environment

    line = environment.check()
    if line:
        pytest.fail(line, pytrace=False)


def compose_cfg(*overrides: str):
    """The real composed config with overrides."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test session's temporary folder, which its xdist workers share (each has its own folder inside)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if "PYTEST_XDIST_WORKER" in os.environ else root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache of tiny bases for the whole test session, shared by its xdist workers (a base is built under a
    file lock, so two workers wanting it build it once)."""
    path = session_root(tmp_path_factory) / "cache"
    path.mkdir(exist_ok=True)
    os.environ["PEFTBENCH_CACHE"] = str(path)
    return path


@pytest.fixture
def tiny_cfg(cache_dir, tmp_path):
    """Factory: a shrunk run config writing to a fresh directory."""

    def make(*overrides: str, out: Path | None = None):
        return compose_cfg(*TINY, f"cache_dir={cache_dir}", f"out_dir={out or tmp_path / 'run'}", *overrides)

    return make


@pytest.fixture(scope="session")
def reduced_sweep(tmp_path_factory) -> Callable[[str], tuple[Path, subprocess.CompletedProcess]]:
    """Factory: ``bench.sweep sweep=<preset>`` launched once per session (its folder, its process), shared by every
    test that reads it: the regression gate compares it with its baseline, the browser test opens its report. The
    first xdist worker to ask launches it under a file lock; another asking meanwhile waits and reads its outcome."""
    root = session_root(tmp_path_factory) / "reduced"
    root.mkdir(exist_ok=True)

    def run(preset: str) -> tuple[Path, subprocess.CompletedProcess]:
        sweep_dir, outcome = root / preset, root / f"{preset}.outcome.json"
        with open(root / f"{preset}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not outcome.is_file():
                cmd = [sys.executable, "-m", "bench.sweep", f"sweep={preset}", f"sweep_dir={sweep_dir}", "report=false"]
                proc = subprocess.run(cmd, cwd=ROOT, env={**child_env(), "PEFTBENCH_CACHE": CHECKOUT_CACHE},
                                      capture_output=True, text=True, timeout=1800)
                outcome.write_text(json.dumps({"args": cmd, "returncode": proc.returncode, "stdout": proc.stdout,
                                               "stderr": proc.stderr}))
        return sweep_dir, subprocess.CompletedProcess(**json.loads(outcome.read_text()))

    return run
