"""report.html without a browser: one self-contained file, table.md's table in it, every figure or its reason, the
verdict of ``bench.compare --html`` (result JSONs made here; no run, no network). The page in a real browser:
tests/test_browser.py."""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from bench import compare, report
from bench.analysis import html_report, tables
from tests import test_compare, test_report
from tests.test_report import write_sweep

sweep_dir = test_report.sweep_dir   # the fixture: three seeds of four methods, one killed, prefix tuning failed
REMOTE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


def rows(table: str) -> list[list[str]]:
    """The body rows of one HTML table as cell texts (tags dropped, entities read)."""
    body = table.split("<tbody>", 1)[1]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body)]


def markdown_rows(md: str, first: str) -> list[list[str]]:
    """The rows of the Markdown table in ``md`` whose heading starts with ``first``, bold marks dropped."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first}"))
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        out.append([c.strip().replace("**", "") for c in line.strip().strip("|").split(" | ")])
    return out


def test_one_offline_file_with_plotly_inlined_once(sweep_dir: Path) -> None:
    written = tables.write_report(sweep_dir, figures=False)
    page = written["report.html"]
    assert page == sweep_dir / "report" / "report.html"
    assert sorted(p.name for p in page.parent.iterdir() if p.suffix in (".html", ".js", ".css")) == ["report.html"]
    text = page.read_text()
    assert not REMOTE.findall(text), REMOTE.findall(text)            # no CDN, nothing fetched
    assert text.count(get_plotlyjs()[:2000]) == 1                     # the bundle once, not once per figure
    assert text.count("Plotly.newPlot(") == 4                        # 3 quality-vs-cost figures + training loss
    assert len(re.findall(r'data-figure="Primary metric against', text)) == 3


def test_the_table_is_table_mds_with_directions_intervals_and_failures(sweep_dir: Path) -> None:
    written = tables.write_report(sweep_dir, figures=False)
    text, md = written["report.html"].read_text(), written["table.md"].read_text()
    section = text.split('<section data-model="tiny_llama" data-task="triples_synth">', 1)[1]
    main = section.split("</table>", 1)[0]
    shown = rows(main)
    assert [r[0] for r in shown] == ["full", "prompt_tuning", "prefix_tuning", "lora", "adalora"]   # one per method
    assert shown == markdown_rows(md, "Method")                      # the same cells as table.md
    heads = [html.unescape(re.sub(r"<[^>]+>", "", h)) for h in re.findall(r"<th[^>]*>(.*?)</th>", main)]
    assert "F1 micro ↑" in heads and "Adapter size (KiB) ↓" in heads and "95% CI" in heads
    assert re.search(r'data-better="up"[^>]*>F1 micro ↑', main) and "<strong>0.920 ± 0.020</strong>" in main
    assert 'data-v="0.82"' in main                                    # lora's F1 mean sorts as a number
    assert "<td>2/3 success, running</td>" in main                    # … a column of text as text
    failed = rows(text.split("<h2>Runs that did not succeed</h2>", 1)[1])
    assert [(r[2], r[4]) for r in failed] == [("prefix_tuning", "failed"), ("adalora", "running")]
    assert "RuntimeError: boom | at step 3" in failed[0][5]
    assert "Inference latency (exactly 32 new tokens per record, batch 64; ms per record)" in section


def test_a_sweep_without_curves_or_search_says_so_in_place_of_the_figure(sweep_dir: Path) -> None:
    text = tables.write_report(sweep_dir, figures=False)["report.html"].read_text()
    missing = dict(re.findall(r'data-missing="([^"]+)"><b>[^<]+</b>: ([^<]+)', text))
    assert set(missing) == {"Validation learning curves", "Learning-rate sensitivity"}
    assert missing["Validation learning curves"].startswith("No validation learning curves in this sweep")
    assert missing["Learning-rate sensitivity"].startswith("No learning-rate search in this sweep")


def test_a_sweep_of_failures_has_no_figure_and_no_plotly(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", {("lora", 0): "failed", ("full", 0): "failed"})
    text = tables.write_report(sweep, figures=False)["report.html"].read_text()
    assert "Plotly.newPlot(" not in text and get_plotlyjs()[:2000] not in text
    assert "No successful run declares a primary metric" in text and "No successful run recorded a training" in text


def add_curves_and_search(sweep_dir: Path) -> None:
    """Validation curves in every successful run of ``sweep_dir`` and a three-candidate search for lora."""
    for path in sweep_dir.rglob("result.json"):
        record = json.loads(path.read_text())
        if record["run_info"]["status"] == "success":
            f1 = record["eval_info"]["f1_micro"]
            record["train_info"]["curve"] = {"points": [
                {"step": s, "tokens": 100 * s, "seconds": s / 10, "val_loss": 2.0 / s, "f1_micro": f1 * s / 20}
                for s in (5, 10, 20)]}
            path.write_text(json.dumps(record))
    search = sweep_dir / "search" / "tiny_llama" / "triples_synth" / "lora"
    search.mkdir(parents=True)
    candidates = [{"lr": lr, "status": "success", "value": v, "metric": "f1_micro", "eval_loss": 1.0}
                  for lr, v in ((0.001, 0.5), (0.005, 0.8), (0.02, 0.6))]
    (search / "choice.json").write_text(json.dumps({"chosen_lr": 0.005, "metric": "f1_micro", "runs": 3,
                                                    "cost_s": 30.0, "candidates": candidates}))


def test_curves_and_the_search_become_figures(sweep_dir: Path) -> None:
    add_curves_and_search(sweep_dir)
    text = tables.write_report(sweep_dir, figures=False)["report.html"].read_text()
    assert "data-missing" not in text and text.count("Plotly.newPlot(") == 6
    assert 'data-figure="Validation learning curves"' in text and 'data-figure="Learning-rate sensitivity"' in text
    assert "3, 30" in text                                            # the table's search column: runs, seconds


def test_sort_values_are_the_first_number_a_cell_shows() -> None:
    assert html_report.sort_value("**0.956 ± 0.002**") == 0.956
    assert html_report.sort_value("1,234 ± 5") == 1234.0 and html_report.sort_value("-0.204–0.725") == -0.204
    assert html_report.sort_value("—") is None and html_report.sort_value("worse (p=0.000)") is None


def test_report_cli_names_the_page_and_compare_html_adds_the_verdict(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sweep = test_compare.write_sweep(tmp_path / "sweep", seeds=(0, 1))
    assert report.main([str(sweep), "--no-figures"]) == 0
    assert "report.html" in caplog.text and "opens offline" in caplog.text
    assert 'id="verdict"' not in (sweep / "report" / "report.html").read_text()
    base = test_compare.make_baseline(tmp_path, sweep)
    assert compare.main(["compare", str(sweep), "--baseline", str(base), "--html"]) == 0
    text = (sweep / "report" / "report.html").read_text()
    verdict = text.split('<section id="verdict">', 1)[1].split("</section>", 1)[0]
    assert "Regression check" in verdict and "<strong>PASS</strong>" in verdict
    assert text.index('id="verdict"') < text.index("<section data")                  # the first section
    lines = rows(verdict)
    assert len(lines) > 3 and {r[8] for r in lines} == {"unchanged"} and {r[2] for r in lines} == {
        "full", "lora", "prefix_tuning"}


def test_a_replica_sweep_carries_its_warning_into_the_page(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", {("lora", 0): "success"})
    path = next(sweep.rglob("result.json"))
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "base_info": {"replica": True}}))
    written = tables.write_report(sweep, figures=False)
    assert "random weights" in written["table.md"].read_text()
    assert "random weights" in written["report.html"].read_text()


def test_a_search_whose_candidates_all_failed_reports_without_a_sensitivity_figure(sweep_dir: Path) -> None:
    """The PNG/PDF figures skip the sensitivity plot (it used to stop the report on StopIteration); the page says
    why in its place."""
    search = sweep_dir / "search" / "tiny_llama" / "triples_synth" / "lora"
    search.mkdir(parents=True)
    candidates = [{"lr": lr, "status": "failed", "value": None, "metric": None, "eval_loss": None}
                  for lr in (0.001, 0.005)]
    (search / "choice.json").write_text(json.dumps({"chosen_lr": None, "metric": None, "runs": 2, "cost_s": 3.0,
                                                    "candidates": candidates}))
    written = tables.write_report(sweep_dir, figures=True)
    assert not list((sweep_dir / "report" / "figures").glob("lr_sensitivity-*"))
    assert "every candidate failed" in written["report.html"].read_text()
