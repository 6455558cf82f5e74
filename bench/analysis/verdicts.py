"""The verdict table of bench.compare: one row per (model, task, method, metric), as Markdown for a CI log or a PR."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.core import metrics

FAILING = ("regressed", "missing")


@dataclass(frozen=True)
class Row:
    """One line of the verdict table (``metric`` None: the whole entry)."""

    entry: tuple[str, str, str]
    metric: str | None
    base: dict[str, Any] | None
    cur: dict[str, Any] | None
    allowed: float = math.nan             # the floor: no |delta| within it is a change
    rule: str = ""                        # "tol": the floor alone decides; "noise …": a test over seeds too
    verdict: str = "unchanged"
    spec: metrics.Metric | None = None    # the metric's declaration: direction, label, digits
    p: float = math.nan                   # two-sided p of the delta against the seeds' spread (NaN: none measured)
    p_adj: float = math.nan               # p corrected over every tested row of the table

    @property
    def delta(self) -> float:
        """Current mean minus baseline mean (NaN where one side is absent)."""
        return self.cur["mean"] - self.base["mean"] if self.base and self.cur else math.nan


def number(m: metrics.Metric, value: float, *, signed: bool = False) -> str:
    """A stored value in display units, one digit finer than the report's (counts stay whole)."""
    return f"{value / m.scale:{'+' if signed else ''},.{m.digits + 1 if m.digits else 0}f}"


def stat_text(m: metrics.Metric, stats: dict[str, Any] | None) -> str:
    """"mean" for one seed, "mean ± std (n=k)" for several; "—" when absent."""
    if not stats:
        return "—"
    text = number(m, stats["mean"])
    return text + (f" ± {number(m, stats['std'])} (n={stats['n']})" if stats["n"] >= 2 and stats["std"] is not None
                   else "")


def table_line(row: Row) -> str:
    """One Markdown table line."""
    model, task, method = row.entry
    if row.metric is None:
        text = "no successful run in this sweep" if row.verdict == "missing" else "not in the baseline"
        return f"| {model} | {task} | {method} | (all) | — | — | — | {text} | **{row.verdict}** |"
    m = row.spec or metrics.metric(row.metric)
    delta = number(m, row.delta, signed=True) if not math.isnan(row.delta) else "—"
    p = f" p={row.p_adj:.2g}" if not math.isnan(row.p_adj) else ""
    allowed = f"±{number(m, row.allowed)} ({row.rule}){p}" if row.rule else "—"
    verdict = f"**{row.verdict}**" if row.verdict in FAILING else row.verdict
    return (f"| {model} | {task} | {method} | {m.heading} {'↑' if m.higher_is_better else '↓'} | "
            f"{stat_text(m, row.base)} | {stat_text(m, row.cur)} | {delta} | {allowed} | {verdict} |")


def markdown(rows: list[Row], *, title: str, notes: list[str], changed_only: bool = False) -> str:
    """The verdict for a CI log or a PR: a count line, notes, and the table."""
    counts = {v: sum(r.verdict == v for r in rows) for v in ("regressed", "missing", "improved", "unchanged", "new")}
    head = ", ".join(f"{n} {v}" for v, n in counts.items() if n or v in ("regressed", "unchanged"))
    failed = counts["regressed"] + counts["missing"]
    parts = [f"## {title}\n", f"**{'FAIL' if failed else 'PASS'}**: {head}.\n"]
    parts += [f"- {n}" for n in notes] + ([""] if notes else [])
    shown = [r for r in rows if r.verdict != "unchanged"] if changed_only else rows
    parts.append("| Model | Task | Method | Metric | Baseline | Current | Delta | Allowed | Verdict |")
    parts.append("|:--|:--|:--|:--|--:|--:|--:|--:|:--|")
    parts += [table_line(r) for r in shown]
    return "\n".join(parts) + "\n"
