"""Start-up of the processes that launch a run: the ``deepspeed`` runner and its ``launch.py`` import all of
DeepSpeed to spawn one process each, and ``import deepspeed`` tries ``import mlflow`` for DeepSpeed's autotuner,
which no run uses: 1.4 s of each such process where mlflow is installed (``logger=mlflow``; measured:
``import deepspeed.launcher.runner`` 3.1–3.2 s, 1.7–1.8 s without it), 2.8 s of every launched cell.

Python imports the first ``sitecustomize`` on ``sys.path`` when it starts. ``bench.sweeping.launching.env`` puts
this folder first on ``PYTHONPATH`` for the commands a sweep and ``make run`` start, so this module refuses only the
autotuner's import (``NoMlflowForTheAutotuner``, which ``bench`` also installs in its own processes) and then runs
the ``sitecustomize`` it shadows, where there is one. Any other ``import mlflow``, the logger's included, finds the
package as usual.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys


class NoMlflowForTheAutotuner(importlib.abc.MetaPathFinder):
    """Refuses ``import mlflow`` while ``deepspeed.autotuning.autotuner`` is being imported (the autotuner then
    records ``has_mlflow = False``); every other import is left to the other finders."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        autotuner = sys.modules.get("deepspeed.autotuning.autotuner")
        if name == "mlflow" and autotuner is not None and not hasattr(autotuner, "has_mlflow"):
            raise ModuleNotFoundError("mlflow is not imported for DeepSpeed's autotuner", name=name)
        return None


def install() -> None:
    """Put the finder first in ``sys.meta_path``, once a process."""
    if not any(type(f).__name__ == NoMlflowForTheAutotuner.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, NoMlflowForTheAutotuner())


def _run_shadowed() -> None:
    """The ``sitecustomize`` later on ``sys.path`` that this one hides, run as Python would have run it."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


if __name__ == "sitecustomize":
    install()
    _run_shadowed()
