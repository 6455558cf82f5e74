"""Every metric a run records: where it lives in the result JSON, which way is better, how to show it.

Two sources, one ``Metric`` each: the harness's own (cost, losses, speed, forgetting: ``BENCH`` below) and a
task's, which its YAML declares in ``metric_list`` and every result JSON carries in ``task_info``, so reports,
figures and compare read directions, labels and noise floors from the results, never from task code.
``catalog`` joins both; the report's bold "best" cells, the Pareto fronts and regression verdicts all read it.
``noisy`` marks what a fixed seed does not pin (times, memory, speed): bench.compare leaves those out of its
verdicts unless asked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:   # pandas loads in reports only: a run's process never needs it (0.4 s of its start)
    import pandas as pd

from bench.core.labels import method_label, method_order

log = logging.getLogger(__name__)

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
    floor: tuple[float, float] | None = None   # a task's declared noise floor (abs, rel) for compare

    @property
    def sign(self) -> int:
        """+1 where higher is better, -1 where lower is better: multiply to make "more is better"."""
        return 1 if self.higher_is_better else -1

    @property
    def heading(self) -> str:
        """Column heading / axis label with the unit."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


_ALL = (
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
    # The base's own ability before and after tuning (bench/pipeline/forgetting.py): the source task's primary metric
    # (signed so that higher is better) for a tiny base,
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
BENCH: dict[str, Metric] = {m.key: m for m in _ALL}
Catalog = Mapping[str, Metric]
TASK_FIELDS = ("metric", "higher_is_better", "label", "unit", "digits", "bounds", "tolerance")

# Columns that name a run rather than measure it.
IDENTITY = ("model", "task", "method", "seed", "status", "error", "log_path", "mem_kind", "run_id",
            "config_hash", "git_sha", "git_dirty", "result_path", "primary_metric", "task_metrics", "eval_split", "lr")


def metric(key: str, cat: Catalog | None = None) -> Metric:
    """The declared metric ``key`` (the harness's, or a task's in ``cat``); a KeyError names the known ones."""
    cat = BENCH if cat is None else cat
    try:
        return cat[key]
    except KeyError:
        raise KeyError(f"unknown metric {key!r}; known: {', '.join(cat)}") from None


def declared(metric_list: Iterable[Mapping[str, Any]]) -> list[Metric]:
    """A task's ``metric_list`` (its YAML's, or as a result JSON carries it) as metrics; a bad entry is a ValueError."""
    out = []
    for entry in metric_list:
        entry = dict(entry)
        unknown = sorted(set(entry) - set(TASK_FIELDS))
        if "metric" not in entry or not isinstance(entry.get("higher_is_better"), bool) or unknown:
            raise ValueError(f"metric_list entry {entry}: needs `metric` (a name) and `higher_is_better` (true or "
                             f"false){f'; unknown keys {unknown}' if unknown else ''}; allowed: {list(TASK_FIELDS)}")
        if entry["metric"] in BENCH:
            raise ValueError(f"metric_list: {entry['metric']!r} is one of the harness's own metrics; name it otherwise")
        bounds, tol = entry.get("bounds"), entry.get("tolerance") or {}
        out.append(Metric(str(entry["metric"]), "eval_info", entry["higher_is_better"],
                          str(entry.get("label") or entry["metric"]), unit=str(entry.get("unit") or ""),
                          digits=int(entry.get("digits", 3)), bounds=tuple(map(float, bounds)) if bounds else None,
                          floor=(float(tol.get("abs", 0.0)), float(tol.get("rel", 0.0))) if tol else None))
    return out


def catalog(metric_lists: Iterable[Iterable[Mapping[str, Any]]]) -> dict[str, Metric]:
    """The harness's metrics and every task's declared ones; one name declared two ways is a ValueError."""
    cat = dict(BENCH)
    for metric_list in metric_lists:
        for m in declared(metric_list):
            if m.key in cat and cat[m.key].higher_is_better != m.higher_is_better:
                raise ValueError(f"metric {m.key!r} is declared higher-is-better by one task and lower-is-better "
                                 "by another; rename one of them")
            cat.setdefault(m.key, m)
    return cat


def catalog_of(runs: pd.DataFrame) -> dict[str, Metric]:
    """The catalog of a frame of flattened runs (their ``task_metrics`` declarations)."""
    lists = runs["task_metrics"].dropna().unique() if "task_metrics" in runs else []
    return catalog(json.loads(text) for text in lists)


def task_keys(runs: pd.DataFrame) -> list[str]:
    """The task metrics of ``runs`` in declaration order, each task's primary metric first."""
    keys: list[str] = []
    for primary, text in runs[["primary_metric", "task_metrics"]].dropna().drop_duplicates().itertuples(index=False):
        names = [m["metric"] for m in json.loads(text)]
        keys += [k for k in [primary, *names] if k not in keys]
    return keys


def primary(runs: pd.DataFrame) -> str | None:
    """The primary metric the runs declare (the first, where tasks differ); None where none does."""
    found = runs["primary_metric"].dropna().unique() if "primary_metric" in runs else []
    return str(found[0]) if len(found) else None


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
        "method": method_label(_name(config, "method", method) or "",
                               (config.get("quantization") or {}).get("bits")) or None,
        "seed": run.get("seed", config.get("seed")),
        "status": run.get("status", "unknown"), "error": run.get("error"), "log_path": run.get("log_path"),
        "mem_kind": train.get("mem_kind"), "run_id": run.get("run_id"), "config_hash": run.get("config_hash"),
        "git_sha": run.get("git_sha"), "git_dirty": run.get("git_dirty"),
        "result_path": str(path) if path is not None else None,
        "replica": bool((record.get("base_info") or {}).get("replica")),   # random weights: cost only, no quality
    }
    task = record.get("task_info") or {}
    row["eval_split"] = (record.get("eval_info") or {}).get("split") or (config.get("eval") or {}).get("split", "test")
    row["lr"] = (config.get("method") or {}).get("lr")
    row["primary_metric"] = task.get("primary_metric")
    row["task_metrics"] = json.dumps(task["metric_list"], sort_keys=True) if task.get("metric_list") else None
    for m in [*_ALL, *declared(task.get("metric_list") or [])]:
        value = (record.get(m.section) or {}).get(m.key)
        row[m.key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan
    evaluation = record.get("eval_info") or {}
    for key in ("latency_new_tokens", "latency_batch_size", "forgetting_measure"):
        row[key] = evaluation.get(key, np.nan)
    boot = evaluation.get("bootstrap") or {}
    row["boot_low"], row["boot_high"] = boot.get("low", np.nan), boot.get("high", np.nan)
    row["loss_curve"] = list(train.get("loss_curve") or [])
    row["curve"] = list((train.get("curve") or {}).get("points") or [])
    return row


def shown(key: str, values: Any, cat: Catalog | None = None) -> Any:
    """Stored values in display units (bytes → MiB, …)."""
    return values / metric(key, cat).scale


def pareto_front(frame: pd.DataFrame, objectives: Sequence[str], cat: Catalog | None = None) -> pd.Series:
    """True for the rows that no other row dominates on ``objectives`` (directions from ``cat``).

    A row dominates another when it is at least as good on every objective and better on one.
    Rows with a missing objective are never on the front and never dominate.
    """
    import pandas as pd

    if frame.empty:
        return pd.Series([], index=frame.index, dtype=bool)
    signs = np.array([metric(k, cat).sign for k in objectives], dtype=float)
    values = frame[list(objectives)].to_numpy(dtype=float) * signs     # now higher is better everywhere
    valid = ~np.isnan(values).any(axis=1)
    at_least = (values[None, :, :] >= values[:, None, :]).all(axis=2)  # [i, j]: j is at least as good as i
    better = (values[None, :, :] > values[:, None, :]).any(axis=2)     # [i, j]: j beats i somewhere
    dominated = (at_least & better & valid[None, :]).any(axis=1)
    return pd.Series(valid & ~dominated, index=frame.index)


def load_runs(sweep_dir: Path, extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None, *,
              split: str | None = "test") -> pd.DataFrame:
    """Every ``result.json`` under ``sweep_dir`` evaluated on ``split`` (test: the table's runs, not a search's
    candidates; None: all) as one flat row, methods in the figures' order.

    ``extra(record)`` adds columns of its own to each row (bench.compare: config and fingerprint).
    """
    import pandas as pd

    rows = []
    for path in sorted(Path(sweep_dir).rglob("result.json")):
        try:
            record = json.loads(path.read_text())
            rows.append({**flatten(record, path), **(extra(record) if extra else {})})
        except (json.JSONDecodeError, OSError) as err:
            log.warning("skipping unreadable %s: %s", path, err)
    rows = [r for r in rows if split is None or r["eval_split"] == split]
    if not rows:
        raise FileNotFoundError(f"no result.json of the {split or 'any'} split under {sweep_dir}; run "
                                "`python -m bench.sweep` first")
    runs = pd.DataFrame(rows)
    rank = {m: i for i, m in enumerate(method_order(runs["method"].dropna()))}
    runs["_rank"] = runs["method"].map(rank)
    return runs.sort_values(["model", "task", "_rank", "seed"]).drop(columns="_rank").reset_index(drop=True)
