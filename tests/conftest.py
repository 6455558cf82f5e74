"""Shared fixtures: compose the real config and shrink it so a run takes seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import bench  # noqa: F401  (registers resolvers)

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared"

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
