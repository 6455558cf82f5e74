"""The interactive figures of report.html (plotly), from the same flattened runs as the paper figures: the primary
metric against cost with the Pareto front of the method means, training loss and validation curves with every seed
and the seeds' spread, and the learning-rate search's sensitivity.

Each builder returns a figure, or the sentence saying why the sweep has none (shown in the page in its place).
Methods keep their colours (bench.core.labels); directions, headings and units come from the metric catalog.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bench.analysis.plots import per_method
from bench.core.labels import color, method_order
from bench.core.metrics import Catalog, metric, pareto_front, shown

COSTS = (("trainable_params", True), ("mem_measured_bytes", False), ("latency_ms_p50", False))   # (x, log x)
HOVER = ("run_id", "lr", "seed", "config_hash")
LAYOUT = {"template": "plotly_white", "height": 420, "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
          "legend": {"groupclick": "togglegroup"}, "hovermode": "closest"}


def _rgba(hex_color: str, alpha: float) -> str:
    """``#0072b2`` → ``rgba(0,114,178,alpha)`` for a band under a line of that colour."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _hover(frame: pd.DataFrame) -> np.ndarray:
    """The run's identity for hover text: run id, learning rate, seed, config hash ("—" where missing)."""
    return frame[list(HOVER)].astype(object).where(frame[list(HOVER)].notna(), "—").to_numpy()


RUN_HOVER = "run %{customdata[0]}<br>LR %{customdata[1]}<br>seed %{customdata[2]}<br>config %{customdata[3]}"


def tradeoff(runs: pd.DataFrame, *, quality: str, cost: str, log_x: bool, cat: Catalog) -> go.Figure | str:
    """Every successful run's ``quality`` against ``cost`` (hover: its identity), the method means with ±1 std, and
    the Pareto front of the means (directions from the catalog)."""
    q, c = metric(quality, cat), metric(cost, cat)
    ok = runs[(runs["status"] == "success") & runs[quality].notna() & runs[cost].notna()]
    if ok.empty:
        return f"No successful run records both {q.heading} and {c.heading}: no {q.label} against {c.label} figure."
    fig = go.Figure()
    means = pd.DataFrame({cost: per_method(ok, cost)["mean"], quality: per_method(ok, quality)["mean"],
                          "std": per_method(ok, quality)["std"]})
    for method in method_order(ok["method"]):
        mine = ok[ok["method"] == method]
        fig.add_scatter(x=shown(cost, mine[cost], cat), y=mine[quality], mode="markers", name=method,
                        legendgroup=method, marker={"color": color(method), "size": 7, "opacity": 0.55},
                        customdata=_hover(mine), hovertemplate=f"<b>{method}</b><br>{RUN_HOVER}<br>"
                        f"{c.label} %{{x}}<br>{q.label} %{{y:.4f}}<extra></extra>")
        mean = means.loc[method]
        fig.add_scatter(x=[shown(cost, mean[cost], cat)], y=[mean[quality]], mode="markers", legendgroup=method,
                        showlegend=False, marker={"color": color(method), "size": 13, "symbol": "diamond",
                                                  "line": {"width": 1, "color": "#333"}},
                        error_y=_error(mean[quality], mean["std"], q.bounds, color(method)),
                        hovertemplate=f"<b>{method}</b>: mean of {len(mine)} runs<br>{c.label} %{{x}}<br>"
                        f"{q.label} %{{y:.4f}}<extra></extra>")
    front = means[pareto_front(means, [cost, quality], cat)].sort_values(cost)
    fig.add_scatter(x=shown(cost, front[cost], cat), y=front[quality], mode="lines", name="Pareto front (means)",
                    line={"shape": "hv", "dash": "dash", "color": "#666", "width": 1.2}, hoverinfo="skip")
    fig.update_layout(**LAYOUT, title=f"{q.label} against {c.label}", xaxis_title=c.heading + (" (log)" * log_x),
                      yaxis_title=f"{q.heading} {'↑' if q.higher_is_better else '↓'}")
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def _error(mean: float, std: float, bounds: tuple[float, float] | None, colour: str) -> dict[str, Any] | None:
    """±1 std as an error bar, cut at the metric's bounds (an F1 bar never reaches below 0); None for one seed."""
    if np.isnan(std):
        return None
    low, high = (mean - bounds[0], bounds[1] - mean) if bounds else (std, std)
    return {"type": "data", "symmetric": False, "array": [min(std, high)], "arrayminus": [min(std, low)],
            "color": colour}


