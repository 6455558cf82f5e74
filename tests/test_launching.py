"""A cell is over when its worker's record is final: the launcher's own exit overlaps the next cell, bounded."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import pytest

from bench.sweeping import launching

# A stand-in for `deepspeed … bench.run`: writes a running record, then the final one, then lingers `linger` s
# (the launcher's poll and teardown) and exits with `code`.
FAKE = """
import json, sys, time
out, status, linger, code = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
json.dump({"run_info": {"status": "running"}}, open(out, "w"))
time.sleep(0.5)
json.dump({"run_info": {"status": status}}, open(out + ".tmp", "w"))
import os; os.replace(out + ".tmp", out)
print("recorded", flush=True)
time.sleep(linger)
sys.exit(code)
"""


def _final(path: Path) -> bool:
    try:
        return json.loads(path.read_text())["run_info"]["status"] != "running"
    except (OSError, ValueError):
        return False


def _launch(tmp_path: Path, *, status: str = "success", linger: float, code: int = 0) -> tuple[int | None, float]:
    out = tmp_path / "result.json"
    start = time.monotonic()
    got = launching.run_until_recorded([sys.executable, "-c", FAKE, str(out), status, str(linger), str(code)],
                                       tmp_path / "run.log", result=out, recorded=lambda: _final(out), label="cell")
    return got, time.monotonic() - start


@pytest.fixture(autouse=True)
def _nothing_left():
    yield
    launching.reap(block=True)
    assert not launching.lingering


def test_the_cell_ends_at_its_record_and_the_launcher_is_reaped_later(tmp_path):
    code, took = _launch(tmp_path, linger=3.0)
    assert code is None and took < 2.0                       # not the 3.5 s the process lives
    assert len(launching.lingering) == 1
    launching.reap(block=True)
    assert not launching.lingering
    log_text = (tmp_path / "run.log").read_text()
    assert log_text.startswith("$ ") and "recorded" in log_text


def test_a_process_that_exits_before_recording_returns_its_code(tmp_path):
    out = tmp_path / "result.json"
    code = launching.run_until_recorded([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "run.log",
                                        result=out, recorded=lambda: _final(out), label="cell")
    assert code == 3 and not launching.lingering


def test_a_launcher_that_hangs_after_the_record_is_killed(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(launching, "TEARDOWN_S", 1.0)
    code, _ = _launch(tmp_path, linger=60.0)
    assert code is None
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="bench.sweeping.launching"):
        launching.reap(block=True)
    assert time.monotonic() - started < 5.0
    assert not launching.lingering and "killed" in caplog.text


def test_a_launcher_failing_after_a_recorded_success_is_logged(tmp_path, caplog):
    code, _ = _launch(tmp_path, linger=0.2, code=1)
    assert code is None
    with caplog.at_level(logging.ERROR, logger="bench.sweeping.launching"):
        launching.reap(block=True)
    assert "exited with code 1" in caplog.text


def test_the_next_cell_reaps_a_finished_launcher_while_it_runs(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    assert _launch(first, linger=0.3)[0] is None
    earlier = launching.lingering[0]
    assert _launch(second, linger=0.0)[0] in (None, 0)       # its record, or its exit, whichever is seen first
    assert earlier not in launching.lingering                 # reaped while the second ran
