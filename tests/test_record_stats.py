"""Tasks that score from per-record counts: the bootstrap's fast path gives exactly the task's own ``score``.

``bench.taskdata.taskcfg.scorer`` resamples summed ``record_stats`` instead of re-scoring every resample; these tests
pin that it is the same number, on both shipped tasks, with duplicates in the resample and labels the references lack.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from omegaconf import OmegaConf

import tasks
from bench.core import stats
from bench.taskdata import taskcfg
from tests.conftest import compose_cfg

TRIPLE_REFS = ["a_r_b\nc_s_d", "e_r_f", "", "g_s_h", "x_r_y\nbroken line"]
TRIPLE_PREDS = ["a_r_b", "e_r_f\ne_s_f", "a_r_b", "", "x_r_y\nbroken line"]


def _rows(preds: list[str], refs: list[str]) -> list[dict[str, str]]:
    return [{"prediction": p, "reference": r} for p, r in zip(preds, refs)]


def _slow(task_cfg, metric: str, rows: list[dict[str, str]], idx) -> float:
    """The metric re-scored by the task's ``score`` on the resampled records."""
    return float(taskcfg.scored(task_cfg, [rows[i]["prediction"] for i in idx],
                                [rows[i]["reference"] for i in idx])[metric])


def _fault_rows(task_cfg, n: int = 60) -> list[dict[str, str]]:
    """References from the generator; predictions right, wrong, off-label and empty."""
    refs = [r["output"] for r in tasks.module(task_cfg).generate(task_cfg, n=n, seed=3)]
    wrong = {label: refs[(i + 7) % n] for i, label in enumerate(refs)}
    preds = [r if i % 3 == 0 else wrong[r] if i % 3 == 1 else ("no label" if i % 2 else "") for i, r in enumerate(refs)]
    return _rows(preds, refs)


@pytest.mark.parametrize("task, metrics", [("triples_synth", ["f1_micro", "f1_macro", "exact_match", "precision",
                                                              "parse_fail_rate"]),
                                            ("fault_class_en", ["accuracy", "macro_f1", "invalid_rate"])])
def test_resampled_counts_score_as_the_task_does(task, metrics):
    task_cfg = compose_cfg(f"task={task}").task
    rows = _rows(TRIPLE_PREDS, TRIPLE_REFS) if task == "triples_synth" else _fault_rows(task_cfg)
    rng = np.random.default_rng(0)
    for metric in metrics:
        fast = taskcfg.scorer(task_cfg, metric, rows)
        for _ in range(40):
            idx = rng.integers(0, len(rows), len(rows))
            assert fast(idx) == pytest.approx(_slow(task_cfg, metric, rows, idx), abs=1e-12)
        assert fast(np.arange(len(rows))) == pytest.approx(_slow(task_cfg, metric, rows, range(len(rows))), abs=1e-12)


def test_undeclared_labels_follow_the_resampled_references():
    """Without declared labels an answer is invalid when no reference in the resample holds it, as in ``score``."""
    task_cfg = compose_cfg("task=fault_class_en").task
    task_cfg = OmegaConf.merge(task_cfg, {"generator": None, "labels": None})
    rows = _rows(["x", "y", "y", "z"], ["x", "x", "y", "y"])
    fast = taskcfg.scorer(task_cfg, "invalid_rate", rows)
    for idx in ([0, 1, 2, 3], [0, 0, 1, 1], [2, 3, 3, 2], [3, 3, 3, 3]):
        assert fast(np.array(idx)) == _slow(task_cfg, "invalid_rate", rows, idx)
    assert fast(np.array([0, 0, 1, 1])) == 0.5          # "y" is no label where no reference is "y"


def test_a_thousand_resamples_take_well_under_a_second():
    task_cfg = compose_cfg("task=triples_synth").task
    refs = [r["output"] for r in tasks.module(task_cfg).generate(task_cfg, n=128, seed=0)]
    rows = _rows([r.split("\n")[0] for r in refs], refs)
    start = time.perf_counter()
    point, low, high = stats.bootstrap_interval(taskcfg.scorer(task_cfg, "f1_micro", rows), len(rows), resamples=1000)
    assert time.perf_counter() - start < 1.0
    assert low < point < high