def _spread(fig: go.Figure, method: str, x: np.ndarray, curves: list[np.ndarray], hover: np.ndarray, *,
            first: bool, log: bool = False, bounds: tuple[float, float] | None = None, **where: int) -> None:
    """One method's seeds as thin lines, their mean as a thick one and ±1 std as a band (the legend's group); the
    band stays inside the metric's bounds, and on a log axis stops at the lowest seed rather than crossing zero."""
    stack = np.array([cv[:len(x)] for cv in curves], dtype=float)
    mean, x = stack.mean(axis=0), np.asarray(x, dtype=np.float32)   # float32 halves the page; plenty for a plot
    if len(curves) > 1:
        std = stack.std(axis=0, ddof=1)
        low = np.maximum(mean - std, stack.min(axis=0)) if log else mean - std
        high = mean + std
        if bounds:
            low, high = np.clip(low, *bounds), np.clip(high, *bounds)
        fig.add_scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([high, low[::-1]]).astype(np.float32),
                        mode="lines", fill="toself", fillcolor=_rgba(color(method), 0.18), line={"width": 0},
                        hoverinfo="skip", legendgroup=method, showlegend=False, **where)
    for curve, ident in zip(stack, hover):
        run = "<br>".join(f"{k} {v}" for k, v in zip(("run", "LR", "seed", "config"), ident))   # once per trace
        fig.add_scatter(x=x, y=curve.astype(np.float32), mode="lines", line={"color": color(method), "width": 0.7},
                        opacity=0.45, legendgroup=method, showlegend=False,
                        hovertemplate=f"<b>{method}</b><br>{run}<br>x %{{x}}, y %{{y:.4f}}<extra></extra>", **where)
    fig.add_scatter(x=x, y=mean.astype(np.float32), mode="lines", name=method, legendgroup=method, showlegend=first,
                    line={"color": color(method), "width": 2},
                    hovertemplate=f"<b>{method}</b>: mean of {len(curves)}<br>x %{{x}}, y %{{y:.4f}}<extra></extra>",
                    **where)


def loss_curves(runs: pd.DataFrame) -> go.Figure | str:
    """Training loss per optimizer step (log y), per method: each seed, the mean, ±1 std."""
    ok = runs[(runs["status"] == "success") & (runs["loss_curve"].map(len) > 0)]
    if ok.empty:
        return "No successful run recorded a training loss curve (train_info.loss_curve): no loss figure."
    fig = go.Figure()
    for method in method_order(ok["method"]):
        mine = ok[ok["method"] == method]
        curves = [np.asarray(cv, dtype=float) for cv in mine["loss_curve"]]
        _spread(fig, method, np.arange(1, min(map(len, curves)) + 1), curves, _hover(mine), first=True,
                log=True)
    fig.update_layout(**LAYOUT, title="Training loss (each seed, mean, ±1 std)", xaxis_title="Optimizer step",
                      yaxis_title="Training loss (nats/token, log)")
    fig.update_yaxes(type="log")
    return fig


