"""Which methods are significantly worse than the best, on the same test records: a sweep's last phase.

Per (model, task) of a sweep: the best method by mean primary metric over its seeds; every other method is
tested against it with a one-sided paired bootstrap (``bench.core.stats.paired_bootstrap``) over the test records of
the seeds both ran (pooled: seed s of A against seed s of B, record by record), and the p-values of a table are
Holm-corrected. The task's ``score`` recomputes the metric on each resample (F1 micro is no mean of records),
so this runs in the sweep, which may import task code; ``significance.json`` carries the verdicts and the run
ids they came from, and the report (which imports no task code) shows them only while those runs are current.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bench.analysis import evidence
from bench.core import metrics, results, stats
from bench.taskdata import taskcfg

log = logging.getLogger(__name__)
ALPHA, RESAMPLES = 0.05, 1000
FILE = evidence.SIGNIFICANCE


def _rows(result_path: str) -> list[dict[str, Any]]:
    """A run's prediction rows."""
    path = Path(result_path).parent / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def table(runs: Any) -> dict[str, Any] | None:
    """The verdicts of one (model, task): best method, each other method's p and Holm-adjusted p."""
    ok = runs[(runs["status"] == "success") & runs["primary_metric"].notna()]
    if ok.empty or ok["method"].nunique() < 2:
        return None
    metric = str(ok["primary_metric"].iloc[0])
    higher = metrics.catalog_of(ok)[metric].higher_is_better
    means = ok.groupby("method")[metric].mean()
    best = str(means.idxmax() if higher else means.idxmin())
    config = json.loads(Path(ok["result_path"].iloc[0]).read_text())["run_info"]["config"]
    task_cfg = OmegaConf.create(config["task"])
    mine = {m: {int(s): p for s, p in zip(g["seed"], g["result_path"])} for m, g in ok.groupby("method")}
    p_values = {}
    for method in mine:
        seeds = sorted(set(mine[method]) & set(mine[best]))
        if method == best or not seeds:
            continue
        a = [r for s in seeds for r in _rows(mine[method][s])]
        b = [r for s in seeds for r in _rows(mine[best][s])]
        p_values[method] = stats.paired_bootstrap(taskcfg.scorer(task_cfg, metric, a),
                                                  taskcfg.scorer(task_cfg, metric, b), len(a),
                                                  higher_is_better=higher, resamples=RESAMPLES)
    adjusted = stats.holm_adjusted(p_values)
    return {"metric": metric, "best": best, "alpha": ALPHA, "correction": "holm", "resamples": RESAMPLES,
            "methods": {m: {"p": p_values[m], "p_holm": adjusted[m], "worse": adjusted[m] <= ALPHA}
                        for m in p_values},
            "run_ids": sorted(str(r) for r in ok["run_id"].dropna())}


def write(root: Path) -> dict[str, Any]:
    """``significance.json`` of a sweep folder: one table per (model, task)."""
    runs = metrics.load_runs(root)
    out = {}
    for (model, task), group in runs.groupby(["model", "task"], sort=False):
        try:
            verdict = table(group)
        except (OSError, KeyError, ValueError) as err:   # e.g. a run without predictions.jsonl: no verdict, said
            log.warning("significance %s/%s not computed: %s", model, task, err)
            continue
        if verdict:
            out[f"{model}|{task}"] = verdict
            worse = [m for m, v in verdict["methods"].items() if v["worse"]]
            log.info("significance %s/%s: best %s; significantly worse (Holm, alpha %.2f): %s", model, task,
                     verdict["best"], ALPHA, ", ".join(worse) or "none")
    results.write_json(root / FILE, out)
    return out
