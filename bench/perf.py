"""What the harness costs on top of the work: ``python -m bench.perf`` (``make perf``).

In one process, on the default tiny model and task:
- training step time of the harness (``bench.train.fit`` with its data stream) against a bare loop
  (the same model and method, pre-built batches, ``deepspeed.initialize``, forward/backward/step and
  nothing else), interleaved repeats, median step time, as a ratio;
- batched generation (the harness's evaluation) against one record at a time, with identical answers;
- padding waste of training batches with and without length grouping (synthetic task, and the
  seed's real data when ``../shared/data/spo`` is there);
- the wall-time split of one real launched cell: launcher start, imports and set-up, training,
  evaluation, writing (from the phase timestamps the run records).
Writes ``results/perf/perf.json`` and prints a table.
"""

from __future__ import annotations

import copy
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

import bench  # noqa: F401  (registers config resolvers)
from bench import chartok, data, evaluate, modeling, results, splits, train

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
SPO = ROOT.parent / "shared" / "data" / "spo" / "spo_0.json"


def _engine(cfg: DictConfig, model: torch.nn.Module, method: str) -> Any:
    """A DeepSpeed engine for ``model`` wrapped by ``method``, as the run builds it."""
    mcfg = hydra.compose(config_name="config", overrides=[f"method={method}"]).method
    wrapped = hydra.utils.get_method(mcfg.builder)(copy.deepcopy(model), mcfg, cfg.model)
    groups = train.param_groups(wrapped, lr=float(mcfg.lr), overrides=list(mcfg.param_groups or []),
                                weight_decay=0.0)
    ds = train.deepspeed_config(cfg.deepspeed, micro_batch_size=int(cfg.train.micro_batch_size), grad_accum=1,
                                grad_clip=float(cfg.train.grad_clip), prec=train.precision(cfg.deepspeed))
    return train.engine_for(wrapped, groups, ds, total_steps=10_000, train_cfg=cfg.train)


def _bare_steps(engine: Any, batches: list[dict[str, torch.Tensor]]) -> float:
    """Seconds per step of the plainest DeepSpeed loop over ready-made batches."""
    engine.train()
    start = time.perf_counter()
    for batch in batches:
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
    return (time.perf_counter() - start) / len(batches)


def step_ratio(cfg: DictConfig, model: torch.nn.Module, examples: list, pad_id: int, *, method: str,
               steps: int, repeats: int) -> dict[str, Any]:
    """Median harness and bare step times (interleaved repeats, warm-up excluded) and their ratio."""
    harness_engine, bare_engine = _engine(cfg, model, method), _engine(cfg, model, method)
    stream = data.batches(examples, int(cfg.train.micro_batch_size), pad_id=pad_id, seed=0, group_by_length=True)
    ready = [next(stream) for _ in range(steps)]
    stream = data.batches(examples, int(cfg.train.micro_batch_size), pad_id=pad_id, seed=0, group_by_length=True)
    harness, bare = [], []
    for rep in range(repeats + 1):
        h = train.fit(harness_engine, stream, steps=steps, grad_accum=1, log_every=int(cfg.train.log_every),
                      desc=f"perf {method}")["train_time_s"] / steps
        b = _bare_steps(bare_engine, ready)
        if rep:  # the first pair warms caches up
            harness.append(h)
            bare.append(b)
    h_med, b_med = statistics.median(harness), statistics.median(bare)
    return {"method": method, "harness_step_ms": 1000 * h_med, "bare_step_ms": 1000 * b_med,
            "ratio": h_med / b_med, "repeats": repeats, "steps_per_repeat": steps}


def eval_speed(model: torch.nn.Module, tokenizer: Any, records: list, task_cfg: Any, *, batch_size: int,
               max_new_tokens: int) -> dict[str, Any]:
    """Batched against per-record greedy generation on the same prompts; answers must be identical."""
    prompts = [data.prompt_text(r, task_cfg, tokenizer) for r in records]
    timings, answers = {}, {}
    for name, size in (("batched", batch_size), ("per_record", 1)):
        start = time.perf_counter()
        answers[name], _, _ = evaluate.generate(model, tokenizer, prompts, batch_size=size,
                                                max_new_tokens=max_new_tokens, desc=name)
        timings[name] = time.perf_counter() - start
    same = sum(a == b for a, b in zip(answers["batched"], answers["per_record"]))
    return {"records": len(prompts), "batched_s": timings["batched"], "per_record_s": timings["per_record"],
            "speedup": timings["per_record"] / timings["batched"], "identical": same == len(prompts),
            "identical_count": same}


