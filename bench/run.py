"""One benchmark run: model × method × task, trained under DeepSpeed, evaluated, written as one JSON.

Launch: ``deepspeed --no_local_rank --module bench.run method=lora out_dir=…`` (any Hydra override).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import bench  # noqa: F401  (registers config resolvers)
from bench import results, validate

log = logging.getLogger(__name__)


def _call(dotted: str | None, *args: Any) -> Any:
    """Call the function a YAML names by dotted path; None names nothing."""
    return hydra.utils.get_method(dotted)(*args) if dotted else None


def train_and_evaluate(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The work of a run, after validation; returns the result sections."""
    import torch
    import transformers

    from bench import data, evaluate, measure, modeling, train
    import tasks

    task = tasks.module(cfg.task)
    train_records = task.load_split(cfg.task, "train")
    eval_records = task.load_split(cfg.task, "eval")[: cfg.eval.max_records or None]
    tokenizer, model, base_info = modeling.load(cfg)
    tokenizer.save_pretrained(out / "tokenizer")
    transformers.set_seed(int(cfg.seed))  # after the base, which may have been built (and drawn numbers) just now
    model = _call(cfg.method.builder, model, cfg.method, cfg.model)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    params = measure.parameter_counts(model)
    examples = data.encode(train_records, tokenizer, cfg.task)

    train.ensure_distributed()
    prec = train.precision(cfg.deepspeed)
    ds_config = train.deepspeed_config(cfg.deepspeed, micro_batch_size=int(cfg.train.micro_batch_size),
                                       grad_accum=int(cfg.train.grad_accum), grad_clip=float(cfg.train.grad_clip),
                                       prec=prec)
    groups = train.param_groups(model, lr=float(cfg.method.lr), overrides=list(cfg.method.param_groups or []),
                                weight_decay=float(cfg.train.weight_decay))
    engine = train.engine_for(model, groups, ds_config, total_steps=int(cfg.train.steps), train_cfg=cfg.train)
    stream = data.batches(examples, int(cfg.train.micro_batch_size), pad_id=tokenizer.pad_token_id,
                          seed=int(cfg.seed), group_by_length=bool(cfg.train.group_by_length))
    measure.reset_peak()
    on_step = hydra.utils.get_method(cfg.method.hooks.on_step) if cfg.method.hooks.on_step else None
    fit = train.fit(engine, stream, steps=int(cfg.train.steps), grad_accum=int(cfg.train.grad_accum),
                    log_every=int(cfg.train.log_every), on_step=on_step, desc=f"train {cfg.method.name}")
    memory = measure.peak_memory()
    trained = engine.module
    sizes = _call(cfg.method.saver, trained, out, cfg.method)
    eval_examples = data.encode(eval_records, tokenizer, cfg.task)
    eval_loss = evaluate.eval_loss(trained, eval_examples, batch_size=int(cfg.eval.batch_size),
                                   pad_id=tokenizer.pad_token_id)
    metrics, rows = evaluate.evaluate(trained, tokenizer, eval_records, cfg.task, batch_size=int(cfg.eval.batch_size),
                                      max_new_tokens=int(cfg.eval.max_new_tokens))
    results.write_jsonl(out / "predictions.jsonl", rows)
    train_info = {**fit, "eval_loss": eval_loss, **memory, **params, "adapter_bytes": sizes.pop("adapter"),
                  "adapter_bytes_variants": sizes, "precision": prec,
                  "method_summary": _call(cfg.method.hooks.summary, trained),
                  "pad_share": data.pad_share(examples, int(cfg.train.micro_batch_size), seed=int(cfg.seed),
                                              group_by_length=bool(cfg.train.group_by_length))}
    base = {k: v for k, v in base_info.items()}
    return {"train_info": train_info, "eval_info": metrics, "base_info": base}


def execute(cfg: DictConfig) -> int:
    """Run and record; the exit status is 0 for success, 2 for an invalid config, 1 for a failure."""
    out = Path(cfg.out_dir)
    rank = int(os.environ.get("RANK", "0"))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    record: dict[str, Any] = {
        "run_info": {"run_id": uuid.uuid4().hex[:12], "status": "running", "error": None, "config": resolved,
                     "config_hash": results.config_hash(resolved), "seed": int(cfg.seed),
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "log_path": str(out / "run.log"),
                     **results.git_state()},
    }
    start = time.perf_counter()
    status, code = "success", 0
    try:
        validate.check(cfg)
        if rank == 0:
            results.write_json(out / "result.json", record)
        record.update(train_and_evaluate(cfg, out))
    except (validate.ConfigError, ValueError, FileNotFoundError) as err:
        status, code = ("invalid", 2) if _is_input_error(err) else ("failed", 1)
        record["run_info"]["error"] = f"{type(err).__name__}: {err}"
        log.error("%s run: %s", status, err)
    except Exception as err:  # noqa: BLE001  (every crash is recorded, then reported by the exit status)
        status, code = "failed", 1
        record["run_info"]["error"] = f"{type(err).__name__}: {err}"
        record["run_info"]["traceback"] = traceback.format_exc()
        log.exception("run failed")
    record["run_info"].update({"status": status, "wall_time_s": time.perf_counter() - start})
    record["meta_info"] = _meta()
    if rank == 0:
        results.write_json(out / "result.json", record)
        log.info("%s: %s", status, out / "result.json")
    return code


def _is_input_error(err: Exception) -> bool:
    """Errors the user's input caused, found before any training."""
    from tasks.triples import DataError

    return isinstance(err, (validate.ConfigError, DataError))


def _meta() -> dict[str, Any]:
    """Where the run happened."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"versions": results.versions(), "device": "cuda" if gpu else "cpu", "gpu_name": gpu,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")), "torch_threads": torch.get_num_threads(),
            "hostname": os.uname().nodename}


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    sys.exit(execute(cfg))


if __name__ == "__main__":
    main()
