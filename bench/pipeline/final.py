"""The final evaluation of a trained model: its evaluated split scored once, then forgetting, saving and latency.

``eval.split: test`` (the default) is the table's evaluation: the test split is read here, after training, for
the first time in the run. ``eval.split: validation`` scores the validation split instead and never reads the
test split (a learning-rate search's candidates); forgetting and the latency passes, test-time measurements,
are left out there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.core import results, stats
from bench.models import kbit
from bench.pipeline import evaluate, forgetting
from bench.taskdata import encoding, family, splits, taskcfg

log = logging.getLogger(__name__)

RESAMPLES = 1000   # bootstrap draws over test records: the interval's ends move < 0.005 between seeds of it


@dataclass
class Trained:
    """What the run hands its final evaluation: the trained model (every weight on every rank under ZeRO-1) and
    what it needs beside it."""

    model: Any
    tokenizer: Any
    rank: int
    world: int
    generate_fn: evaluate.Generate | None
    saver: Callable[..., dict[str, int]]                   # the method YAML's, as the run resolved it
    summary_fn: Callable[..., Any] | None = None           # the method YAML's hooks.summary
    hooks_state: dict[str, Any] = field(default_factory=dict)
    ability: dict[str, Any] = field(default_factory=dict)
    base_info: dict[str, Any] = field(default_factory=dict)
    train_records: int = 0


@contextlib.contextmanager
def timed(what: str, switch: str) -> Iterator[None]:
    """Log how long a measurement beside the table's scores took, and the setting that makes it cheaper or skips it:
    on a real model these cost minutes a user may not want."""
    start = time.perf_counter()
    yield
    log.info("%s: %.1f s (%s)", what, time.perf_counter() - start, switch)


def as_reloaded(model: Any) -> Any:
    """The trained model as a user's reload of its saved weights gives it, so the run reports what they give.

    DeepSpeed trains every weight in the run's precision (fp16/bf16), and the adapter is saved from those weights;
    PEFT's ``from_pretrained`` puts them on a base in that precision but casts a tuner's adapter weights (LoRA,
    AdaLoRA, VB-LoRA, …) to fp32 (``autocast_adapter_dtype``, its default). Scoring the fp16 copies reported what no
    reload gives (AdaLoRA ``ok: false`` on an H200). This applies the same cast, through the same PEFT call
    ``PeftModel`` makes on load; it changes nothing in fp32, and a prompt encoder (none of PEFT's tuner layers)
    already computes what its saved prompt holds. Full and freeze save the trained tensors as they are.
    """
    cast = getattr(getattr(model, "base_model", None), "_cast_adapter_dtype", None)
    if cast is not None:
        cast(adapter_name=model.active_adapter, autocast_adapter_dtype=True)
    return model


def evaluate_split(cfg: Any, ran: Trained) -> tuple[list[dict[str, str]], dict[str, Any], list[dict[str, Any]], float,
                                                     int]:
    """The evaluated split's records, scores, prediction rows, loss and answers cut (sharded over the ranks)."""
    records = splits.load(cfg.task, str(cfg.eval.split))[: cfg.eval.max_records or None]
    examples = family.of(cfg.model).encode(records, ran.tokenizer, cfg.task)
    loss = evaluate.eval_loss(ran.model, examples, batch_size=int(cfg.eval.batch_size),
                              pad_id=ran.tokenizer.pad_token_id, rank=ran.rank, world=ran.world)
    scores, rows = evaluate.evaluate(ran.model, ran.tokenizer, records, cfg.task, batch_size=int(cfg.eval.batch_size),
                                     max_new_tokens=int(cfg.eval.max_new_tokens), rank=ran.rank, world=ran.world,
                                     generate_fn=ran.generate_fn)
    return records, scores, rows, loss, encoding.answers_cut(examples)


def interval(task_cfg: Any, rows: list[dict[str, Any]], *, confidence: float = 0.95) -> dict[str, Any]:
    """The primary metric's percentile bootstrap interval over the test records (any number of seeds)."""
    metric, _ = taskcfg.primary(task_cfg)
    point, low, high = stats.bootstrap_interval(taskcfg.scorer(task_cfg, metric, rows), len(rows),
                                                confidence=confidence, resamples=RESAMPLES)
    return {"metric": metric, "value": point, "low": low, "high": high, "confidence": confidence,
            "resamples": RESAMPLES, "records": len(rows)}


def finish(cfg: Any, ran: Trained, out: Path) -> dict[str, Any]:
    """Score, save and time the trained model; the result sections it fills ({} on ranks other than 0)."""
    split = str(cfg.eval.split)
    ran.model = as_reloaded(ran.model)
    records, scores, rows, loss, cut = evaluate_split(cfg, ran)
    if ran.rank != 0:   # rank 0 alone saves, times inference and writes
        return {}
    scores["split"], test = split, split == "test"
    if test:   # forgetting before latency, which merges an adapter into the weights for good
        scores["bootstrap"] = interval(cfg.task, rows)
        with timed("forgetting after tuning", "forgetting.measure=none skips it"):
            scores.update(forgetting.after(ran.model, ran.tokenizer, cfg, ran.base_info, ran.ability,
                                           generate_fn=ran.generate_fn))
    sizes = ran.saver(ran.model, out, cfg.method)
    summary = ran.summary_fn(ran.model, ran.hooks_state) if ran.summary_fn else None
    results.write_jsonl(out / "predictions.jsonl", rows)
    if test:
        bits = kbit.bits(cfg.get("quantization"))
        if cfg.method.mergeable and bits:   # no merging into k-bit weights
            scores["merge_skipped"] = (f"{bits}-bit base: merge_and_unload would round the adapter into quantized "
                                       "weights, so merged latency is not measured")
        with timed("inference latency", f"eval.latency.records={cfg.eval.latency.records} and "
                   f"eval.latency.repeats={cfg.eval.latency.repeats} set its cost"):
            scores.update(evaluate.inference_latency(ran.model, ran.tokenizer, records, cfg.task, cfg.eval.latency,
                                                     merge=bool(cfg.method.mergeable) and bits is None,
                                                     generate_fn=ran.generate_fn))
    task_info = {**taskcfg.task_info(cfg.task), "splits": {"train": ran.train_records, split: len(records)}}
    train_info = {"eval_loss": loss, "eval_answers_cut": cut, "adapter_bytes": sizes.pop("adapter"),
                  "adapter_bytes_variants": sizes, "method_summary": summary}
    return {"train_info": train_info, "eval_info": scores, "task_info": task_info}