def padding(cfg: DictConfig, examples: list) -> dict[str, Any]:
    """Pad share of one pass of training batches, grouped and not, here and on the seed's data."""
    size = int(cfg.train.micro_batch_size)
    out = {"triples_synth": {g: data.pad_share(examples, size, seed=0, group_by_length=g) for g in (True, False)}}
    if SPO.is_file():
        import tasks

        task = hydra.compose(config_name="config", overrides=["task=triples", f"task.data.train={SPO}",
                                                              f"task.data.test={SPO}"]).task
        records = splits.load(task, "train")
        tok = chartok.build(tasks.module(task).prompt(r, task) + r["output"] for r in records)
        spo = data.encode(records, tok, task)
        out["spo"] = {g: data.pad_share(spo, size, seed=0, group_by_length=g) for g in (True, False)}
    return {name: {"grouped": v[True], "ungrouped": v[False]} for name, v in out.items()}


def launched_cell(out_dir: Path, method: str, steps: int) -> dict[str, Any]:
    """One real cell through the launcher, its wall time split by the phases the run recorded."""
    deepspeed = Path(sys.executable).parent / "deepspeed"
    cmd = [str(deepspeed), "--num_gpus", "1", "--no_local_rank", "--module", "bench.run", f"method={method}",
           f"train.steps={steps}", f"out_dir={out_dir}"]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode:
        raise RuntimeError(f"launched cell failed: {proc.stderr[-2000:]}")
    phases = __import__("json").loads((out_dir / "result.json").read_text())["run_info"]["phases"]
    split = {"launcher_start_s": phases["process_start"] - start,
             "imports_s": phases["imported"] - phases["process_start"],
             "setup_s": phases["train_start"] - phases["imported"],
             "train_s": phases["train_end"] - phases["train_start"],
             "eval_s": phases["eval_end"] - phases["train_end"],
             "write_and_exit_s": start + wall - phases["eval_end"]}
    return {"method": method, "steps": steps, "wall_s": wall, **split,
            "shares": {k: v / wall for k, v in split.items()}}


def table(report: dict[str, Any]) -> str:
    """The figures as Markdown."""
    lines = ["| method | harness step (ms) | bare step (ms) | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['harness_step_ms']:.1f} | {r['bare_step_ms']:.1f} | {r['ratio']:.3f} |"
              for r in report["step_time"]]
    ev = report["eval"]
    lines += ["", f"generation, {ev['records']} records: batched {ev['batched_s']:.2f} s, one at a time "
              f"{ev['per_record_s']:.2f} s, speed-up {ev['speedup']:.1f}x, identical answers: {ev['identical']}", "",
              "| data | pad share grouped | pad share ungrouped |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['grouped']:.1%} | {v['ungrouped']:.1%} |" for k, v in report["padding"].items()]
    cell = report["cell"]
    lines += ["", f"one launched cell ({cell['method']}, {cell['steps']} steps, {cell['wall_s']:.1f} s): "
              + ", ".join(f"{k[:-2]} {v:.1f} s ({cell['shares'][k]:.0%})" for k, v in cell.items()
                          if k.endswith("_s") and k != "wall_s")]
    return "\n".join(lines)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Measure and write ``results/perf/perf.json``."""
    steps, repeats = int(cfg.get("perf_steps", 30)), int(cfg.get("perf_repeats", 5))
    from bench import base

    tokenizer, model, _ = modeling.load(cfg, base.ensure(cfg) if cfg.model.source == "tiny" else None)
    examples = data.encode(splits.load(cfg.task, "train"), tokenizer, cfg.task)
    train.ensure_distributed()
    report = {"step_time": [step_ratio(cfg, model, examples, tokenizer.pad_token_id, method=m, steps=steps,
                                       repeats=repeats) for m in ("lora", "prefix_tuning", "full")]}
    report["eval"] = eval_speed(model, tokenizer, splits.load(cfg.task, "test"), cfg.task,
                                batch_size=int(cfg.eval.batch_size), max_new_tokens=int(cfg.eval.max_new_tokens))
    report["padding"] = padding(cfg, examples)
    out = ROOT / "results" / "perf"
    report["cell"] = launched_cell(out / "cell", "lora", steps=100)
    report["meta"] = {"versions": results.versions(), "torch_threads": torch.get_num_threads()}
    results.write_json(out / "perf.json", report)
    log.info("results/perf/perf.json\n%s", table(report))


if __name__ == "__main__":
    main()
