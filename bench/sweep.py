"""The sweep driver: methods × models × tasks × seeds, one ``deepspeed`` process per cell, then the report.

The grid, its overrides and the resume rules are in ``bench.sweeping.grid``; this module runs them.

    python -m bench.sweep                                  # every method, tiny_llama × triples_synth, seed 0
    python -m bench.sweep sweep=smoke                      # preset (conf/sweep/): lora + full, 5 steps
    python -m bench.sweep methods=[lora,full] seeds=[0,1,2] models=llama2_7b tasks=triples gpus=8 \\
        -- train.steps=100 task.data.train=data/train.json  # after "--": bench.run overrides for every cell
    python -m bench.sweep -m hydra/launcher=slurm methods=full,lora seeds=0,1,2   # Hydra multirun → SLURM

Keys before ``--`` configure the sweep (conf/sweep.yaml); words after it land in ``extra`` (as
``'extra=["train.steps=5"]'`` would, without Hydra's quoting). Presets set ``cell_overrides``;
``method_overrides`` are for one method's cells; ``cell_cmd``/``base_cmd`` are what runs (tests fake them).

Design: a cell must be its own process anyway (fresh memory figures, a crash touches one cell), so the
driver is a plain loop over its grid: one progress line per cell with an ETA, one report at the end. A cell is
over when its worker's record is final; the launcher's own exit overlaps the next cell's start
(``bench.sweeping.launching``).
Hydra multirun still cuts grids: each axis also takes one value, so ``-m methods=lora,full`` makes a job
per slice for any Hydra launcher (submitit → SLURM), and the ``MultirunReport`` callback reports after.
Resume reads the JSONs only: a success recorded with the config hash this sweep would give the cell is
skipped; anything else (failed, invalid, "running" after a kill) is cleared and rerun. ``bench.run`` writes
atomically, and a cell that dies without a result gets a failed JSON from here, so a SIGKILL of the
process group leaves nothing half written. Exit: 0 all succeeded, 1 otherwise (after the report), 2 when
the grid does not compose.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

import bench  # noqa: F401  (registers config resolvers)
from bench import search
from bench.core import environment
from bench.core.errors import ConfigError
from bench.sweeping import cluster, launching
from bench.sweeping.grid import (
    Cell,
    SweepError,
    check_grid,
    common_overrides,
    grid,
    is_done,
    run_overrides,
    status_of,
    tuned_key,
)
from bench.sweeping.launching import run_logged

log = logging.getLogger(__name__)

# The child logs to stdout only, so run.log (its captured stdout+stderr) holds each line once.
CHILD_LOGGING = "hydra.job_logging.root.handlers=[console]"


def executable(argv: Sequence[Any]) -> list[str]:
    """The command with ``python`` as this interpreter, and tools found beside it (an unactivated venv)."""
    head, *rest = [str(a) for a in argv]
    beside = Path(sys.executable).parent / head
    if head == "python":
        head = sys.executable
    elif shutil.which(head) is None and beside.exists():
        head = str(beside)
    return [head, *rest]


def launcher(cfg: DictConfig) -> list[str]:
    """A cell's command before its overrides: ``cell_cmd``, with ``--hostfile`` when the sweep names one."""
    head, *rest = executable(cfg.cell_cmd)
    return [head, "--hostfile", str(cfg.hostfile), *rest] if cfg.get("hostfile") else [head, *rest]


def build_base(cfg: DictConfig, model: str, task: str, *, root: Path) -> str | None:
    """Build (or find) a tiny model's cached base once, before its cells; returns an error or None."""
    out = root / model / task / "base"
    cmd = [*executable(cfg.base_cmd), f"model={model}", f"task={task}", f"out_dir={out}", CHILD_LOGGING,
           *common_overrides(cfg)]
    log.info("base of %s for %s: building or reusing the cache (log %s)", model, task, out / "base.log")
    start = time.perf_counter()
    code = run_logged(cmd, out / "base.log")
    if code:
        log.error("base of %s for %s failed (exit %d); see %s", model, task, code, out / "base.log")
        why = _last_error(out / "base.log") if code == 2 else f"exit {code}"
        return f"{INVALID_BASE if code == 2 else ''}the tiny base did not build ({why}); see {out / 'base.log'}"
    log.info("base of %s for %s ready in %s", model, task, hms(time.perf_counter() - start))
    return None


