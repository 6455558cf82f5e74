"""Shared fixtures: compose the real config and shrink it so a run takes seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from hydra import compose, initialize_config_dir

import bench  # noqa: F401  (registers resolvers)

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


DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env() -> dict[str, str]:
    """Environment for a child run: this process's in-process distributed settings are not inherited."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    return {**env, "PYTHONPATH": str(ROOT)}


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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache of tiny bases for the whole test session."""
    path = tmp_path_factory.mktemp("cache")
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
    test that reads it: the regression gate compares it with its baseline, the browser test opens its report."""
    done: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}

    def run(preset: str) -> tuple[Path, subprocess.CompletedProcess]:
        if preset not in done:
            sweep_dir = tmp_path_factory.mktemp("reduced") / preset
            proc = subprocess.run([sys.executable, "-m", "bench.sweep", f"sweep={preset}", f"sweep_dir={sweep_dir}",
                                   "report=false"], cwd=ROOT, env={**child_env(), "PEFTBENCH_CACHE": CHECKOUT_CACHE},
                                  capture_output=True, text=True, timeout=1800)
            done[preset] = sweep_dir, proc
        return done[preset]

    return run
