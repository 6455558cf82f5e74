"""``python -m bench.launch [deepspeed options] -- [run overrides]`` (``make run``): one run through the ``deepspeed``
launcher, recorded even where the run cannot record itself.

A worker ended by a signal writes nothing (SIGKILL cannot be caught: the kernel's OOM killer sends it), so its
``result.json`` would stay ``running``; this waits for the launcher and, where the run's record is not final, marks
it failed with the signal and its likely cause (``bench.sweeping.launching.exit_reason``), as ``bench.sweep`` does
for its cells. The exit status is the launcher's. Without a ``--master_port`` among the options the rendezvous takes
a free port, as a sweep's cells do, so two runs at once do not both bind DeepSpeed's default 29500.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

from bench import free_port
from bench.sweeping import grid, launching

log = logging.getLogger("bench.launch")


def out_dir(overrides: list[str]) -> Path | None:
    """The run's ``out_dir`` as ``bench.run`` will compose it (None where the overrides do not compose: the run
    itself then refuses them and says why)."""
    from hydra import compose, initialize_config_dir

    import bench  # noqa: F401  (registers config resolvers)
    from bench.core.paths import CONF_DIR

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return Path(str(compose("config", overrides=overrides).out_dir))
    except Exception as err:  # noqa: BLE001  (Hydra's own refusal is reported by the run)
        log.debug("the overrides do not compose (%s): bench.run will say why", err)
        return None


def launch(options: list[str], overrides: list[str]) -> int:
    """Launch ``bench.run`` with ``overrides`` under ``deepspeed options``, wait, record a death; its exit code."""
    out = out_dir(overrides)
    if not any(o.split("=", 1)[0] == "--master_port" for o in options):   # not DeepSpeed's 29500: another job's
        options = ["--master_port", str(free_port()), *options]
    cmd = [str(Path(sys.executable).parent / "deepspeed"), *options, "--no_local_rank", "--module", "bench.run",
           *overrides]
    previous = signal.signal(signal.SIGINT, lambda *_: None)   # Ctrl-C reaches the run (it records it); we wait
    try:
        code = subprocess.run(cmd, check=False, env=launching.env()).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
    result = out / "result.json" if out else None
    if code and result is not None and grid.status_of(result) in (None, "running"):
        why = f"the run {launching.exit_reason(code)} without recording a result; see {out / 'run.log'}"
        launching.record_unfinished(result, why, recorded_by="bench.launch",
                                    run_info={"config": {"overrides": overrides}})
        log.error("%s (recorded in %s)", why, result)
    return code


def main() -> None:
    """``python -m bench.launch [deepspeed options] -- [run overrides]``."""
    logging.basicConfig(level=logging.INFO, format="[bench.launch] %(message)s")
    args = sys.argv[1:]
    split = args.index("--") if "--" in args else len(args)
    code = launch(args[:split], args[split + 1:])
    sys.exit(code if 0 <= code < 256 else 128 - code if code < 0 else 1)


if __name__ == "__main__":
    main()
