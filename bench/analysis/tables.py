"""The paper's method-comparison table from a sweep's result JSONs (never re-running anything).

``python -m bench.report SWEEP_DIR`` writes, under ``SWEEP_DIR/report/``: ``table.md`` (one table per
model × task, then the runs that did not succeed), ``table.tex`` (booktabs), ``table.csv`` (the same
summary as numbers: ``<metric>_mean``/``_std`` in stored units), ``runs.csv`` (one row per run), the
figures (see bench.analysis.plots) and ``report.html``, all of it on one offline page (bench.analysis.html_report).
Each table shows the task's declared metrics (its primary metric first) between the harness's cost columns. With
several seeds a cell is "mean ± std" over the successful seeds; the best value of each column is bold, "best" read
from the declared directions (bench.core.metrics).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from bench.analysis import evidence, html_report, plots, tuning_plots
from bench.core import metrics
from bench.core.labels import MEM_KINDS
from bench.core.metrics import (
    Catalog,
    load_runs,  # noqa: F401  (report.load_runs: the frame every table is built from)
)
from bench.core.results import write_atomic

log = logging.getLogger(__name__)

COST = ("mem_measured_bytes", "mem_estimate_bytes", "trainable_pct", "train_time_s")   # before the task's metrics
AFTER = ("forgetting", "eval_time_s", "latency_ms_p50", "adapter_bytes")                # after them
KEYS = ["model", "task", "method"]
INFERENCE = ("infer_ms_adapter", "infer_ms_merged", "infer_ms_base", "merged_agreement")


def status_text(statuses: pd.Series) -> str:
    """"success" when every seed succeeded, else what went wrong, e.g. "2/3 success, failed"."""
    ok = int((statuses == "success").sum())
    if ok == len(statuses):
        return "success"
    bad = statuses[statuses != "success"].value_counts()
    parts = ", ".join(s if n == 1 else f"{s} ×{n}" for s, n in bad.items())
    return f"{ok}/{len(statuses)} success, {parts}" if ok else parts


def columns(runs: pd.DataFrame) -> list[str]:
    """The table's metric columns for ``runs``: cost, then the tasks' declared metrics, then the rest."""
    return [*COST, *metrics.task_keys(runs), *AFTER]


def summarize(runs: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (model, task, method): status, seed counts and mean/std of each of ``keys`` (the table's
    columns and the inference figures by default)."""
    keys = [*columns(runs), *INFERENCE] if keys is None else keys
    rows = []
    for (model, task, method), group in runs.groupby(KEYS, sort=False):
        ok = group[group["status"] == "success"]
        row: dict[str, Any] = {"model": model, "task": task, "method": method,
                               "status": status_text(group["status"]), "seeds": len(ok), "runs": len(group),
                               "mem_kind": " / ".join(sorted(ok["mem_kind"].dropna().unique())),
                               "primary": metrics.primary(ok)}
        for key in keys:
            row[f"{key}_mean"], row[f"{key}_std"] = ok[key].mean(), ok[key].std()
        rows.append(row)
    return pd.DataFrame(rows)


