"""What the harness costs on top of the work: ``python -m bench.perf`` (``make perf``, conf/perf.yaml).

- Training step: a real launched ``bench.run`` cell (the harness, with its CPU memory tracking on and off)
  against ``bench.bare`` (plain transformers + PEFT + DeepSpeed over the same batches, in a process of its own,
  none of our settings), interleaved repeats, ratio of the median seconds per step; on the tiny model and on
  SmolLM2-135M.
- Generation: batched greedy decoding (the harness's evaluation) against plain ``model.generate`` one record at a
  time, with identical answers, and its tokens/s.
- Padding waste of training batches with and without length grouping.
- The wall-time split of one default launched cell: launcher start, imports, set-up, training, evaluation, exit.
Writes ``results/perf/perf.json`` and prints a table.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import bench  # noqa: F401  (registers config resolvers)
from bench.core import results
from bench.core.paths import ROOT
from bench.models import dtypes, loading
from bench.pipeline import costs, engine_setup, evaluate
from bench.taskdata import encoding, splits

log = logging.getLogger(__name__)
OUT = ROOT / "results" / "perf"


def _compose(*overrides: str) -> DictConfig:
    """The run config of a case, as ``bench.run`` composes it."""
    return hydra.compose(config_name="config", overrides=list(overrides))


def _loaded(cfg: DictConfig) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, model and where it came from (a tiny model's cached base is built when missing)."""
    from bench.pipeline import tinybase

    return loading.load(cfg, tinybase.ensure(cfg) if cfg.model.source == "tiny" else None)


def bare_inputs(cfg: DictConfig, folder: Path, steps: int) -> tuple[Path, Path | None, dict[str, Any], int]:
    """The batches the harness's cell trains on first (same seed, grouping, size), saved for the bare loop with
    the method's PEFT config (None: full fine-tuning) and the run's DeepSpeed config; and their tokens."""
    tokenizer, model, info = _loaded(cfg)
    peft_dir, ds, tokens, _ = save_inputs(cfg, folder, steps, tokenizer, model)
    return Path(info["path"]), peft_dir, ds, tokens


def save_inputs(cfg: DictConfig, folder: Path, steps: int, tokenizer: Any, model: Any
                ) -> tuple[Path | None, dict[str, Any], int, int]:
    """``bare_inputs`` for a model already at hand (on the meta device will do: only its parameter counts are read);
    and the method's trainable parameters."""
    examples = encoding.encode(splits.load(cfg.task, "train"), tokenizer, cfg.task)
    stream = encoding.batches(examples, encoding.BatchPlan.of(cfg.train, seed=int(cfg.seed)),
                              pad_id=tokenizer.pad_token_id)
    batches = [next(stream) for _ in range(steps)]
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(batches, folder / "batches.pt")
    peft_dir = None
    if "peft_config" in cfg.method:
        peft_dir = folder / "peft"
        hydra.utils.instantiate(cfg.method.peft_config).save_pretrained(str(peft_dir))
    wrapped = hydra.utils.get_method(cfg.method.builder)(model, cfg.method, cfg.model)
    trainable = int(costs.parameter_counts(wrapped)["trainable_params"])
    ds = engine_setup.deepspeed_config(cfg.deepspeed, micro_batch_size=int(cfg.train.micro_batch_size), grad_accum=1,
                                grad_clip=float(cfg.train.grad_clip), prec=dtypes.resolve(cfg.deepspeed),
                                trainable=trainable)   # the run's bucket
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    return peft_dir, ds, tokens, trainable


def _own_env() -> dict[str, str]:
    """This environment without the rendezvous of a process group this one may have joined."""
    return {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                             "MASTER_PORT")}


