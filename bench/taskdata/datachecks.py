"""Checks of a task's data before any model loads: the task module has what the harness calls, its metrics are
declared, every split the run reads loads and makes prompts, then the task's own ``check``."""

from __future__ import annotations

from typing import Any

from bench.core.errors import ConfigError, DataError
from bench.taskdata import splits, taskcfg


def check(task_cfg: Any, *, tiny: bool, split: str) -> list[str]:
    """The task module has the functions the harness calls, the metrics are declared, every split loads and its
    records make prompts, a tiny model has a source task; then the task's own ``check`` (when it has one)."""
    import tasks

    try:
        task = tasks.module(task_cfg)
    except ImportError as err:
        raise ConfigError(f"task.module={task_cfg.module} cannot be imported ({err}); name an importable module "
                          "(tasks/<name>.py, or any module on PYTHONPATH)") from err
    needed = [*tasks.REQUIRED, *(["generate"] if task_cfg.get("generator") else [])]
    missing = [name for name in needed if not callable(getattr(task, name, None))]
    if missing:
        raise ConfigError(f"task.module={task_cfg.module} has no {missing}; a task module defines {needed} "
                          "(tasks/__init__.py, docs/tasks.md)")
    taskcfg.declared(task_cfg)
    if tiny:
        taskcfg.source_task(task_cfg)
    # train, validation and the split this run evaluates: a run on validation never reads the test split
    loaded = {split: splits.load(task_cfg, split) for split in dict.fromkeys(["train", "validation", split])}
    for split, records in loaded.items():
        prompts(task_cfg, task, split, records[:1])
    return list(task.check(task_cfg, loaded)) if hasattr(task, "check") else []


def prompts(task_cfg: Any, task: Any, split: str, records: list[dict[str, str]]) -> None:
    """The task's prompt builds from these records: a field it reads that the data lacks is named with the fix."""
    for record in records:
        try:
            task.prompt(record, task_cfg)
        except KeyError as err:
            raise DataError(f"task={task_cfg.name}, {split} split: the prompt reads field {err} that the records lack "
                            f"(they have {sorted(record)}); map a file's key to it with task.data.fields") from err
