"""Every metric a run records: where it lives in the result JSON, which way is better, how to show it.

This table is the one place directions are declared; the report's bold "best" cells, the Pareto
fronts and regression verdicts all read them from here. ``noisy`` marks what a fixed seed does not pin
(times, memory, speed): bench.compare leaves those out of its verdicts unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

MiB, KiB = 2.0**20, 2.0**10
UNIT = (0.0, 1.0)


@dataclass(frozen=True)
class Metric:
    """One recorded number: its JSON section, direction and display form."""

    key: str
    section: str
    higher_is_better: bool
    label: str
    unit: str = ""
    scale: float = 1.0          # shown value = stored value / scale (e.g. bytes → MiB)
    digits: int = 3
    bounds: tuple[float, float] | None = None   # the range a value can take, where it has one
    noisy: bool = False         # varies run to run at a fixed seed (times, memory, speed); quality does not

    @property
    def sign(self) -> int:
        """+1 where higher is better, -1 where lower is better: multiply to make "more is better"."""
        return 1 if self.higher_is_better else -1

    @property
    def heading(self) -> str:
        """Column heading / axis label with the unit."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


_ALL = (
    Metric("f1_micro", "eval_info", True, "F1 micro", bounds=UNIT),
    Metric("f1_macro", "eval_info", True, "F1 macro", bounds=UNIT),
    Metric("precision", "eval_info", True, "Precision", bounds=UNIT),
    Metric("recall", "eval_info", True, "Recall", bounds=UNIT),
    Metric("exact_match", "eval_info", True, "Exact match", bounds=UNIT),
    Metric("parse_fail_rate", "eval_info", False, "Parse failures", bounds=UNIT),
    Metric("eval_time_s", "eval_info", False, "Eval time", "s", digits=1, noisy=True),
    Metric("latency_ms_mean", "eval_info", False, "Latency mean", "ms", digits=1, noisy=True),
    Metric("latency_ms_p50", "eval_info", False, "Latency p50", "ms", digits=1, noisy=True),
    Metric("latency_ms_p95", "eval_info", False, "Latency p95", "ms", digits=1, noisy=True),
    Metric("gen_tokens_per_s", "eval_info", True, "Generation speed", "tokens/s", digits=0, noisy=True),
    # Fixed-length generation (eval.latency): as trained, merged into the weights, and the base alone.
    Metric("infer_ms_adapter", "eval_info", False, "Unmerged", "ms/record", digits=2, noisy=True),
    Metric("infer_ms_merged", "eval_info", False, "Merged", "ms/record", digits=2, noisy=True),
    Metric("infer_ms_base", "eval_info", False, "Base model", "ms/record", digits=2, noisy=True),
    Metric("merged_agreement", "eval_info", True, "Merged = unmerged", bounds=UNIT),
    # The base's own ability before and after tuning (bench/forgetting.py): the source task's F1 for a tiny base,
    # else the mean log-likelihood per token of general text (minus its cross-entropy, so that a model that
    # forgot more scores lower there too). Either way higher is better, and forgetting = before - after: the
    # ability lost, lower is better (negative: tuning improved it). The unit is the measure's
    # (eval_info.forgetting_measure): compare runs of one measure only, as runs of one model and task are.
    Metric("forgetting", "eval_info", False, "Forgetting"),
    Metric("forgetting_before", "eval_info", True, "Base ability before"),
    Metric("forgetting_after", "eval_info", True, "Base ability after"),
    Metric("eval_loss", "train_info", False, "Eval loss"),
    Metric("final_loss", "train_info", False, "Final train loss"),
    Metric("train_time_s", "train_info", False, "Train time", "s", digits=1, noisy=True),
    Metric("tokens_per_s", "train_info", True, "Train speed", "tokens/s", digits=0, noisy=True),
    Metric("peak_mem_bytes", "train_info", False, "Peak memory", "MiB", scale=MiB, digits=0, noisy=True),
    Metric("mem_estimate_bytes", "train_info", False, "Estimated memory", "MiB", scale=MiB, digits=0),
    Metric("mem_measured_bytes", "train_info", False, "Peak memory used", "MiB", scale=MiB, digits=0, noisy=True),
    Metric("trainable_params", "train_info", False, "Trainable parameters", digits=0),
    Metric("trainable_pct", "train_info", False, "Trainable", "%", digits=3),
    Metric("adapter_bytes", "train_info", False, "Adapter size", "KiB", scale=KiB, digits=1),
    Metric("wall_time_s", "run_info", False, "Wall time", "s", digits=1, noisy=True),
)
METRICS: dict[str, Metric] = {m.key: m for m in _ALL}