def _launch(args: list[str], out_dir: Path) -> dict[str, Any]:
    """A real cell through the ``deepspeed`` launcher; its result record."""
    deepspeed = Path(sys.executable).parent / "deepspeed"
    cmd = [str(deepspeed), "--num_gpus", "1", "--no_local_rank", "--module", "bench.run", *args, f"out_dir={out_dir}"]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_own_env())
    if proc.returncode:
        raise RuntimeError(f"launched cell failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    record = json.loads((out_dir / "result.json").read_text())
    record["wall_s"], record["launched_at"] = time.time() - start, start
    record["recorded_at"] = (out_dir / "result.json").stat().st_mtime
    return record


def _bare(model_dir: Path, folder: Path, peft_dir: Path | None, ds: dict[str, Any], lr: float,
          extra: tuple[str, ...] = ()) -> list[float]:
    """``bench.bare`` in a process of its own (``extra``: its ``--random``, ``--dtype``); the seconds of each step."""
    cmd = [sys.executable, "-m", "bench.bare", str(model_dir), str(folder / "batches.pt"), str(folder / "bare.json"),
           "--ds", json.dumps(ds), "--lr", str(lr), *(["--peft", str(peft_dir)] if peft_dir else []), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_own_env())
    if proc.returncode:
        raise RuntimeError(f"bare loop failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return json.loads((folder / "bare.json").read_text())["step_seconds"]


def step_overhead(case: Any, pcfg: Any) -> dict[str, Any]:
    """Seconds per training step: harness with memory tracking on, off, and the bare loop, interleaved repeats."""
    overrides = [f"model={case.model}", f"method={case.method}", *case.overrides]
    cfg = _compose(*overrides)
    steps = int(case.steps)
    folder = OUT / "bare" / f"{case.model}-{case.method}"
    model_dir, peft_dir, ds, tokens = bare_inputs(cfg, folder, steps)
    sides = {"tracking_on": [], "tracking_off": [], "bare": []}
    repeats = int(case.get("repeats") or pcfg.repeats)
    for rep in range(repeats):
        for side in ("tracking_on", "tracking_off"):
            extra = [] if side == "tracking_on" else ["train.cpu_mmap_threshold=null"]
            record = _launch([*overrides, f"train.steps={steps}", *pcfg.harness_overrides, *extra],
                             folder / f"{side}{rep}")
            sides[side].append(record["train_info"]["train_time_s"] / steps)
        sides["bare"].append(sum(_bare(model_dir, folder, peft_dir, ds, float(cfg.method.lr))) / steps)
        log.info("%s/%s repeat %d: %s", case.model, case.method, rep,
                 {k: f"{1000 * v[-1]:.1f} ms" for k, v in sides.items()})
    med = {k: statistics.median(v) for k, v in sides.items()}
    return {"model": case.model, "method": case.method, "steps": steps, "repeats": repeats,
            "tokens_per_step": tokens / steps, **{f"{k}_step_s": v for k, v in med.items()},
            "ratio_tracking_on": med["tracking_on"] / med["bare"],
            "ratio_tracking_off": med["tracking_off"] / med["bare"],
            "train_tokens_per_s": {k: tokens / steps / v for k, v in med.items()}, "samples": sides}


def eval_speed(gen: Any) -> dict[str, Any]:
    """Batched against per-record greedy generation (plain ``model.generate``) on the same prompts; answers must be
    identical."""
    cfg = _compose(f"model={gen.model}", *gen.overrides)
    tokenizer, model, _ = _loaded(cfg)
    records = splits.load(cfg.task, "test")[: int(gen.records)]
    prompts = [encoding.prompt_text(r, cfg.task, tokenizer) for r in records]
    limit = int(cfg.task.max_length) - int(cfg.eval.max_new_tokens)
    timings, answers, tokens = {}, {}, {}
    for name, size in (("batched", int(cfg.eval.batch_size)), ("per_record", 1)):
        start = time.perf_counter()
        answers[name], _, tokens[name] = evaluate.generate(model, tokenizer, prompts, batch_size=size,
                                                           max_new_tokens=int(cfg.eval.max_new_tokens),
                                                           max_prompt_tokens=limit, desc=f"{gen.model} {name}")
        timings[name] = time.perf_counter() - start
    same = sum(a == b for a, b in zip(answers["batched"], answers["per_record"]))
    return {"model": gen.model, "records": len(prompts), "batched_s": timings["batched"],
            "per_record_s": timings["per_record"], "speedup": timings["per_record"] / timings["batched"],
            "gen_tokens_per_s": {k: tokens[k] / timings[k] for k in timings},
            "identical": same == len(prompts), "identical_count": same}


def padding(cfg: DictConfig) -> dict[str, Any]:
    """Pad share of one pass of training batches, grouped and not, on the default task."""
    tokenizer, _, _ = _loaded(cfg)
    examples = encoding.encode(splits.load(cfg.task, "train"), tokenizer, cfg.task)
    size = int(cfg.train.micro_batch_size)
    grouped = encoding.BatchPlan(size, group_by_length=True)
    return {str(cfg.task.name): {"grouped": encoding.pad_share(examples, grouped),
                                 "ungrouped": encoding.pad_share(examples, encoding.BatchPlan(size))}}


def launched_cell(out_dir: Path, method: str, steps: int) -> dict[str, Any]:
    """One real default cell through the launcher, its wall time split by the phases the run recorded."""
    record = _launch([f"method={method}", f"train.steps={steps}"], out_dir)
    start, wall, phases = record["launched_at"], record["wall_s"], record["run_info"]["phases"]
    split = {"launcher_start_s": phases["process_start"] - start,
             "imports_s": phases["imported"] - phases["process_start"],
             "setup_s": phases["train_start"] - phases["imported"],
             "train_s": phases["train_end"] - phases["train_start"],
             "eval_s": phases["eval_end"] - phases["train_end"],
             "write_s": record["recorded_at"] - phases["eval_end"],
             "launcher_exit_s": start + wall - record["recorded_at"]}   # a sweep overlaps it with the next cell
    return {"method": method, "steps": steps, "wall_s": wall, **split,
            "shares": {k: v / wall for k, v in split.items()}}


def table(report: dict[str, Any]) -> str:
    """The figures as Markdown."""
    lines = ["| model | method | bare loop step (ms) | harness, tracking on | ratio | harness, tracking off | ratio |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['method']} | {1000 * r['bare_step_s']:.1f} | {1000 * r['tracking_on_step_s']:.1f} "
              f"| {r['ratio_tracking_on']:.3f} | {1000 * r['tracking_off_step_s']:.1f} "
              f"| {r['ratio_tracking_off']:.3f} |"
              for r in report["step_time"]]
    lines += ["", "| model | records | batched (s) | one at a time (s) | speed-up | gen tokens/s batched | identical |",
              "|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {e['model']} | {e['records']} | {e['batched_s']:.2f} | {e['per_record_s']:.2f} | {e['speedup']:.1f}× "
              f"| {e['gen_tokens_per_s']['batched']:.0f} | {e['identical']} |" for e in report["eval"]]
    lines += ["", "| data | pad share grouped | pad share ungrouped |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['grouped']:.1%} | {v['ungrouped']:.1%} |" for k, v in report["padding"].items()]
    cell = report["cell"]
    lines += ["", f"one launched cell ({cell['method']}, {cell['steps']} steps, {cell['wall_s']:.1f} s): "
              + ", ".join(f"{k[:-2]} {v:.1f} s ({cell['shares'][k]:.0%})" for k, v in cell.items()
                          if k.endswith("_s") and k != "wall_s")]
    return "\n".join(lines)


@hydra.main(config_path="../conf", config_name="perf", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Measure and write ``results/perf/perf.json``."""
    pcfg = cfg.perf
    report: dict[str, Any] = {"step_time": [step_overhead(case, pcfg) for case in pcfg.cases]}
    report["eval"] = [eval_speed(gen) for gen in pcfg.generation]
    report["padding"] = padding(_compose())
    report["cell"] = launched_cell(OUT / "cell", str(pcfg.cell.method), int(pcfg.cell.steps))
    report["meta"] = {"versions": results.versions(), "torch_threads": torch.get_num_threads(),
                      "config": OmegaConf.to_container(pcfg, resolve=True)}
    results.write_json(OUT / "perf.json", report)
    log.info("results/perf/perf.json\n%s", table(report))


if __name__ == "__main__":
    main()