INVALID_BASE = "invalid: "   # a base refused for its input (exit 2): its cells are invalid, not failed


def _last_error(log_path: Path) -> str:
    """The message of the base build's refusal: its log's last "invalid:" line."""
    lines = [ln for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if "invalid:" in ln]
    return lines[-1].split("invalid:", 1)[1].strip() if lines else "exit 2"


def record_failure(out: Path, cell: Cell, error: str, *, status: str = "failed") -> None:
    """A failed result for a cell that ended without recording one (crash, kill, bad override)."""
    names = {"model": {"name": cell.model}, "task": {"name": cell.task}, "method": {"name": cell.method}}
    launching.record_unfinished(out / "result.json", error, recorded_by="bench.sweep", status=status,
                                run_info={"config": {**names, "seed": cell.seed}, "seed": cell.seed})


def run_cell(cfg: DictConfig, cell: Cell, root: Path, *, base_error: str | None = None) -> str:
    """Run one cell from a clean folder and return its recorded status."""
    out = cell.out_dir(root)
    shutil.rmtree(out, ignore_errors=True)      # every file of a cell comes from one attempt
    out.mkdir(parents=True)
    if base_error:
        status = "invalid" if base_error.startswith(INVALID_BASE) else "failed"
        record_failure(out, cell, base_error.removeprefix(INVALID_BASE), status=status)
        return status
    cmd = [*launcher(cfg), *run_overrides(cfg, cell, out)]
    if cfg.get("hostfile"):   # ranks on other nodes end with the launcher: nothing overlaps the next cell
        code = run_logged(cmd, out / "run.log")
    else:
        code = launching.run_until_recorded(cmd, out / "run.log", result=out / "result.json", label=cell.label(),
                                            recorded=lambda: status_of(out / "result.json") not in (None, "running"))
    status = status_of(out / "result.json")
    if status in (None, "running"):
        record_failure(out, cell, f"the cell {launching.exit_reason(code)} without recording a result; "
                                  f"see {out / 'run.log'}")
        status = "failed"
    return status


