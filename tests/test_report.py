"""Report, figures and metric directions, from result JSONs made here (no run, no network, no GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer
from omegaconf import OmegaConf

from bench import report
from bench.analysis import plots, tables
from bench.core import metrics

ROOT = Path(__file__).resolve().parent.parent
# The triple task's declaration, as every result JSON of it carries it.
TRIPLES = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "triples.yaml").metric_list)
TASK_INFO = {"name": "triples_synth", "primary_metric": "f1_micro", "metric_list": TRIPLES}

# Per method: (trainable params, F1 micro at seed 0, peak MiB, latency p50 ms). F1 grows 0.02 per seed.
METHODS = {
    "full": (200_000, 0.90, 400.0, 10.0),
    "prompt_tuning": (1_000, 0.10, 300.0, 12.0),
    "lora": (10_000, 0.80, 320.0, 10.5),
    "prefix_tuning": (50_000, 0.30, 330.0, 11.0),
    "adalora": (12_000, 0.70, 325.0, 10.8),
}


def fake_record(method: str, seed: int, status: str = "success") -> dict:
    """A result JSON in bench.run's shape; failed/running ones lack the train and eval sections."""
    params, f1, mib, latency = METHODS[method]
    config = {"model": {"name": "tiny_llama"}, "task": {"name": "triples_synth"}, "method": {"name": method},
              "seed": seed}
    record = {"run_info": {"run_id": f"{method}{seed}", "status": status, "config": config, "seed": seed,
                           "error": None if status == "success" else "RuntimeError: boom | at step 3",
                           "log_path": f"{method}/seed{seed}/run.log", "wall_time_s": 5.0}}
    if status != "success":
        return record
    curve = list(np.geomspace(3.0, 1.2 - f1 + 0.05 * seed, 20))
    record["train_info"] = {"steps": 20, "loss_curve": curve, "final_loss": curve[-1], "eval_loss": 0.5,
                            "peak_mem_bytes": int((mib + 400 + 10 * seed) * 2**20), "mem_kind": "cpu_rss_train_peak",
                            "mem_measured_bytes": int((mib + 10 * seed) * 2**20),
                            "mem_estimate_bytes": int(mib * 2**20),
                            "trainable_params": params, "total_params": 200_000,
                            "trainable_pct": 100.0 * params / 200_000, "train_time_s": 10.0 + seed,
                            "adapter_bytes": params * 4}
    record["eval_info"] = {"f1_micro": f1 + 0.02 * seed, "f1_macro": f1 - 0.05, "eval_time_s": 2.0,
                           "latency_ms_p50": latency + seed, "parse_fail_rate": 0.0,
                           "latency_new_tokens": 32, "latency_batch_size": 64, "infer_ms_adapter": latency / 10,
                           "infer_ms_base": latency / 12, "infer_ms_merged": latency / 11 if method == "lora" else None,
                           "merged_agreement": 1.0 if method == "lora" else None}
    record["task_info"] = TASK_INFO
    return record


def write_sweep(root: Path, cells: dict[tuple[str, int], str]) -> Path:
    """result.json files in the sweep layout for {(method, seed): status}."""
    for (method, seed), status in cells.items():
        path = root / "tiny_llama" / "triples_synth" / method / f"seed{seed}" / "result.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fake_record(method, seed, status)))
    return root


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """Three seeds of full, lora, prompt tuning; adalora killed once; prefix tuning failed."""
    cells = {(m, s): "success" for m in ("full", "lora", "prompt_tuning", "adalora") for s in (0, 1, 2)}
    cells[("adalora", 2)] = "running"
    cells[("prefix_tuning", 0)] = "failed"
    return write_sweep(tmp_path / "sweep", cells)


