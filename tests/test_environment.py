"""The locked environment: the committed locks, the drift line every gate stops on, and what a run records."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.core import environment
from tests.conftest import ROOT, child_env

LOCKS = ROOT / "requirements"


def fake_install(site: Path, name: str, version: str) -> dict[str, str]:
    """An environment in which ``name`` reads as installed at ``version`` (its metadata first on the path), as
    after ``pip install name==version``: what the drift check reads, with no download."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return {**child_env(), "PYTHONPATH": f"{site}:{ROOT}"}


def test_both_locks_pin_what_the_baselines_were_measured_on():
    cpu, cuda = (environment.pinned(LOCKS / f"{kind}.lock") for kind in ("cpu", "cuda"))
    measured = json.loads((ROOT / "results/baselines/embedded.json").read_text())["fingerprint"]["versions"]
    for name, version in measured.items():
        if name == "python":
            continue
        assert environment.same(cpu[name], version), f"cpu.lock pins {name} {cpu[name]}, the baseline ran {version}"
        assert cuda[name].split("+")[0] == version.split("+")[0], f"cuda.lock pins {name} {cuda[name]}"
    assert cpu["torch"].endswith("+cpu") and "+" not in cuda["torch"] and "nvidia-cublas" in cuda
    shared = set(cpu) & set(cuda) - {"torch"}
    assert {n for n in shared if cpu[n] != cuda[n]} == set(), "the two locks disagree on a shared package"


def test_this_environment_is_the_lock():
    """`make setup` installed the lock exactly (CI sets up from it): no drift to name."""
    assert environment.drift() == {}, environment.describe(environment.drift(), environment.applies())


def test_the_lock_is_chosen_by_the_torch_build(monkeypatch):
    monkeypatch.delenv("PEFTBENCH_LOCK", raising=False)
    monkeypatch.setattr(environment, "installed", lambda name: "2.13.0+cpu")
    assert environment.applies().name == "cpu.lock"
    monkeypatch.setattr(environment, "installed", lambda name: "2.13.0")
    assert environment.applies().name == "cuda.lock"


def test_drift_is_one_line_naming_package_versions_and_fix(tmp_path):
    lock = tmp_path / "some.lock"
    lock.write_text("# made by pip-compile\ntabulate==0.0.1\n    # via peftbench\n"
                    "not-installed-pkg==1.0 ; python_version < '4'\n")
    line = environment.describe(environment.drift(lock), lock)
    assert "\n" not in line and line.startswith("installed packages differ from some.lock: ")
    assert f"tabulate {environment.installed('tabulate')} (locked 0.0.1)" in line
    assert "not-installed-pkg (missing) (locked 1.0)" in line and "make setup" in line and "make lock" in line


def test_a_package_installed_at_another_version_fails_the_gate_in_seconds(tmp_path):
    """The regression gate stops before sweeping, on one line naming the package, both versions and the fix."""
    locked = environment.pinned(environment.applies())["transformers"]
    env = fake_install(tmp_path / "site", "transformers", "5.25.0")
    start = time.monotonic()
    gates = ["tests/test_regression_ci.py",
             "tests/test_model_matrix.py::test_tiny_llama_base_is_still_the_one_the_committed_baseline_measured"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *gates], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - start
    assert done.returncode == 1, done.stdout[-2000:]
    expected = f"transformers 5.25.0 (locked {locked})"
    assert "3 failed" in done.stdout and expected in done.stdout, done.stdout[-3000:]   # every gate, before sweeping
    assert "make setup" in done.stdout and "base_info.key" not in done.stdout
    assert took < 60, f"the gate took {took:.0f} s to name the drift"
    cli = subprocess.run([sys.executable, "-m", "bench.environment"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 1 and expected in cli.stdout and len(cli.stdout.strip().splitlines()) == 1


def test_a_run_records_the_lock_and_its_drift(tmp_path, monkeypatch):
    lock = tmp_path / "cpu.lock"
    lock.write_text((LOCKS / "cpu.lock").read_text().replace("\ntabulate==", "\ntabulate==0.0.1\n#was "))
    recorded = environment.record(lock)
    assert recorded["file"] == "cpu.lock" and len(recorded["digest"]) == 16
    assert recorded["drift"] == {"tabulate": {"locked": "0.0.1", "installed": environment.installed("tabulate")}}
    assert environment.record(LOCKS / "cpu.lock")["digest"] != recorded["digest"]
    assert environment.digest(LOCKS / "cpu.lock") == environment.record(LOCKS / "cpu.lock")["digest"]
