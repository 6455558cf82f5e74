"""The regression gate: the reduced embedded sweeps against their committed baselines, one per shipped task kind:
conf/sweep/ci.yaml (triple extraction) → embedded.json, conf/sweep/ci_fault_class.yaml (classification) →
fault_class.json.

On CPU a seed pins every quality figure and loss, so a change that moves one fails here unless
results/baselines/embedded.json is rebuilt in the same change (docs/regressions.md).
It runs under plain ``pytest`` (minutes: nine launched runs, plus one base build on a clean clone);
``-m "not slow"`` deselects it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import CHECKOUT_CACHE, ROOT, child_env, require_lock

BASELINES = ROOT / "results" / "baselines"
# (conf/sweep preset, results/baselines name); fault_class first: the ci sweep is shared with tests/test_browser.py,
# which launches it when make test starts, and is done by the time this file's ci gate asks for it
GATES = [("ci_fault_class", "fault_class"), ("ci", "embedded")]
CACHE = CHECKOUT_CACHE   # the checkout's cache of tiny bases is reused, so only a clean clone builds the base


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "name"), GATES)
def test_reduced_sweep_matches_the_committed_baseline(reduced_sweep, preset: str, name: str) -> None:
    require_lock()
    env, baseline = {**child_env(), "PEFTBENCH_CACHE": CACHE}, BASELINES / f"{name}.json"
    sweep_dir, done = reduced_sweep(preset)   # launched once a session (tests/test_browser.py opens its report)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    verdict = subprocess.run([sys.executable, "-m", "bench.compare", "compare", str(sweep_dir),
                              "--baseline", str(baseline), "--changed"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert verdict.returncode == 0, (f"the reduced sweep no longer matches {baseline.name}; if the change is "
                                     "meant, rebuild the baseline (docs/regressions.md):\n"
                                     f"{verdict.stdout}{verdict.stderr}")
