"""The regression gate: the reduced embedded sweeps against their committed baselines, one per shipped task kind:
conf/sweep/ci.yaml (triple extraction) → embedded.json, conf/sweep/ci_fault_class.yaml (classification) →
fault_class.json.

On CPU a seed pins every quality figure and loss, so a change that moves one fails here unless
results/baselines/embedded.json is rebuilt in the same change (docs/regressions.md).
It runs under plain ``pytest`` (minutes: nine launched runs, plus one base build on a clean clone);
``-m "not slow"`` deselects it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, child_env, require_lock

BASELINES = ROOT / "results" / "baselines"
GATES = [("ci", "embedded"), ("ci_fault_class", "fault_class")]   # (conf/sweep preset, results/baselines name)
# Read at import, before conftest's session fixture points PEFTBENCH_CACHE at a temporary folder:
# the checkout's cache of tiny bases is reused, so only a clean clone builds the base.
CACHE = os.environ.get("PEFTBENCH_CACHE") or str(ROOT / ".cache" / "peftbench")


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "name"), GATES)
def test_reduced_sweep_matches_the_committed_baseline(tmp_path: Path, preset: str, name: str) -> None:
    require_lock()
    sweep_dir, env, baseline = tmp_path / preset, {**child_env(), "PEFTBENCH_CACHE": CACHE}, BASELINES / f"{name}.json"
    done = subprocess.run([sys.executable, "-m", "bench.sweep", f"sweep={preset}", f"sweep_dir={sweep_dir}",
                           "report=false"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    verdict = subprocess.run([sys.executable, "-m", "bench.compare", "compare", str(sweep_dir),
                              "--baseline", str(baseline), "--changed"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert verdict.returncode == 0, (f"the reduced sweep no longer matches {baseline.name}; if the change is "
                                     f"meant, rebuild the baseline (docs/regressions.md):\n{verdict.stdout}{verdict.stderr}")