# Columns that name a run rather than measure it.
IDENTITY = ("model", "task", "method", "seed", "status", "error", "log_path", "mem_kind", "run_id",
            "config_hash", "git_sha", "git_dirty", "result_path")


def metric(key: str) -> Metric:
    """The declared metric ``key``; a KeyError names the known ones."""
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"unknown metric {key!r}; known: {', '.join(METRICS)}") from None


def _name(config: dict[str, Any], group: str, fallback: str | None) -> str | None:
    """``config[group]["name"]`` when the run recorded it, else the name its folder gives."""
    node = config.get(group)
    return node.get("name", fallback) if isinstance(node, dict) else fallback


def flatten(record: dict[str, Any], path: str | Path | None = None) -> dict[str, Any]:
    """One result JSON as one flat row: identity columns, every declared metric, and the loss curve.

    ``path`` (the result.json) fills in names a record lacks, from ``<model>/<task>/<method>/seed<k>/``.
    """
    run, train = record.get("run_info", {}), record.get("train_info") or {}
    config = run.get("config") or {}
    parts = Path(path).parent.parts[-4:] if path is not None else ()
    model, task, method = (parts[:3] if len(parts) == 4 else (None, None, None))
    row: dict[str, Any] = {
        "model": _name(config, "model", model), "task": _name(config, "task", task),
        "method": _name(config, "method", method), "seed": run.get("seed", config.get("seed")),
        "status": run.get("status", "unknown"), "error": run.get("error"), "log_path": run.get("log_path"),
        "mem_kind": train.get("mem_kind"), "run_id": run.get("run_id"), "config_hash": run.get("config_hash"),
        "git_sha": run.get("git_sha"), "git_dirty": run.get("git_dirty"),
        "result_path": str(path) if path is not None else None,
    }
    for m in _ALL:
        value = (record.get(m.section) or {}).get(m.key)
        row[m.key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan
    evaluation = record.get("eval_info") or {}
    for key in ("latency_new_tokens", "latency_batch_size", "forgetting_measure"):
        row[key] = evaluation.get(key, np.nan)
    row["loss_curve"] = list(train.get("loss_curve") or [])
    return row


def shown(key: str, values: Any) -> Any:
    """Stored values in display units (bytes → MiB, …)."""
    return values / metric(key).scale


def pareto_front(frame: pd.DataFrame, objectives: Sequence[str]) -> pd.Series:
    """True for the rows that no other row dominates on ``objectives`` (directions from this table).

    A row dominates another when it is at least as good on every objective and better on one.
    Rows with a missing objective are never on the front and never dominate.
    """
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=bool)
    signs = np.array([metric(k).sign for k in objectives], dtype=float)
    values = frame[list(objectives)].to_numpy(dtype=float) * signs     # now higher is better everywhere
    valid = ~np.isnan(values).any(axis=1)
    at_least = (values[None, :, :] >= values[:, None, :]).all(axis=2)  # [i, j]: j is at least as good as i
    better = (values[None, :, :] > values[:, None, :]).any(axis=2)     # [i, j]: j beats i somewhere
    dominated = (at_least & better & valid[None, :]).any(axis=1)
    return pd.Series(valid & ~dominated, index=frame.index)
