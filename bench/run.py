"""One benchmark run: model × method × task, trained under DeepSpeed, evaluated, written as one JSON.

Launch: ``deepspeed --no_local_rank --module bench.run method=lora out_dir=…`` (any Hydra override).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

import bench  # noqa: F401  (registers config resolvers)
from bench.core import environment, results

# torch, transformers and the pipeline load once Hydra has composed the config (in execute), so a command line Hydra
# refuses (an unknown model, method or task name) is refused in about a second instead of after 4 s of imports.

log = logging.getLogger(__name__)


def train_and_evaluate(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The work of a run, after validation, as its phases: set up → train → final evaluation → the result's sections.
    The evaluated split (``eval.split``: test, or validation for a search's candidates) is read only after
    training, and a run on validation never reads the test split at all."""
    from bench.pipeline import costs, final, prepare, trackers

    memory = costs.MemoryBook(cfg.train.cpu_mmap_threshold)
    phases = {"process_start": _process_start(), "imported": time.time()}
    rank, config = int(os.environ.get("RANK", "0")), OmegaConf.to_container(cfg, resolve=True)
    with trackers.opened(cfg.get("logger"), config=config, out_dir=out, rank=rank) as live:   # live curves
        ready = prepare.prepare(cfg, out, memory)
        phases["train_start"] = time.time()
        fit = train_phase(ready, memory, train_cfg=cfg.train, eval_cfg=cfg.eval, name=str(cfg.method.name),
                          tracker=live)
        phases["train_end"] = time.time()
        sections = final.finish(cfg, handoff(ready, cfg.method), out)
        if ready.plan.rank != 0:   # rank 0 alone saves, times inference and writes
            return {"phases": phases}
        phases["eval_end"] = time.time()
        done = result_sections(ready, fit, sections)
        live.log_final(fit["steps"], trackers.final_values(done))
    return {**done, "phases": phases}


def train_phase(ready: Any, memory: Any, *, train_cfg: Any, eval_cfg: Any, name: str,
                tracker: Any = None) -> dict[str, Any]:
    """Train to the budget; the fit's record with its memory, budget and learning curve (mirrored to ``tracker``,
    bench.pipeline.trackers, as it trains)."""
    from bench.pipeline import budget, trackers, train
    from bench.taskdata import encoding

    live = tracker or trackers.NONE
    watch = memory.arm(encoding.peak_steps(ready.examples, ready.plan, steps=ready.steps))
    fit = train.fit(ready.engine, ready.stream, steps=ready.steps, grad_accum=ready.plan.grad_accum,
                    log_every=int(train_cfg.log_every), hooks=ready.hooks, desc=f"train {name}",
                    seconds=train_cfg.budget.seconds, every=int(eval_cfg.curve.every),
                    probe=trackers.mirrored(ready.probe, live), watch=watch, tracker=live)
    used = memory.record(ready.estimate)
    check = used["mem_estimate"]
    log.info("memory: %.3f GiB measured above the start; estimate: %s", check["measured_bytes"] / 2**30,
             f"{check['total_bytes'] / 2**30:.3f} GiB" if "total_bytes" in check else check["error"])
    fit["budget"] = budget.budget_record(train_cfg, fit, planned=ready.steps)
    if ready.probe is not None:
        fit["curve"] = ready.probe.record()
    return {**fit, **used}


def handoff(ready: Any, method_cfg: Any) -> Any:
    """What the final evaluation gets: the trained model (ZeRO-1: every rank holds every weight) and its helpers."""
    from bench.pipeline import final, prepare

    return final.Trained(ready.engine.module, ready.tokenizer, rank=ready.plan.rank, world=ready.plan.world,
                         generate_fn=ready.generate_fn, saver=prepare.method_fn(method_cfg.saver),
                         summary_fn=prepare.method_fn(method_cfg.hooks.summary), hooks_state=ready.hooks.state,
                         ability=ready.ability, base_info=ready.base_info, train_records=ready.train_records)


def result_sections(ready: Any, fit: dict[str, Any], sections: dict[str, Any]) -> dict[str, Any]:
    """The result JSON's sections from the phases' records."""
    from bench.taskdata import encoding

    train_info = {**fit, **sections.pop("train_info"), **ready.params, "precision": ready.precision,
                  "answers_cut": encoding.answers_cut(ready.examples),
                  "pad_share": encoding.pad_share(ready.examples, ready.plan),
                  **encoding.packing(ready.examples, ready.plan)}
    return {"train_info": train_info, **sections, "base_info": ready.base_info}