def test_every_table_metric_declares_its_direction() -> None:
    cat = metrics.catalog([TRIPLES])
    assert metrics.metric("f1_micro", cat).higher_is_better and metrics.metric("f1_macro", cat).higher_is_better
    for key in ("peak_mem_bytes", "train_time_s", "latency_ms_p50", "trainable_params", "adapter_bytes",
                "eval_loss", "final_loss", "parse_fail_rate"):
        assert not metrics.metric(key, cat).higher_is_better, key
    assert set(tables.COST + tables.AFTER) <= set(metrics.BENCH)
    with pytest.raises(KeyError, match="unknown metric"):
        metrics.metric("f1_micro")            # a task's metric is the task's: bench/ does not know it
    with pytest.raises(ValueError, match="declared higher-is-better by one task and lower-is-better by another"):
        metrics.catalog([TRIPLES, [{"metric": "f1_micro", "higher_is_better": False}]])
    with pytest.raises(ValueError, match="one of the harness's own metrics"):
        metrics.declared([{"metric": "eval_loss", "higher_is_better": True}])


def test_flatten_reads_each_metric_from_its_section(tmp_path: Path) -> None:
    row = metrics.flatten(fake_record("lora", 1), tmp_path / "m" / "t" / "lora" / "seed1" / "result.json")
    assert (row["model"], row["task"], row["method"], row["seed"]) == ("tiny_llama", "triples_synth", "lora", 1)
    assert row["f1_micro"] == pytest.approx(0.82) and row["trainable_params"] == 10_000
    assert row["wall_time_s"] == 5.0 and row["mem_kind"] == "cpu_rss_train_peak" and len(row["loss_curve"]) == 20
    bare = metrics.flatten({"run_info": {"status": "failed"}}, Path("a/m/t/freeze/seed0/result.json"))
    assert (bare["model"], bare["method"], bare["status"]) == ("m", "freeze", "failed")
    assert "f1_micro" not in bare and bare["task_metrics"] is None   # no task_info: no task metric to read
    assert row["primary_metric"] == "f1_micro" and json.loads(row["task_metrics"]) == TRIPLES


def test_pareto_front_reads_directions() -> None:
    frame = pd.DataFrame({"trainable_params": [10, 100, 100, 1000, 5, np.nan, 100],
                          "f1_micro": [0.5, 0.9, 0.8, 0.85, 0.2, 0.99, 0.9]}, index=list("ABCDEFG"))
    cat = metrics.catalog([TRIPLES])
    front = metrics.pareto_front(frame, ["trainable_params", "f1_micro"], cat)
    assert list(front[front].index) == ["A", "B", "E", "G"]   # C, D dominated by B; F has no cost; B ties G
    cheapest = metrics.pareto_front(frame, ["trainable_params"], cat)      # lower is better …
    best = metrics.pareto_front(frame, ["f1_micro"], cat)                  # … higher is better
    assert list(cheapest[cheapest].index) == ["E"] and list(best[best].index) == ["F"]


def test_table_has_mean_std_over_seeds_and_shows_failures(sweep_dir: Path) -> None:
    written = tables.write_report(sweep_dir, figures=False)
    md = written["table.md"].read_text()
    lora = next(line for line in md.splitlines() if line.startswith("| lora"))
    assert "0.820 ± 0.020" in lora and "| success" in lora and "|       3 |" in lora
    assert "330 ± 10" in lora                                      # peak MiB used: 320, 330, 340
    assert "| 320 ± 0 |" in " ".join(lora.split())                # the estimate
    section = md.split("### Inference latency (exactly 32 new tokens per record, batch 64; ms per record)")[1]
    lora_latency = next(line for line in section.splitlines() if line.startswith("| lora"))
    assert "1.000" in lora_latency and "0.91×" in lora_latency    # merged/unmerged = (x/11)/(x/10)
    assert next(line for line in section.splitlines() if line.startswith("| base model (")).count("—") == 3
    assert "**0.920 ± 0.020**" in md                               # full has the best F1 micro
    prefix = next(line for line in md.splitlines() if line.startswith("| prefix_tuning"))
    assert "failed" in prefix and "—" in prefix
    adalora = next(line for line in md.splitlines() if line.startswith("| adalora"))
    assert "2/3 success, running" in adalora and "0.710 ± 0.014" in adalora
    assert "RuntimeError: boom \\| at step 3" in md                 # the failure table, pipes escaped
    csv = pd.read_csv(written["table.csv"]).set_index("method")
    assert csv.loc["lora", "f1_micro_mean"] == pytest.approx(0.82)
    assert csv.loc["lora", "f1_micro_std"] == pytest.approx(0.02)
    assert csv.loc["prefix_tuning", "status"] == "failed" and csv.loc["prefix_tuning", "seeds"] == 0
    tex = written["table.tex"].read_text()
    assert r"0.820 $\pm$ 0.020" in tex and r"prefix\_tuning" in tex and r"Trainable (\%)" in tex
    assert len(pd.read_csv(written["runs.csv"])) == 13