def hms(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    return f"{int(seconds) // 3600}:{time.strftime('%M:%S', time.gmtime(seconds))}"


def run_cells(cfg: DictConfig, cells: Sequence[Cell], *, todo: set[Cell],
              bases: dict[tuple[str, str], str | None], root: Path) -> dict[Cell, str]:
    """Run the cells still to do, in order, logging progress with an ETA; returns every cell's status."""
    start, spent, statuses, left = time.perf_counter(), [], {}, len(todo)
    for i, cell in enumerate(cells, 1):
        if cell not in todo:
            statuses[cell] = "success"
            log.info("[%d/%d] %s: success (done earlier, skipped)", i, len(cells), cell.label())
            continue
        log.info("[%d/%d] %s: running, log %s", i, len(cells), cell.label(), cell.out_dir(root) / "run.log")
        began = time.perf_counter()
        with cluster.cell_lock(root, cell.out_dir(root)) as owned:
            if not owned:   # another job of this sweep runs it now: one writer per cell
                statuses[cell] = "running elsewhere"
                log.warning("[%d/%d] %s: another job holds its lock; left to it", i, len(cells), cell.label())
                continue
            statuses[cell] = run_cell(cfg, cell, root, base_error=bases.get((cell.model, cell.task))
                                      or bases.get(tuned_key(cell.model, cell.task, cell.method)))
        cluster.remove_dead_buffers()   # a cell killed outright (OOM killer) cannot remove its own
        spent.append(time.perf_counter() - began)
        left -= 1
        eta = sum(spent) / len(spent) * left
        log.info("[%d/%d] %s: %s in %s | elapsed %s | %d left, ETA %s", i, len(cells), cell.label(),
                 statuses[cell], hms(spent[-1]), hms(time.perf_counter() - start), left, hms(eta))
    launching.reap(block=True)
    return statuses


def write_report(root: Path) -> dict[str, Any]:
    """Significance against the best method (it imports task code to rescore), then the tables and figures."""
    from bench.analysis import significance, tables

    significance.write(root)
    written = tables.write_report(root)
    log.info("tables: %s (also .csv, .tex; runs.csv)", written["table.md"])
    log.info("figures: %s (%d PNG + PDF)", root / "report" / "figures", len(written["figures"]))
    return written


def summarize(root: Path, statuses: dict[Cell, str]) -> None:
    """The closing lines: the count, and each cell that did not succeed with its log."""
    bad = {cell: status for cell, status in statuses.items() if status != "success"}
    log.info("sweep %s: %d/%d cells successful", root, len(statuses) - len(bad), len(statuses))
    for cell, status in bad.items():
        log.error("not successful: %s: %s, log %s", cell.label(), status, cell.out_dir(root) / "run.log")


def run_sweep(cfg: DictConfig, *, report: bool = True) -> int:
    """The whole sweep: check the grid, build bases, run what is not done, report; returns the exit code."""
    root = Path(cfg.sweep_dir)
    cells = grid(cfg)
    try:
        if cfg.get("hostfile"):
            cluster.check_hostfile(Path(str(cfg.hostfile)), int(cfg.gpus))
        tiny, hashes = check_grid(cfg, cells)
    except (SweepError, ConfigError) as err:
        log.error("%s", err)
        return 2
    cluster.remove_dead_buffers()
    environment.check()   # a warning line where the installed packages are not the lock's (every run records it too)
    searching = bool(cfg.search.lr_factors)
    todo = {c for c in cells
            if not is_done(c.out_dir(root) / "result.json", hashes[(c.model, c.task, c.method)])}
    log.info("sweep %s: %d cells, %d done earlier, %d to run", root, len(cells), len(cells) - len(todo), len(todo))
    pairs = sorted({(c.model, c.task) for c in (cells if searching else todo)} & tiny) if cfg.base_cmd else []
    blocked: dict[Any, str | None] = {pair: build_base(cfg, *pair, root=root) for pair in pairs}
    if searching:   # the chosen learning rates change the cells' configs: their hashes and what is done
        blocked.update(search.phase(cfg, cells, root, hashes=hashes, blocked=blocked,
                                    launch=lambda cmd, path: run_logged([*executable(cfg.search_cmd), *cmd], path)))
        _, hashes = check_grid(cfg, cells)
        todo = {c for c in cells
                if not is_done(c.out_dir(root) / "result.json", hashes[(c.model, c.task, c.method)])}
    statuses = run_cells(cfg, cells, todo=todo, bases=blocked, root=root)
    summarize(root, statuses)
    if report and cfg.report:
        write_report(root)
    return 0 if all(s == "success" for s in statuses.values()) else 1


class MultirunReport(Callback):
    """After a multirun (e.g. jobs on SLURM): one report of the whole sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the report; fail the multirun if any run in the sweep did not succeed."""
        if not config.get("report", False):
            return
        written = write_report(Path(config.sweep_dir))
        if written["failed"]:
            log.error("%d run(s) did not succeed; see %s", written["failed"], written["table.md"])
            sys.exit(1)  # Hydra turns a callback's exceptions into warnings; SystemExit sets the exit status


@hydra.main(config_path="../conf", config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> int:
    """Hydra entry point: a single run exits with the sweep's status; a multirun job returns it."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    code = run_sweep(cfg, report=not multirun)
    if not multirun:
        bench.exit_now(code)   # everything is written: no teardown of pandas, matplotlib and torch
    return code


def hydra_quote(text: str) -> str:
    """``text`` as a quoted string of Hydra's override grammar."""
    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body) + "'"


def split_argv(argv: list[str]) -> list[str]:
    """``… -- k=v k2=v2`` becomes ``… extra=['k=v','k2=v2']``: run overrides need no Hydra quoting."""
    if "--" not in argv:
        return argv
    cut = argv.index("--")
    return [*argv[:cut], f"extra=[{','.join(map(hydra_quote, argv[cut + 1:]))}]"]


if __name__ == "__main__":
    sys.argv = split_argv(sys.argv)
    main()