def _tex(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    for char in "&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text.replace("×", r"$\times$")


def cell(mean: float, std: float, key: str, *, best: bool, tex: bool, cat: Catalog | None = None) -> str:
    """"mean ± std" in display units (std only with several seeds), bold where best."""
    if math.isnan(mean):
        return "--" if tex else "—"
    digits = metrics.metric(key, cat).digits
    text = f"{metrics.shown(key, mean, cat):,.{digits}f}"
    if not math.isnan(std):
        text += (r" $\pm$ " if tex else " ± ") + f"{metrics.shown(key, std, cat):,.{digits}f}"
    if best:
        text = rf"\textbf{{{text}}}" if tex else f"**{text}**"
    return text


def _best(means: pd.Series, key: str, cat: Catalog) -> pd.Series:
    """True where the mean is the column's best (ties included; nothing bold when all are equal)."""
    signed = means * metrics.metric(key, cat).sign
    return (signed == signed.max()) & (signed < signed.max()).any()


def table(summary: pd.DataFrame, keys: Sequence[str], cat: Catalog, *, tex: bool = False) -> pd.DataFrame:
    """The display table of one (model, task): text cells under headings with units and direction arrows."""
    esc = _tex if tex else str
    kinds = " / ".join(MEM_KINDS.get(k, k) for k in sorted(set(summary["mem_kind"]) - {""}))
    out = pd.DataFrame({"Method": summary["method"].map(esc), "Status": summary["status"].map(esc),
                        "Seeds": summary["seeds"].astype(str)})
    for key in keys:
        m = metrics.metric(key, cat)
        heading = m.heading
        if key == "mem_measured_bytes" and kinds:
            heading = f"{heading[:-1]}, {kinds})"
        heading += (r" $\uparrow$" if tex else " ↑") if m.higher_is_better else (r" $\downarrow$" if tex else " ↓")
        best = _best(summary[f"{key}_mean"], key, cat)
        out[esc(heading) if not tex else _tex_heading(heading)] = [
            cell(mn, sd, key, best=b, tex=tex, cat=cat)
            for mn, sd, b in zip(summary[f"{key}_mean"], summary[f"{key}_std"], best)]
        if key in set(summary["primary"].dropna()):   # the evidence for the headline, beside it
            shown = [evidence.cells(row, tex=tex) for _, row in summary.iterrows()]
            for name in dict.fromkeys(k for s in shown for k in s):
                out[esc(name)] = [s.get(name, "--" if tex else "—") for s in shown]
    return out


def _tex_heading(heading: str) -> str:
    """A heading for LaTeX: the text escaped, the arrow left as math."""
    text, _, arrow = heading.rpartition(" $")
    return f"{_tex(text)} ${arrow}"


def inference(summary: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Fixed-length generation latency of one (model, task): each method unmerged and merged, then the
    base model's own row (adapter disabled; the mean over the runs that could disable theirs)."""
    rows = []
    for _, r in summary.iterrows():
        ratio = r["infer_ms_merged_mean"] / r["infer_ms_adapter_mean"]
        rows.append({"Method": r["method"],
                     **{metrics.metric(k).heading: cell(r[f"{k}_mean"], r[f"{k}_std"], k, best=False, tex=False)
                        for k in INFERENCE if k != "infer_ms_base"},
                     "Merged / unmerged": "—" if math.isnan(ratio) else f"{ratio:.2f}×"})
    base = runs.loc[runs["status"] == "success", "infer_ms_base"].dropna()
    if not base.empty:
        rows.append({"Method": f"base model ({len(base)} runs)",
                     metrics.metric("infer_ms_adapter").heading: cell(base.mean(), base.std(), "infer_ms_base",
                                                                      best=False, tex=False)})
    frame = pd.DataFrame(rows).fillna("—")
    return frame.to_markdown(index=False, disable_numparse=True)


REPLICA_NOTE = ("(replica) The model is its published shape with random weights (`model.source=replica`, "
                "bench/models/replica.py): memory, time and throughput are the real model's; every quality column "
                "(loss, the task's metrics, forgetting) is meaningless.")
FORGETTING = {"source_task": "the primary metric of the source task the tiny base was trained on",
              "general_text": "mean log-likelihood per token of general English text (nats; bench/assets)"}


def forgetting_note(runs: pd.DataFrame) -> str | None:
    """What the Forgetting column of one (model, task) measured, and the base's score, read from the runs."""
    ok = runs[(runs["status"] == "success") & runs["forgetting"].notna()]
    if ok.empty:
        return None
    kinds = sorted(ok["forgetting_measure"].dropna().unique())
    what = "; ".join(FORGETTING.get(k, k) for k in kinds)
    return (f"Forgetting: the base's ability before tuning minus after ({what}; the base scored "
            f"{ok['forgetting_before'].mean():.3f}); positive where ability was lost, negative where tuning "
            "improved it (`bench/pipeline/forgetting.py`).")


def groups(runs: pd.DataFrame, summary: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame, pd.DataFrame]]:
    """Each (model, task) of the summary with its summary rows and its runs."""
    for (model, task), group in summary.groupby(["model", "task"], sort=False):
        yield model, task, group, runs[(runs["model"] == model) & (runs["task"] == task)]


def notes(group: pd.DataFrame, mine: pd.DataFrame, cat: Catalog) -> list[str]:
    """What follows one (model, task)'s table, as Markdown: the replica warning, its primary metric and evidence,
    what forgetting measured, the inference latency table (table.md and report.html both show them)."""
    parts, primary = [], metrics.primary(mine)
    if mine.get("replica", pd.Series(dtype=bool)).any():
        parts.append(REPLICA_NOTE + "\n")
    if primary:
        parts.append(f"Primary metric: {metrics.metric(primary, cat).label} (`{primary}`), as the task declares. "
                     + evidence.note(group) + "\n")
    note = forgetting_note(mine)
    if note:
        parts.append(note + "\n")
    if group["infer_ms_adapter_mean"].notna().any():
        setting = mine[["latency_new_tokens", "latency_batch_size"]].dropna().head(1)
        how = (f"exactly {int(setting.iloc[0, 0])} new tokens per record, batch {int(setting.iloc[0, 1])}"
               if not setting.empty else "fixed-length generation")
        parts += [f"### Inference latency ({how}; ms per record)\n", inference(group, mine) + "\n"]
    return parts


def markdown(runs: pd.DataFrame, summary: pd.DataFrame, title: str, cat: Catalog) -> str:
    """The whole Markdown report: one table per (model, task), then the runs that did not succeed."""
    counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
    parts = [f"# {title}\n", f"{len(runs)} runs: {counts}. Mean ± std over successful seeds where there are "
             "several; bold marks the best value of a column, ↑/↓ which way is better (declared by the task for "
             "its metrics, by `bench/core/metrics.py` for the rest).\n"]
    for model, task, group, mine in groups(runs, summary):
        keys = columns(mine)
        shown = table(group, keys, cat)
        align = ["left", "left", "right"] + ["right"] * (len(shown.columns) - 3)
        text = shown.to_markdown(index=False, colalign=align, disable_numparse=True)   # keep "0.980", not 0.98
        replica = bool(mine.get("replica", pd.Series(dtype=bool)).any())
        parts += [f"## {model}{' (replica)' if replica else ''} · {task}\n", text + "\n", *notes(group, mine, cat)]
    failed = runs[runs["status"] != "success"]
    if not failed.empty:
        rows = failed[["model", "task", "method", "seed", "status", "error", "log_path"]].copy()
        rows["error"] = rows["error"].fillna("").map(lambda e: str(e).replace("|", "\\|").replace("\n", " ")[:200])
        parts += ["## Runs that did not succeed\n", rows.to_markdown(index=False, disable_numparse=True) + "\n"]
    return "\n".join(parts)


def latex(runs: pd.DataFrame, summary: pd.DataFrame, cat: Catalog) -> str:
    """One booktabs ``table`` per (model, task)."""
    blocks = ["% generated by bench.analysis.tables; needs \\usepackage{booktabs}\n"]
    for model, task, group, mine in groups(runs, summary):
        shown = table(group, columns(mine), cat, tex=True)
        caption = _tex(f"{model} on {task}: mean ± std over seeds; best of each column in bold.").replace(
            "±", r"$\pm$")
        blocks.append(shown.to_latex(index=False, escape=False, column_format="ll" + "r" * (len(shown.columns) - 2),
                                     caption=caption, label=f"tab:{model}-{task}", position="t"))
    return "\n".join(blocks)


def prepare(sweep_dir: Path) -> tuple[pd.DataFrame, Catalog, pd.DataFrame]:
    """A sweep's runs, their metric catalog and the summary with its evidence columns: what every output reads."""
    runs = load_runs(sweep_dir)
    summary = evidence.columns(runs, summarize(runs), root=sweep_dir, verdicts=evidence.read(sweep_dir, runs))
    return runs, metrics.catalog_of(runs), summary


def write_html(sweep_dir: Path, *, verdict: str | None = None,
               prepared: tuple[pd.DataFrame, Catalog, pd.DataFrame] | None = None) -> Path:
    """``sweep_dir/report/report.html`` (bench.analysis.html_report): the tables and notes of table.md, interactive
    figures, and ``verdict`` (bench.compare's Markdown) first where given; returns its path."""
    runs, cat, summary = prepared or prepare(sweep_dir)
    sections = [html_report.Section(model, task, table(group, columns(mine), cat), notes(group, mine, cat), mine)
                for model, task, group, mine in groups(runs, summary)]
    return html_report.write(Path(sweep_dir) / "report" / "report.html", runs=runs, sections=sections, cat=cat,
                             title=f"Sweep report: {Path(sweep_dir).resolve().name}", verdict=verdict,
                             choices=evidence.choices(sweep_dir))


def write_report(sweep_dir: Path, *, figures: bool = True) -> dict[str, Any]:
    """Tables (and figures) of ``sweep_dir`` under ``sweep_dir/report``; returns what was written where."""
    sweep_dir = Path(sweep_dir)
    runs, cat, summary = prepared = prepare(sweep_dir)
    out = sweep_dir / "report"
    written: dict[str, Any] = {name: out / name for name in ("table.md", "table.csv", "table.tex", "runs.csv")}
    write_atomic(written["table.md"], markdown(runs, summary, f"Sweep report: {sweep_dir.resolve().name}", cat))
    write_atomic(written["table.csv"], summary.to_csv(index=False))
    write_atomic(written["table.tex"], latex(runs, summary, cat))
    write_atomic(written["runs.csv"], runs.drop(columns=["loss_curve", "curve"]).to_csv(index=False))
    written["report.html"] = write_html(sweep_dir, prepared=prepared)
    written["figures"] = (plots.write_figures(runs, out / "figures")
                          + tuning_plots.write(runs, evidence.choices(sweep_dir), out / "figures", cat)
                          ) if figures else []
    written["runs"], written["failed"] = len(runs), int((runs["status"] != "success").sum())
    return written
