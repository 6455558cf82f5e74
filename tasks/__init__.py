"""Tasks: one module per task family plus a YAML under conf/task/ naming it (README "Adding a task").

The module is plain functions; bench/ calls only these and never names a task or its metrics:

- ``prompt(record, task_cfg) -> str``: the model's input text; the answer (``record["output"]``) follows it.
- ``score(predictions, references, task_cfg) -> dict``: every metric the YAML's ``metric_list`` declares
  (more keys are kept in the result JSON as notes).
- ``generate(task_cfg, *, n, seed) -> list[record]``: only for a YAML with a ``generator`` (synthetic data).
- ``check(task_cfg, splits) -> list[str]``: optional; warnings about the loaded splits (a dict split → records),
  or an ``InputError`` naming the file and fix.
- ``record_stats(prediction, reference, task_cfg) -> dict`` and ``from_stats(totals, task_cfg) -> dict``: optional,
  together; one record's additive counts, and ``score``'s metrics from their sums over records. Bootstrap intervals
  and the sweep's paired test then resample counts instead of re-scoring every resample (100× faster).

Records are dicts of strings with an ``output`` (the reference answer); bench/taskdata/splits.py reads them from files
(fields renamed by ``task.data.fields``) or the task's generator, and makes the train, validation and test splits.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

REQUIRED = ("prompt", "score")
STATS = ("record_stats", "from_stats")   # optional, together: metrics from summed per-record counts


def module(task_cfg: Any) -> ModuleType:
    """The module a task YAML names in ``module``."""
    return importlib.import_module(task_cfg.module)
