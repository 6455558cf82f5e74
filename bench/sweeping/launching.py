"""Child processes of a sweep, each logged to a file; a cell's launcher may finish exiting beside the next cell.

Once a worker has written its final ``result.json`` the cell is over, but the ``deepspeed`` launcher still takes
~3 s to notice and exit (``launch.py`` polls once a second and sleeps a second more after its worker is gone; it
and the runner then tear down torch). That is not work: ``run_until_recorded`` returns as soon as the record is
final and leaves the launcher in ``lingering``, reaped while the next cell's launcher starts (it does no timed
work: a cell trains ≥ 7 s after its launch). A launcher not gone ``TEARDOWN_S`` after its record is killed with
its process tree, and one that exits non-zero is logged. Only on one node: with a hostfile, launchers end first.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Mapping

from bench.core import results
from bench.core.startup import sitecustomize as startup

log = logging.getLogger(__name__)

POLL_S = 0.2        # how often a running cell's result.json is looked at (a stat; it is parsed when it changes)
TEARDOWN_S = 6.0    # a launcher gets this long after its worker's record to exit (it takes ~3 s)


@dataclass
class Lingering:
    """A launcher whose worker has recorded its result, still exiting."""

    proc: subprocess.Popen
    log_file: IO[str]
    label: str
    recorded_at: float

    def reap(self, *, block: bool) -> bool:
        """Collect its exit (waiting up to the teardown limit when ``block``); True once it is gone."""
        deadline = self.recorded_at + TEARDOWN_S
        if block:
            try:
                self.proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                pass
        code = self.proc.poll()
        if code is None and time.monotonic() < deadline:
            return False
        log.debug("%s: the launcher exited %.1f s after the record", self.label, time.monotonic() - self.recorded_at)
        if code is None:
            log.warning("%s: the launcher was still running %.0f s after the result; killed", self.label, TEARDOWN_S)
            kill_tree(self.proc)
        elif code:
            log.error("%s: the launcher exited with code %d after the worker recorded its result", self.label, code)
        self.log_file.close()
        return True


lingering: list[Lingering] = []


def reap(*, block: bool = False) -> None:
    """Collect the launchers that have exited (all of them, within their limits, when ``block``)."""
    lingering[:] = [launch for launch in lingering if not launch.reap(block=block)]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and every descendant."""
    import psutil

    try:
        family = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


STARTUP = Path(startup.__file__).parent   # bench/core/startup: its sitecustomize.py runs first in a launched process


def env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A launched command's environment: ``base`` (ours by default), its output unbuffered so the log is current,
    and ``STARTUP`` first on PYTHONPATH, so the ``deepspeed`` runner and ``launch.py`` skip the mlflow import of
    DeepSpeed's autotuner (2.8 s of a cell; bench/core/startup/sitecustomize.py)."""
    base = dict(os.environ if base is None else base)
    path = [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(STARTUP)]
    return {**base, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(STARTUP), *path])}


def _open_log(cmd: list[str], log_path: Path) -> IO[str]:
    """The log file, its first line the command."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "w", encoding="utf-8")  # noqa: SIM115  (closed when the process is reaped)
    fh.write(f"$ {shlex.join(cmd)}\n")
    fh.flush()
    return fh


def run_logged(cmd: list[str], log_path: Path) -> int:
    """Run ``cmd`` to its end with its stdout and stderr in ``log_path`` (the command on the first line)."""
    with _open_log(cmd, log_path) as fh:
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env(), check=False).returncode


def run_until_recorded(cmd: list[str], log_path: Path, *, result: Path, recorded: Callable[[], bool],
                       label: str) -> int | None:
    """Run ``cmd`` (logged) until it exits, returning its code, or until ``recorded()`` says its ``result`` file is
    final, returning None and leaving it in ``lingering``. ``recorded`` is asked when ``result`` changes."""
    fh = _open_log(cmd, log_path)
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env())
    seen = None
    while True:
        try:
            code = proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            pass
        else:
            fh.close()
            return code
        reap()
        stamp = _stamp(result)
        if stamp != seen:
            seen = stamp
            if stamp is not None and recorded():
                lingering.append(Lingering(proc, fh, label, time.monotonic()))
                return None


def _stamp(path: Path) -> tuple[int, int] | None:
    """When and how big ``path`` last was: a change means a new record."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def exit_reason(code: int) -> str:
    """A launcher's exit status in words: the signal that ended it where the status says one did (a negative code
    from Python, 128+N from a shell, 256-N from ``sys.exit(-N)``, as DeepSpeed's launcher passes its worker's on),
    with the likely cause of a SIGKILL; else the code."""
    number = -code if code < 0 else code - 128 if 128 < code < 160 else 256 - code if 224 < code < 256 else None
    try:
        name = signal.Signals(number).name if number else None
    except ValueError:
        name = None
    if name is None:
        return f"exited with code {code}"
    cause = (" (likely out of memory: the kernel's OOM killer sends SIGKILL; lower train.micro_batch_size, see "
             "`make memory`)") if name == "SIGKILL" else ""
    return f"was killed by {name} (exit code {code}){cause}"


def record_unfinished(result: Path, error: str, *, recorded_by: str, run_info: dict | None = None,
                      status: str = "failed") -> None:
    """Mark a run that ended without its final record (killed, crashed before writing) as ``status`` (failed, or
    invalid) with ``error``; ``run_info``: what to record where there is no readable ``result`` at all."""
    try:
        record = json.loads(result.read_text())
    except (OSError, ValueError):
        record = {"run_info": dict(run_info or {})}
    record["run_info"].update(status=status, error=error, log_path=str(result.parent / "run.log"),
                              recorded_by=recorded_by)
    results.write_json(result, record)
