"""Check a run against what it saved: reload the weights in this process, regenerate, re-score, compare.

``python -m bench.reproduce RUN_DIR [RUN_DIR …] [--batch-size N …] [--plain]`` (``make reproduce RUN=…``) loads
each run's base exactly as the run did, puts the saved weights on it the way a user would (the method YAML's
``loader``: plain ``PeftModel.from_pretrained`` for PEFT adapters, the trained tensors into the base for
full/freeze), with the base in the precision the run trained in (fp16/bf16 under DeepSpeed), regenerates the eval
records, and compares with ``predictions.jsonl`` and ``eval_info``.
``--plain`` also decodes one record at a time with ``model.generate`` and no method hook, as a user of
PEFT alone would. Exit status 0 when every prediction and quality figure is identical, 1 otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)


def load_run(run_dir: Path) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """The run's resolved config, its result record and its prediction rows."""
    record = json.loads((run_dir / "result.json").read_text())
    if record["run_info"]["status"] != "success":
        raise ValueError(f"{run_dir}: status {record['run_info']['status']}; only successful runs can be reproduced")
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines() if line]
    return OmegaConf.create(record["run_info"]["config"]), record, rows


def reload(cfg: Any, record: dict[str, Any], run_dir: Path) -> tuple[Any, Any]:
    """Tokenizer and the run's base with the saved weights on it, in eval mode."""
    import hydra

    from bench.models import dtypes, loading

    base_info = record.get("base_info") or {}
    if cfg.model.source == "tiny" and not (base_info.get("path") and base_info.get("key")):
        from bench.pipeline import tinybase as bases

        base_info = bases.ensure(cfg)
    precision = str((record.get("train_info") or {}).get("precision") or "fp32")
    with open_dict(cfg):   # the base in the run's training precision (fp16/bf16 under DeepSpeed), as a user loads it
        cfg.model.dtype = str(dtypes.trained_dtype(cfg.model, precision)).removeprefix("torch.")
    tokenizer, base, _ = loading.load(cfg, base_info if base_info.get("path") and base_info.get("key") else None)
    model = hydra.utils.get_method(cfg.method.loader)(base, run_dir, cfg.method)
    return tokenizer, model.eval()


def quality(metrics: dict[str, Any], score_keys: set[str]) -> dict[str, Any]:
    """The figures of ``metrics`` that the task's ``score`` produces (not timings)."""
    return {k: v for k, v in metrics.items() if k in score_keys}


def rescore(task_cfg: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's scores of saved prediction rows."""
    from bench.taskdata import taskcfg

    return taskcfg.scored(task_cfg, [r["prediction"] for r in rows], [r["reference"] for r in rows])


def regenerate(cfg: Any, model: Any, tokenizer: Any, rows: list[dict[str, Any]], *, batch_size: int,
               plain: bool) -> list[str]:
    """Answers to the saved rows' prompts, as the run generated them (``plain``: without the method's hook)."""
    import hydra

    from bench.pipeline import evaluate
    from bench.taskdata import encoding

    records = [{**{k: v for k, v in r.items() if k not in ("reference", "prediction")}, "output": r["reference"]}
               for r in rows]
    prompts = [encoding.prompt_text(record, cfg.task, tokenizer) for record in records]
    hook = None if plain or not cfg.method.hooks.generate else hydra.utils.get_method(cfg.method.hooks.generate)
    new = int(cfg.eval.max_new_tokens)
    answers, _, _ = evaluate.generate(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=new,
                                      max_prompt_tokens=int(cfg.task.max_length) - new,
                                      desc=f"reproduce (batch {batch_size}{', plain' if plain else ''})",
                                      generate_fn=hook)
    return answers


def check(run_dir: Path, *, batch_sizes: list[int], plain: bool) -> dict[str, Any]:
    """Per decoding set-up: identical predictions (count) and whether every quality figure equals ``eval_info``."""
    cfg, record, rows = load_run(run_dir)
    saved = rescore(cfg.task, rows)
    keys = set(saved)
    report: dict[str, Any] = {"run_dir": str(run_dir), "records": len(rows),
                              "rescored_equal": quality(record["eval_info"], keys) == saved, "setups": {}}
    tokenizer, model = reload(cfg, record, run_dir)
    setups = [(f"batch{b}", b, False) for b in batch_sizes] + ([("plain_batch1", 1, True)] if plain else [])
    for name, size, bare in setups:
        answers = regenerate(cfg, model, tokenizer, rows, batch_size=size, plain=bare)
        same = sum(a == r["prediction"] for a, r in zip(answers, rows, strict=True))
        scores = rescore(cfg.task, [{**r, "prediction": a} for r, a in zip(rows, answers)])
        report["setups"][name] = {"identical": same, "metrics_equal": scores == quality(record["eval_info"], keys),
                                  "mismatches": [i for i, (a, r) in enumerate(zip(answers, rows))
                                                 if a != r["prediction"]]}
    report["ok"] = report["rescored_equal"] and all(s["identical"] == len(rows) and s["metrics_equal"]
                                                    for s in report["setups"].values())
    return report