def test_methods_are_listed_in_the_house_order(sweep_dir: Path) -> None:
    runs = tables.load_runs(sweep_dir)
    assert list(dict.fromkeys(runs["method"])) == ["full", "prompt_tuning", "prefix_tuning", "lora", "adalora"]
    assert plots.method_order(["zeta", "lora", "alpha", "full"]) == ["full", "lora", "alpha", "zeta"]


def test_figures_have_one_series_per_method_in_its_colour(sweep_dir: Path) -> None:
    runs = tables.load_runs(sweep_dir)
    figs = plots.figures(runs)
    assert set(figs) == {f"{k}-tiny_llama-triples_synth" for k in
                         ("loss_curves", "f1_micro_vs_params", "peak_memory", "latency_p50")}
    succeeded = ["full", "prompt_tuning", "lora", "adalora"]

    loss = figs["loss_curves-tiny_llama-triples_synth"].axes[0]
    assert [ln.get_label() for ln in loss.get_lines()] == succeeded
    assert [ln.get_color() for ln in loss.get_lines()] == [plots.METHOD_COLORS[m] for m in succeeded]
    assert loss.get_yscale() == "log" and "loss" in loss.get_ylabel().lower()
    assert len([c for c in loss.collections if isinstance(c, PolyCollection)]) == 4   # ±std bands

    scatter = figs["f1_micro_vs_params-tiny_llama-triples_synth"].axes[0]
    assert scatter.get_ylabel() == "F1 micro"                                          # the declared label
    assert scatter.get_xscale() == "log" and "Trainable parameters" in scatter.get_xlabel()
    assert [c.get_label() for c in scatter.containers] == succeeded                   # error bars per method
    front = next(ln for ln in scatter.get_lines() if ln.get_label() == "Pareto front")
    assert list(front.get_xdata()) == [1_000, 10_000, 200_000]                         # prompt, lora, full

    memory = figs["peak_memory-tiny_llama-triples_synth"].axes[0]
    heights = [p.get_height() for p in memory.patches]
    assert heights == pytest.approx([410.0, 310.0, 330.0, 330.0])                      # MiB means, house order
    assert [p.get_facecolor()[:3] for p in memory.patches][2] == pytest.approx(to_rgb(plots.METHOD_COLORS["lora"]))
    assert "MiB" in memory.get_ylabel() and "CPU RSS" in memory.get_ylabel()
    assert [t.get_text() for t in memory.texts] == ["failed"]                         # prefix tuning
    assert [t.get_text() for t in memory.get_xticklabels()][2] == "prefix_tuning"
    latency = figs["latency_p50-tiny_llama-triples_synth"].axes[0]
    bar = next(c for c in latency.containers if isinstance(c, BarContainer))
    assert "ms" in latency.get_ylabel() and len(bar.errorbar.lines[2][0].get_segments()) == 4   # ±std per bar


def test_report_cli_writes_png_and_pdf_at_column_width(sweep_dir: Path) -> None:
    assert report.main([str(sweep_dir)]) == 0
    figures = sweep_dir / "report" / "figures"
    pngs, pdfs = sorted(figures.glob("*.png")), sorted(figures.glob("*.pdf"))
    assert len(pngs) == len(pdfs) == 4
    width = matplotlib.image.imread(pngs[0]).shape[1]
    assert width == pytest.approx(plots.WIDTH_IN * 300, abs=2)
    assert not list((sweep_dir / "report").rglob(".*"))                                 # no temp files left
    assert report.main([str(sweep_dir / "nothing")]) == 2
