"""Paper-column figures from the flattened runs: loss curves, the task's primary metric vs trainable parameters
and vs forgetting, memory, latency.

Each method keeps one colour in every figure (``METHOD_COLORS``). With several seeds, lines show the
mean with a ±1 std band and points/bars carry ±1 std error bars. ``python -m bench.plots SWEEP_DIR``
writes the PNG and PDF files under ``SWEEP_DIR/report/figures/``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from bench.core.labels import MEM_KINDS, METHOD_COLORS, color, method_order  # noqa: E402,F401  (plots.* kept)
from bench.core.metrics import Catalog, catalog_of, metric, pareto_front, primary, shown  # noqa: E402

log = logging.getLogger(__name__)
logging.getLogger("fontTools").setLevel(logging.WARNING)   # PDF font subsetting is chatty at INFO

MEMORY = ("peak_mem_bytes", "mem_measured_bytes")
WIDTH_IN = 3.4                                   # one paper column
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 6.5, "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 300,
         "pdf.fonttype": 42}


def per_method(runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """Mean, std (NaN for one seed) and count of ``key`` over each method's successful runs."""
    ok = runs[(runs["status"] == "success") & runs[key].notna()]
    stats = ok.groupby("method")[key].agg(["mean", "std", "count"])
    return stats.reindex(method_order(stats.index))


def _figure(height: float) -> tuple[Figure, plt.Axes]:
    """A one-column figure in the house style."""
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
        ax = fig.add_subplot()
    return fig, ax


def _legend(fig: Figure, ax: plt.Axes) -> None:
    """Methods legend under the axes, three per row."""
    handles, labels = ax.get_legend_handles_labels()
    pairs = sorted(zip(handles, labels), key=lambda hl: hl[1] == "Pareto front")   # methods first
    handles, labels = [h for h, _ in pairs], [lab for _, lab in pairs]
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False, fontsize=6.5,
                   handlelength=1.5, columnspacing=1.0)


def loss_curves(runs: pd.DataFrame) -> Figure:
    """Training loss per step, one line per method (mean over seeds, ±1 std band), log y."""
    with plt.rc_context(STYLE):
        fig, ax = _figure(3.0)
        ok = runs[(runs["status"] == "success") & (runs["loss_curve"].map(len) > 0)]
        for method in method_order(ok["method"]):
            curves = list(ok.loc[ok["method"] == method, "loss_curve"])
            n = min(map(len, curves))
            stack = np.array([c[:n] for c in curves], dtype=float)
            steps, mean = np.arange(1, n + 1), stack.mean(axis=0)
            ax.plot(steps, mean, color=color(method), lw=1.0, label=method)
            if len(curves) > 1:
                std = stack.std(axis=0, ddof=1)
                ax.fill_between(steps, np.clip(mean - std, 1e-6, None), mean + std, color=color(method),
                                alpha=0.2, lw=0)
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis, *ax.get_ylim())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Optimizer step")
        ax.set_ylabel("Training loss (nats/token, log)")
        _legend(fig, ax)
    return fig


def _compact(value: float) -> str:
    """1000 → 1k, 30000 → 30k, 1.2e6 → 1.2M; below 1000 as is."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def _plain_log_ticks(axis: Any, low: float, high: float) -> None:
    """Log-axis ticks as plain numbers; where more than six would show, only those at 1, 2, 3 and 5."""
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    crowded = sum(low <= m * 10.0**d <= high for d in decades for m in range(1, 10)) > 6

    def label(value: float, _pos: int) -> str:
        mantissa = value / 10 ** np.floor(np.log10(value) + 1e-9)
        return "" if crowded and round(mantissa) not in (1, 2, 3, 5) else _compact(value)

    axis.set_major_formatter(FuncFormatter(lambda value, _pos: _compact(value)))
    axis.set_minor_formatter(FuncFormatter(label))


def _clamp(ax: plt.Axes, key: str, cat: Catalog | None) -> None:
    """Keep the y range inside the metric's bounds (plus a margin), e.g. F1 never below 0."""
    bounds = metric(key, cat).bounds
    if bounds:
        low, high = ax.get_ylim()
        margin = 0.03 * (bounds[1] - bounds[0])
        ax.set_ylim(max(low, bounds[0] - margin), min(high, bounds[1] + margin))


def quality_vs_params(runs: pd.DataFrame, *, quality: str, cost: str = "trainable_params") -> Figure:
    """The task's primary metric against trainable parameters (log x); the Pareto front of method means is marked."""
    return tradeoff(runs, quality=quality, cost=cost, log_x=True)


def quality_vs_forgetting(runs: pd.DataFrame, *, quality: str) -> Figure:
    """The task's primary metric against the base ability lost (bench/pipeline/forgetting.py), the measure named
    on x."""
    kinds = " / ".join(sorted(runs["forgetting_measure"].dropna().unique()))
    fig = tradeoff(runs, quality=quality, cost="forgetting", log_x=False,
                   xlabel=f"{metric('forgetting').heading}: base ability lost ({kinds})")
    fig.axes[0].axvline(0.0, color="0.75", lw=0.6, zorder=1)   # the base's own ability, kept whole
    return fig


