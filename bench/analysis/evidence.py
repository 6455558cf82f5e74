"""The table's evidence columns, read from what a sweep wrote: learning rate, the primary metric's 95 % interval,
significance against the best method, and what a learning-rate search cost.

Intervals: with two or more seeds for every method, Student's t over the seeds (``bench.core.stats.t_interval``);
otherwise the percentile bootstrap over test records each run recorded (``eval_info.bootstrap``). Significance
comes from the sweep's ``significance.json`` (a paired bootstrap against the best, Holm-corrected), search cost
from ``search/<model>/<task>/<method>/choice.json``; neither imports task code here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench.core import stats

SIGNIFICANCE = "significance.json"   # written by bench.analysis.significance at the end of a sweep


def choices(root: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every learning-rate search's choice in a sweep folder, by (model, task, method)."""
    found = {}
    for path in sorted(Path(root).glob("search/*/*/*/choice.json")):
        model, task, method = path.parts[-4:-1]
        found[(model, task, method)] = json.loads(path.read_text())
    return found


def interval(ok: pd.DataFrame, metric: str, *, by_seeds: bool) -> tuple[float, float]:
    """One method's 95 % interval of ``metric``: t over seeds, or the bootstrap over records of its run(s)."""
    if by_seeds:
        _, low, high = stats.t_interval(ok[metric].dropna().tolist())
        return low, high
    return float(ok["boot_low"].mean()), float(ok["boot_high"].mean())


def columns(runs: pd.DataFrame, summary: pd.DataFrame, *, root: Path | None,
            verdicts: dict[str, Any]) -> pd.DataFrame:
    """``summary`` with, per row: ``lr``, ``ci_low``/``ci_high``/``ci_kind``, ``vs_best``/``p_holm`` and
    ``search_runs``/``search_cost_s``/``search_lrs`` (NaN or empty where a sweep has none)."""
    found = choices(root) if root else {}
    out = summary.copy()
    for col in ("lr", "ci_low", "ci_high", "p_holm", "search_runs", "search_cost_s"):
        out[col] = math.nan
    for col in ("ci_kind", "vs_best", "search_lrs"):
        out[col] = ""
    for (model, task), group in summary.groupby(["model", "task"], sort=False):
        mine = runs[(runs["model"] == model) & (runs["task"] == task) & (runs["status"] == "success")]
        metric = mine["primary_metric"].dropna().iloc[0] if mine["primary_metric"].notna().any() else None
        by_seeds = bool(len(mine)) and bool((mine.groupby("method").size() >= 2).all())
        verdict = verdicts.get(f"{model}|{task}") or {}
        for i, row in group.iterrows():
            ok = mine[mine["method"] == row["method"]]
            lrs = sorted(set(ok["lr"].dropna()))
            out.at[i, "lr"] = lrs[0] if len(lrs) == 1 else math.nan
            if metric and not ok.empty:
                out.at[i, "ci_low"], out.at[i, "ci_high"] = interval(ok, metric, by_seeds=by_seeds)
                out.at[i, "ci_kind"] = f"t, {len(ok)} seeds" if by_seeds else "bootstrap over test records"
            if verdict:
                tested = verdict["methods"].get(row["method"])
                out.at[i, "vs_best"] = ("best" if row["method"] == verdict["best"] else
                                        "" if tested is None else "worse" if tested["worse"] else "≈ best")
                out.at[i, "p_holm"] = tested["p_holm"] if tested else math.nan
            choice = found.get((model, task, row["method"]))
            if choice:
                out.at[i, "search_runs"], out.at[i, "search_cost_s"] = choice["runs"], choice["cost_s"]
                out.at[i, "search_lrs"] = " ".join(f"{c['lr']:g}" for c in choice["candidates"])
    return out


def cells(row: pd.Series, *, tex: bool) -> dict[str, str]:
    """The evidence columns of one table row as text."""
    dash = "--" if tex else "—"
    ci = dash if math.isnan(row["ci_low"]) else f"{row['ci_low']:.3f}–{row['ci_high']:.3f}"
    shown = {"LR": dash if math.isnan(row["lr"]) else f"{row['lr']:g}", "95% CI": ci}
    if row["vs_best"]:
        p = "" if math.isnan(row["p_holm"]) else f" (p={row['p_holm']:.3f})"
        shown["vs best"] = row["vs_best"] + (p if row["vs_best"] != "best" else "")
    if not math.isnan(row["search_runs"]):
        shown["Search (runs, s)"] = f"{int(row['search_runs'])}, {row['search_cost_s']:.0f}"
    return shown


def read(root: Path, runs: Any) -> dict[str, Any]:
    """The verdicts whose runs are exactly the current ones (a rerun makes them stale: then none)."""
    try:
        found = json.loads((Path(root) / SIGNIFICANCE).read_text())
    except (OSError, ValueError):
        return {}
    current = {}
    for key, verdict in found.items():
        model, task = key.split("|", 1)
        ok = runs[(runs["model"] == model) & (runs["task"] == task) & (runs["status"] == "success")]
        if sorted(str(r) for r in ok["run_id"].dropna()) == verdict["run_ids"]:
            current[key] = verdict
    return current


def note(summary: pd.DataFrame) -> str:
    """What the evidence columns of one table mean, from what they hold."""
    kinds = sorted(set(summary["ci_kind"]) - {""})
    parts = [f"95% CI: {' / '.join(kinds)}." if kinds else ""]
    if (summary["vs_best"] != "").any():
        parts.append("vs best: one-sided paired bootstrap against the best method on the same test records, "
                     "Holm-corrected over the table (alpha 0.05); ≈ best: not significantly worse.")
    if summary["search_runs"].notna().any():
        parts.append("LR: chosen by the learning-rate search on the validation split (candidates × the method's own "
                     "rate; `search/`); Search: its candidate runs and their wall seconds.")
    return " ".join(p for p in parts if p)
