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
from bench import environment, results, validate

log = logging.getLogger(__name__)


def _method_fn(dotted: str | None) -> Any:
    """The function a method YAML names by dotted path (None where it names none)."""
    return hydra.utils.get_method(dotted) if dotted else None


def _call(dotted: str | None, *args: Any) -> Any:
    """Call the function a YAML names by dotted path; None names nothing."""
    fn = _method_fn(dotted)
    return fn(*args) if fn else None


def train_and_evaluate(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The work of a run, after validation; returns the result sections. The evaluated split (``eval.split``:
    test, or validation for a search's candidates) is read only after training, and a run on validation never
    reads the test split at all."""
    import torch
    import transformers

    from bench import base, budget, curve, data, family, final, forgetting, measure, memory, modeling, splits, train

    tracker = measure.CpuTracker(cfg.train.cpu_mmap_threshold)   # exact RSS through set-up: baselines below
    phases = {"process_start": _process_start(), "imported": time.time()}
    train_records = splits.load(cfg.task, "train")
    hydra.utils.get_method(cfg.method.builder)  # imports the method's module (peft): code is not the model's memory
    tiny_base = base.ensure(cfg) if cfg.model.source == "tiny" else None   # a base built now: before the baseline
    mem_baseline = measure.current_memory()   # before the model exists: the estimate covers what comes after
    tokenizer, model, base_info = modeling.load(cfg, tiny_base)
    validate.check_model(cfg, model)
    ability = forgetting.before(model, tokenizer, cfg, base_info) if cfg.eval.split == "test" else {}   # untouched
    model_config, vocab = model.config, int(model.get_output_embeddings().weight.shape[0])
    tokenizer.save_pretrained(out / "tokenizer")
    transformers.set_seed(int(cfg.seed))  # after the base, which may have been built (and drawn numbers) just now
    with validate.input_errors(f"method={cfg.method.name} refused model={cfg.model.name}"):
        model = _call(cfg.method.builder, model, cfg.method, cfg.model)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    params = measure.parameter_counts(model)
    examples = family.of(cfg.model).encode(train_records, tokenizer, cfg.task)
    before = measure.current_memory()
    train.ensure_distributed()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if tracker.active:
        train.warm_up()
    mem_baseline += measure.current_memory() - before   # DeepSpeed's code and process group, not the run's tensors
    prec = train.precision(cfg.deepspeed)
    ds_config = train.deepspeed_config(cfg.deepspeed, micro_batch_size=int(cfg.train.micro_batch_size),
                                       grad_accum=int(cfg.train.grad_accum), grad_clip=float(cfg.train.grad_clip),
                                       prec=prec, trainable=params["trainable_params"])
    groups = train.param_groups(model, lr=float(cfg.method.lr), overrides=list(cfg.method.param_groups or []),
                                weight_decay=float(cfg.train.weight_decay))
    try:   # the estimate informs; a model it cannot replicate must not cost the run (recorded, warned)
        with torch.random.fork_rng(devices=[]):   # the replica's init must not move the run's random numbers
            estimate = memory.for_run(model_config, vocab, cfg, precision=prec, ds_config=ds_config,
                                      world_size=world, **data.longest(examples, int(cfg.task.max_length)))
        log.info("memory estimate: %s", memory.describe(estimate))
    except Exception as err:  # noqa: BLE001
        estimate = {"error": f"{type(err).__name__}: {err}"}
        log.warning("no memory estimate for this run: %s", estimate["error"])
    steps = budget.planned_steps(cfg, examples, world)
    engine = train.engine_for(model, groups, ds_config, total_steps=steps, train_cfg=cfg.train)
    stream = data.batches(examples, int(cfg.train.micro_batch_size), pad_id=tokenizer.pad_token_id,
                          seed=int(cfg.seed), group_by_length=bool(cfg.train.group_by_length),
                          rank=rank, world=world)
    generate_fn = _method_fn(cfg.method.hooks.generate)
    probe = curve.for_run(engine, tokenizer, cfg, rank=rank, world=world, generate_fn=generate_fn)
    at_start = measure.current_memory()
    was_reset = measure.reset_peak()
    watch = tracker.watcher(data.peak_steps(examples, int(cfg.train.micro_batch_size), seed=int(cfg.seed),
                                            group_by_length=bool(cfg.train.group_by_length), rank=rank, world=world,
                                            grad_accum=int(cfg.train.grad_accum), steps=steps))
    phases["train_start"] = time.time()
    hooks = train.StepHooks(pre=_method_fn(cfg.method.hooks.pre_step), post=_method_fn(cfg.method.hooks.post_step))
    fit = train.fit(engine, stream, steps=steps, grad_accum=int(cfg.train.grad_accum),
                    log_every=int(cfg.train.log_every), hooks=hooks, desc=f"train {cfg.method.name}",
                    seconds=cfg.train.budget.seconds, every=int(cfg.eval.curve.every), probe=probe,
                    watch=watch)
    peak = {**measure.peak_memory(was_reset=was_reset, tracker=tracker), "cpu_rss_tracks_tensors": tracker.active}
    check = measure.estimate_check(estimate, peak["peak_mem_bytes"], mem_baseline, at_start)
    peak.update(mem_estimate=check, mem_estimate_bytes=check.get("total_bytes"),
                mem_measured_bytes=check["measured_bytes"])
    log.info("memory: %.3f GiB measured above the start; estimate: %s", check["measured_bytes"] / 2**30,
             f"{check['total_bytes'] / 2**30:.3f} GiB" if "total_bytes" in check else check["error"])
    phases["train_end"] = time.time()
    fit["budget"] = budget.budget_record(cfg, fit, planned=steps)
    if probe is not None:
        fit["curve"] = probe.record()
    ran = final.Trained(engine.module, tokenizer, rank=rank, world=world, generate_fn=generate_fn,
                        saver=_method_fn(cfg.method.saver), summary_fn=_method_fn(cfg.method.hooks.summary),
                        hooks_state=hooks.state, ability=ability, base_info=base_info,
                        train_records=len(train_records))   # ZeRO-1: every rank holds every weight
    sections = final.finish(cfg, ran, out)
    if rank != 0:   # rank 0 alone saves, times inference and writes
        return {"phases": phases}
    phases["eval_end"] = time.time()
    train_info = {**fit, **sections.pop("train_info"), **peak, **params, "precision": prec,
                  "answers_cut": data.answers_cut(examples),
                  "pad_share": data.pad_share(examples, int(cfg.train.micro_batch_size), seed=int(cfg.seed),
                                              group_by_length=bool(cfg.train.group_by_length))}
    return {"train_info": train_info, **sections, "base_info": base_info, "phases": phases}


def execute(cfg: DictConfig) -> int:
    """Run and record; the exit status is 0 for success, 2 for an invalid config, 1 for a failure.

    Input errors (``validate.InputError``: config, data, a method refusing its options) are ``invalid``;
    anything else, an out-of-memory or a SIGTERM included, is ``failed`` with its traceback. A SIGKILL
    leaves the ``running`` record, which ``bench.sweep`` turns into a failure and a rerun replaces.
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
    run_info["warnings"] = validate.check(cfg)
    for warning in run_info["warnings"]:
        log.warning("%s", warning)
    from_file = validate.deepspeed_json(cfg.deepspeed)
    if not from_file:
        return cfg
    run_info["deepspeed_json"] = from_file
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.deepspeed.extra = validate.deepspeed_extra(cfg.deepspeed)
    return cfg


def _is_input_error(err: Exception) -> bool:
    """Errors the user's input caused (config, data, a method refusing its options), found before training."""
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
    global _STARTED
    _STARTED = True
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
