"""What the harness reads from a task's config: its source task, primary metric, declared metrics and scores.

Below base, forgetting, evaluate and validate, so each reaches these without an import circle.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

import tasks
from bench.core import metrics
from bench.core.errors import ConfigError

BUILD_KEYS = ("min_score", "pretrain")   # base_task keys that set how the base is built, not what it learns


def source_task(task_cfg: Any) -> DictConfig:
    """The task a tiny base learns: the task's own config with its ``base_task`` merged over it (any key).

    A task without ``base_task`` cannot run on a tiny model: a random model has no skill for a method to adapt.
    """
    spec = task_cfg.get("base_task")
    if not spec:
        raise ConfigError(
            f"task={task_cfg.name} has no base_task, and a tiny model needs one: it is pre-trained on that source "
            "task before any method runs. Add to the task YAML e.g. `base_task: {name: <task>_source, generator: "
            "{…}}` (a version of the task with other labels; README \"Adding a task\"), or run the task on a "
            "pretrained model (model=smollm2_135m)")
    overrides = {k: v for k, v in OmegaConf.to_container(spec).items() if k not in BUILD_KEYS}
    merged = OmegaConf.merge(task_cfg, overrides)
    merged.base_task = None
    return merged


def pretrain(cfg: Any) -> DictConfig:
    """The base's budget: the model YAML's ``pretrain`` with the task's ``base_task.pretrain`` over it."""
    return OmegaConf.merge(cfg.model.pretrain, cfg.task.base_task.get("pretrain") or {})


def primary(task_cfg: Any) -> tuple[str, bool]:
    """The task's primary metric and whether higher is better, from its ``metric_list``."""
    name = str(task_cfg.primary_metric)
    entry = next((m for m in task_cfg.metric_list if m.metric == name), None)
    if entry is None:
        raise ConfigError(f"task={task_cfg.name}: primary_metric={name} is not in its metric_list "
                          f"({[m.metric for m in task_cfg.metric_list]}); declare it there")
    return name, bool(entry.higher_is_better)


def scored(task_cfg: Any, predictions: list[str], references: list[str]) -> dict[str, Any]:
    """The task module's scores, which must hold every metric its YAML declares in ``metric_list``."""
    scores = dict(tasks.module(task_cfg).score(predictions, references, task_cfg))
    missing = [str(m.metric) for m in task_cfg.metric_list if m.metric not in scores]
    if missing:
        raise ValueError(f"{task_cfg.module}.score returned no {missing}, which task={task_cfg.name} declares in "
                         f"metric_list (it returned {sorted(scores)}); return them, or drop them from metric_list")
    return scores


def scorer(task_cfg: Any, metric: str, rows: list[dict[str, Any]]) -> Callable[[Any], float]:
    """``score(indices)``: ``metric`` recomputed on those of the prediction ``rows`` (a bootstrap's resample).

    A task whose module has ``record_stats`` and ``from_stats`` (additive per-record counts) is scored from the
    resampled counts: each answer is parsed once, not once per resample (1000 resamples: ~6 s → ~0.05 s).
    """
    preds, refs = [r["prediction"] for r in rows], [r["reference"] for r in rows]
    module = tasks.module(task_cfg)
    if not all(hasattr(module, fn) for fn in tasks.STATS):
        return lambda idx: float(scored(task_cfg, [preds[i] for i in idx], [refs[i] for i in idx])[metric])
    per_record = [module.record_stats(p, r, task_cfg) for p, r in zip(preds, refs, strict=True)]
    keys = list(dict.fromkeys(k for stats in per_record for k in stats))
    matrix = np.array([[stats.get(k, 0) for k in keys] for stats in per_record], dtype=np.float64)
    return lambda idx: float(module.from_stats(dict(zip(keys, matrix[idx].sum(axis=0).tolist())), task_cfg)[metric])


def task_info(task_cfg: Any) -> dict[str, Any]:
    """What a result JSON carries about its task's metrics, so reports and compare never import task code."""
    return {"name": str(task_cfg.name), "primary_metric": str(task_cfg.primary_metric),
            "metric_list": OmegaConf.to_container(task_cfg.metric_list, resolve=True)}


def declared(task_cfg: Any) -> list[metrics.Metric]:
    """The task's ``metric_list`` as metrics, with ``primary_metric`` among them; a bad declaration is a ConfigError."""
    try:
        found = metrics.declared(OmegaConf.to_container(task_cfg.metric_list, resolve=True) or [])
    except (ValueError, TypeError, AttributeError) as err:
        raise ConfigError(f"task={task_cfg.name}: task.metric_list: {err}") from err
    if not found:
        raise ConfigError(f"task={task_cfg.name} declares no metric: give its YAML a metric_list (README \"Adding a "
                          "task\")")
    primary(task_cfg)
    return found
