"""Tasks: one module per task family (load_split, prompt, parse, score) plus a YAML naming it."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def module(task_cfg: Any) -> ModuleType:
    """The module a task YAML names in ``module``."""
    return importlib.import_module(task_cfg.module)