def validation_curves(runs: pd.DataFrame, cat: Catalog) -> go.Figure | str:
    """The primary metric and the loss on validation during training, against optimizer steps, per method."""
    ok = runs[(runs["status"] == "success") & (runs["curve"].map(len) > 0)]
    if ok.empty:
        return ("No validation learning curves in this sweep: no run recorded one (they are recorded with "
                "eval.curve.every > 0, e.g. `make sweep PRESET=tuned`).")
    name = str(ok["primary_metric"].dropna().iloc[0])
    m = metric(name, cat)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{m.label}, validation", "Loss, validation"),
                        horizontal_spacing=0.15)
    for method in method_order(ok["method"]):
        mine = ok[ok["method"] == method]
        points = [pd.DataFrame(cv) for cv in mine["curve"]]
        n = min(len(p) for p in points)
        x = points[0]["step"].to_numpy()[:n]
        for col, key in ((1, name), (2, "val_loss")):
            _spread(fig, method, x, [p[key].to_numpy() for p in points], _hover(mine), first=col == 1, row=1,
                    col=col, bounds=m.bounds if key == name else None)
    fig.update_layout(**LAYOUT, title="Validation learning curves (each seed, mean, ±1 std)")
    fig.update_xaxes(title_text="Optimizer step")
    fig.update_yaxes(title_text=f"{m.heading} {'↑' if m.higher_is_better else '↓'}", row=1, col=1)
    fig.update_yaxes(title_text="Loss (nats/token)", row=1, col=2)
    return fig


def sensitivity(choices: dict[str, dict[str, Any]], cat: Catalog) -> go.Figure | str:
    """The search's validation score against learning rate (log x) per method, the chosen rate circled."""
    if not choices:
        return ("No learning-rate search in this sweep: every method ran at its YAML's rate (`make sweep "
                "PRESET=tuned` searches one per method on the validation split).")
    name = next((c["metric"] for c in choices.values() if c.get("metric")), None)
    if name is None:
        return "The learning-rate search scored no candidate (every candidate failed): no sensitivity figure."
    m, fig = metric(name, cat), go.Figure()
    for method in method_order(choices):
        rows = [c for c in choices[method]["candidates"] if c["value"] is not None]
        text = [f"status {c['status']}, validation loss {c['eval_loss']}" for c in rows]
        fig.add_scatter(x=[c["lr"] for c in rows], y=[c["value"] for c in rows], mode="lines+markers", name=method,
                        legendgroup=method, line={"color": color(method)}, text=text,
                        hovertemplate=f"<b>{method}</b><br>LR %{{x:g}}<br>{m.label} %{{y:.4f}}<br>%{{text}}"
                        "<extra></extra>")
        chosen = [c for c in rows if c["lr"] == choices[method]["chosen_lr"]]
        fig.add_scatter(x=[c["lr"] for c in chosen], y=[c["value"] for c in chosen], mode="markers",
                        legendgroup=method, showlegend=False, hoverinfo="skip",
                        marker={"size": 16, "symbol": "circle-open", "color": color(method), "line": {"width": 2}})
    fig.update_layout(**LAYOUT, title="Learning-rate sensitivity on validation (circled: chosen)",
                      xaxis_title="Learning rate (log)", yaxis_title=f"{m.heading}, validation")
    fig.update_xaxes(type="log")
    return fig


def figures(runs: pd.DataFrame, choices: dict[str, dict[str, Any]], cat: Catalog) -> dict[str, go.Figure | str]:
    """Every figure of one (model, task), by title: figures, or the sentence why the sweep has none."""
    quality = runs.loc[runs["status"] == "success", "primary_metric"].dropna()
    out: dict[str, go.Figure | str] = {}
    for cost, log_x in COSTS:
        title = f"Primary metric against {metric(cost, cat).label.lower()}"
        out[title] = (tradeoff(runs, quality=str(quality.iloc[0]), cost=cost, log_x=log_x, cat=cat)
                      if len(quality) else "No successful run declares a primary metric: no quality figures.")
    out["Training loss"] = loss_curves(runs)
    out["Validation learning curves"] = validation_curves(runs, cat)
    out["Learning-rate sensitivity"] = sensitivity(choices, cat)
    return out