def tradeoff(runs: pd.DataFrame, *, quality: str, cost: str, log_x: bool, xlabel: str | None = None) -> Figure:
    """Method means of ``quality`` against ``cost`` (±1 std both ways); the Pareto front of the means is marked."""
    cat = catalog_of(runs)
    with plt.rc_context(STYLE):
        fig, ax = _figure(3.0)
        q, c = per_method(runs, quality), per_method(runs, cost)
        points = pd.DataFrame({cost: c["mean"], quality: q["mean"], "err": q["std"], "xerr": c["std"]}
                              ).dropna(subset=[cost, quality])
        for method, row in points.iterrows():
            ax.errorbar(row[cost], row[quality], yerr=None if np.isnan(row["err"]) else row["err"],
                        xerr=None if np.isnan(row["xerr"]) or log_x else row["xerr"], fmt="o",
                        ms=4.5, color=color(method), capsize=2, lw=0.8, label=method, zorder=3)
        front = points[pareto_front(points, [cost, quality], cat)].sort_values(cost)
        if not front.empty:
            ax.step(front[cost], front[quality], where="post", color="0.4", ls="--", lw=0.8, zorder=2,
                    label="Pareto front")
            ax.scatter(front[cost], front[quality], s=70, facecolors="none", edgecolors="0.2", lw=0.8, zorder=4)
        if log_x:
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis, *ax.get_xlim())
        _clamp(ax, quality, cat)
        ax.set_xlabel(xlabel or f"{metric(cost, cat).heading}{' (log)' if log_x else ''}")
        ax.set_ylabel(metric(quality, cat).heading)
        _legend(fig, ax)
    return fig


def bars(runs: pd.DataFrame, key: str) -> Figure:
    """One bar per method (mean, ±1 std); a method without a successful run is marked "failed"."""
    with plt.rc_context(STYLE):
        fig, ax = _figure(2.4)
        methods = method_order(runs["method"])
        stats = per_method(runs, key).reindex(methods)
        heights = shown(key, stats["mean"].to_numpy(dtype=float))
        errors = shown(key, stats["std"].to_numpy(dtype=float))
        x = np.arange(len(methods))
        has = ~np.isnan(heights)
        ax.bar(x[has], heights[has], yerr=np.where(np.isnan(errors), 0, errors)[has] if (stats["count"] > 1).any()
               else None, color=[color(m) for m, h in zip(methods, has) if h], width=0.7, capsize=2,
               error_kw={"lw": 0.8})
        for i in x[~has]:
            ax.text(i, 0, "failed", rotation=90, ha="center", va="bottom", fontsize=6.5, color="firebrick")
        ax.set_xticks(x, methods, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_ylabel(_bar_label(runs, key))
    return fig


def _bar_label(runs: pd.DataFrame, key: str) -> str:
    """Axis label with the unit, and the kind of memory where the metric is memory."""
    kinds = sorted({MEM_KINDS.get(k, k) for k in runs["mem_kind"].dropna()}) if key in MEMORY else []
    m = metric(key)
    return f"{m.heading}\n{' / '.join(kinds)}" if kinds else m.heading


def figures(runs: pd.DataFrame) -> dict[str, Figure]:
    """Every figure, named ``<kind>-<model>-<task>``, one set per (model, task) in the runs; the quality figures
    plot the task's declared primary metric and are named after it (``f1_micro_vs_params-…``)."""
    out: dict[str, Figure] = {}
    for (model, task), group in runs.groupby(["model", "task"], sort=True):
        suffix = f"-{model}-{task}"
        out["loss_curves" + suffix] = loss_curves(group)
        quality = primary(group[group["status"] == "success"])
        if quality is None:
            log.warning("%s · %s: no successful run declares a primary metric; no quality figures", model, task)
        else:
            out[f"{quality}_vs_params{suffix}"] = quality_vs_params(group, quality=quality)
            if group["forgetting"].notna().any():   # runs recorded before forgetting was measured have none
                out[f"{quality}_vs_forgetting{suffix}"] = quality_vs_forgetting(group, quality=quality)
        out["peak_memory" + suffix] = bars(group, "mem_measured_bytes")
        out["latency_p50" + suffix] = bars(group, "latency_ms_p50")
    return out


def save_atomic(fig: Figure, path: Path) -> None:
    """Save through a temporary file and rename, so a killed report never leaves half a figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        with plt.rc_context(STYLE):
            fig.savefig(tmp, dpi=STYLE["savefig.dpi"])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_figures(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """PNG and PDF of every figure under ``out_dir``; returns the PNG paths."""
    pngs = []
    for name, fig in figures(runs).items():
        for suffix in (".png", ".pdf"):
            save_atomic(fig, out_dir / f"{name}{suffix}")
        pngs.append(out_dir / f"{name}.png")
    return pngs