def execute(cfg: DictConfig) -> int:
    """Run and record; the exit status is 0 for success, 2 for an invalid config, 1 for a failure.

    Input errors (``validate.InputError``: config, data, a method refusing its options) are ``invalid``;
    anything else, an out-of-memory or a SIGTERM included, is ``failed`` with its traceback. A SIGKILL
    leaves the ``running`` record, which ``bench.sweep`` (a cell) or ``bench.launch`` (``make run``) turns into a
    failure naming the signal, and a rerun replaces.
    """
    out = Path(str(cfg.out_dir))
    rank = int(os.environ.get("RANK", "0"))
    record = _new_record(cfg, out)
    start = time.perf_counter()
    status, code = "success", 0
    try:
        with _signals_raise():
            cfg = _validated(cfg, record["run_info"])
            if rank == 0:
                results.write_json(out / "result.json", record)
            record.update(train_and_evaluate(cfg, out))
            record["run_info"]["phases"] = record.pop("phases")
    except Exception as err:  # noqa: BLE001  (every crash is recorded, then reported by the exit status)
        status, code = ("invalid", 2) if _is_input_error(err) else ("failed", 1)
        record["run_info"]["error"] = f"{type(err).__name__}: {err}"
        if code == 1:
            record["run_info"]["traceback"] = traceback.format_exc()
            log.exception("run failed (log %s)", record["run_info"]["log_path"])
        else:
            log.error("invalid run: %s", err)
    record["run_info"].update({"status": status, "wall_time_s": time.perf_counter() - start})
    record["meta_info"] = _meta()
    if rank == 0:
        _write_result(out / "result.json", record)
    return code


def _new_record(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The run's record before anything ran; a config that does not resolve is recorded unresolved."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001  (validation names the problem; the record keeps what was asked)
        resolved = OmegaConf.to_container(cfg, resolve=False)
    return {
        "run_info": {"run_id": uuid.uuid4().hex[:12], "status": "running", "error": None, "config": resolved,
                     "config_hash": results.config_hash(resolved), "seed": resolved.get("seed"),
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "log_path": str(out / "run.log"),
                     **results.git_state()},
    }


def _validated(cfg: DictConfig, run_info: dict[str, Any]) -> DictConfig:
    """Every cheap check, warnings recorded; ``cfg``, or a copy with ``deepspeed.json_file`` merged into ``extra``."""
    from bench.pipeline import engine_setup, validate

    run_info["warnings"] = validate.check(cfg)
    for warning in run_info["warnings"]:
        log.warning("%s", warning)
    from_file = engine_setup.deepspeed_json(cfg.deepspeed)
    if not from_file:
        return cfg
    run_info["deepspeed_json"] = from_file
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.deepspeed.extra = engine_setup.deepspeed_extra(cfg.deepspeed)
    return cfg


def _is_input_error(err: Exception) -> bool:
    """Errors the user's input caused (config, data, a method refusing its options), found before training."""
    from bench.pipeline import validate

    return isinstance(err, validate.InputError)


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived: the run stops and records a failure instead of vanishing."""


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into ``Interrupted`` while the run works (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        """Stop the run where it is; ``execute`` records it."""
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write_result(path: Path, record: dict[str, Any]) -> None:
    """The final record; where it cannot be written (out_dir is a file) the log says so."""
    try:
        results.write_json(path, record)
    except OSError as err:
        log.error("%s: could not write %s (%s)", record["run_info"]["status"], path, err)
        return
    log.info("%s: %s", record["run_info"]["status"], path)


def _process_start() -> float:
    """When this process started (epoch seconds): the launcher's share of a cell's wall time ends here."""
    import psutil

    return psutil.Process().create_time()


def _meta() -> dict[str, Any]:
    """Where the run happened."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"versions": results.versions(), "lock": environment.record(),
            "device": "cuda" if gpu else "cpu", "gpu_name": gpu,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")), "torch_threads": torch.get_num_threads(),
            "hostname": os.uname().nodename}


_STARTED = False   # set once Hydra has composed the config and handed it to main()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from bench.models import kbit

    global _STARTED
    _STARTED = True
    kbit.leave_bitsandbytes_out([cfg.get("quantization")])
    bench.exit_now(execute(cfg))


def cli() -> None:
    """``main``, with Hydra's own refusals exiting 2 like every invalid input."""
    # Hydra refuses an unknown model/method/task/deepspeed name, a malformed override or an out_dir it
    # cannot create before execute() runs, so there is no result.json for these: its message is the record.
    # Logging may or may not be set up by then, hence a plain line on stderr.
    try:
        main()
    except SystemExit as done:
        if not _STARTED and done.code not in (0, None):
            print("bench.run: invalid command line: the config did not compose or Hydra could not "  # noqa: T201
                  "prepare out_dir (see above); nothing ran and no result.json was written", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    cli()
