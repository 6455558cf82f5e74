"""The two figures of a fair comparison: learning-rate sensitivity (the search's validation scores) and learning
curves (the primary metric on validation against steps, training tokens and training seconds)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench.analysis.plots import STYLE, WIDTH_IN, _legend, save_atomic
from bench.core.labels import color, method_order
from bench.core.metrics import Catalog, metric

log = logging.getLogger(__name__)
AXES = (("step", "Optimizer step"), ("tokens", "Training tokens"), ("seconds", "Training time (s)"))


def sensitivity(choices: dict[str, dict[str, Any]], cat: Catalog) -> Figure | None:
    """Validation primary metric against learning rate (log x), one line per method, the chosen rate circled; None
    where no candidate was scored (every one failed): the table's search column says so, no empty figure."""
    name = next((c["metric"] for c in choices.values() if c.get("metric")), None)
    if name is None:
        log.warning("learning-rate search: no candidate was scored (every one failed), so no sensitivity figure")
        return None
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH_IN, 3.0), layout="constrained")
        ax = fig.add_subplot()
        for method in method_order(choices):
            rows = [c for c in choices[method]["candidates"] if c["value"] is not None]
            if not rows:
                continue
            ax.plot([c["lr"] for c in rows], [c["value"] for c in rows], "o-", ms=3, lw=1.0, color=color(method),
                    label=method)
            chosen = [c for c in rows if c["lr"] == choices[method]["chosen_lr"]]
            ax.scatter([c["lr"] for c in chosen], [c["value"] for c in chosen], s=60, facecolors="none",
                       edgecolors=color(method), lw=1.0, zorder=4)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())   # decades only: the candidates' rates crowd the axis
        ax.set_xlabel("Learning rate (log; circled: chosen)")
        ax.set_ylabel(f"{metric(name, cat).heading}, validation")
        _legend(fig, ax)
    return fig


def learning_curves(runs: pd.DataFrame, cat: Catalog) -> Figure | None:
    """The primary metric on validation during training against steps, tokens and seconds (mean over seeds)."""
    ok = runs[(runs["status"] == "success") & (runs["curve"].map(len) > 0)]
    if ok.empty:
        return None
    name = str(ok["primary_metric"].dropna().iloc[0])
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH_IN, 6.0), layout="constrained")
        axes = fig.subplots(len(AXES), 1, sharey=True)
        for method in method_order(ok["method"]):
            curves = [pd.DataFrame(c) for c in ok.loc[ok["method"] == method, "curve"]]
            n = min(len(c) for c in curves)
            mean = pd.concat([c.iloc[:n] for c in curves]).groupby(level=0).mean()
            for ax, (key, _) in zip(axes, AXES):
                ax.plot(mean[key], mean[name], "o-", ms=2, lw=1.0, color=color(method), label=method)
        for ax, (_, label) in zip(axes, AXES):
            ax.set_xlabel(label)
            ax.set_ylabel(f"{metric(name, cat).label}, validation")
            bounds = metric(name, cat).bounds
            if bounds:
                ax.set_ylim(bounds[0] - 0.03 * np.ptp(bounds), bounds[1] + 0.03 * np.ptp(bounds))
        _legend(fig, axes[0])
    return fig


def write(runs: pd.DataFrame, choices: dict[tuple[str, str, str], dict[str, Any]], out_dir: Path,
          cat: Catalog) -> list[Path]:
    """PNG and PDF of both figures per (model, task) where the sweep has what they need; returns the PNGs."""
    pngs = []
    pairs = dict.fromkeys([*((m, t) for m, t, _ in choices), *zip(runs["model"], runs["task"])])
    for model, task in pairs:
        figs = {"lr_sensitivity": sensitivity({k[2]: c for k, c in choices.items() if k[:2] == (model, task)}, cat)
                if any(k[:2] == (model, task) for k in choices) else None,
                "learning_curves": learning_curves(runs[(runs["model"] == model) & (runs["task"] == task)], cat)}
        for kind, fig in figs.items():
            if fig is None:
                continue
            for suffix in (".png", ".pdf"):
                save_atomic(fig, out_dir / f"{kind}-{model}-{task}{suffix}")
            pngs.append(out_dir / f"{kind}-{model}-{task}.png")
    return pngs
