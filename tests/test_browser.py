"""report.html in a real browser: the report of a real sweep (the regression gate's nine launched methods,
conf/sweep/ci.yaml, launched once a session and shared with tests/test_regression_ci.py) opened from file:// in the
system chromium (Debian's package, `make setup-browser`) driven by Playwright, every request off the file system
aborted; the figures a one-seed sweep without a search cannot have (seeds' spread, validation curves, the learning-rate
sensitivity) and the select boxes on pages of result JSONs made here. Playwright never downloads a browser here: it
launches the system binary; without one the tests skip, saying so.

    python -m tests.test_browser SWEEP_DIR PNG    # a screenshot of SWEEP_DIR/report/report.html (docs/img/report.png)
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.analysis import tables
from tests.test_html_report import add_curves_and_search
from tests.test_report import fake_record, write_sweep

WIDTH = 1280
FIGURES = ["Primary metric against trainable parameters", "Primary metric against peak memory used",
           "Primary metric against latency p50", "Training loss", "Validation learning curves",
           "Learning-rate sensitivity"]
SHOWN = "els => els.map(e => [e.dataset.figure, e.querySelectorAll('.scatterlayer .trace').length])"
RENDERED = """() => { const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
  return divs.length > 0 && divs.every(d => d._fullLayout && d.querySelector('svg.main-svg')); }"""


def chromium() -> str | None:
    """The system chromium: $PEFTBENCH_CHROMIUM, else chromium or chromium-browser on the PATH."""
    for candidate in (os.environ.get("PEFTBENCH_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser_path() -> str:
    """The chromium binary, or a skip that names the fix (checked before the sweep is launched)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency: make setup")
    path = chromium()
    if path is None:
        pytest.skip("no chromium binary found (set PEFTBENCH_CHROMIUM, or `make setup-browser` installs Debian's)")
    return path


@pytest.fixture(scope="module")
def sweep(browser_path: str, reduced_sweep: Any) -> Path:
    """The regression gate's real sweep (launched once a session), its report written as ``make report`` does."""
    root, done = reduced_sweep("ci")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tables.write_report(root, figures=False)
    return root


def launched(executable: str) -> Iterator[Any]:
    """Headless chromium from ``executable`` (Playwright's own browsers are never used, nor downloaded)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=executable)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, html: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    """The page with every request off file:// aborted, its figures drawn: (page, blocked urls, console errors)."""
    blocked: list[str] = []
    errors: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith(("file:", "data:", "blob:")):
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    try:
        page.route("**/*", route)
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(html.resolve().as_uri())
        page.wait_for_function(RENDERED, timeout=30_000)
        yield page, blocked, errors
    finally:
        page.close()


@pytest.fixture(scope="module")
def browser(browser_path: str) -> Iterator[Any]:
    """One chromium for the module's pages."""
    yield from launched(browser_path)


@pytest.fixture(scope="module")
def opened(sweep: Path, browser: Any) -> Iterator[tuple[Any, list[str], list[str]]]:
    """The sweep's report.html, open."""
    yield from open_page(browser, sweep / "report" / "report.html")


@pytest.mark.slow
def test_every_figure_renders_offline_without_console_errors(opened: tuple[Any, list[str], list[str]],
                                                             sweep: Path) -> None:
    page, blocked, errors = opened
    assert blocked == [] and errors == []
    figures = page.eval_on_selector_all("[data-figure]", SHOWN)
    assert [name for name, _ in figures] == FIGURES[:4]             # one seed, no curves, no search: said in place
    assert all(traces > 0 for _, traces in figures), figures
    assert page.locator("[data-missing]").count() == 2
    assert page.eval_on_selector_all("#f-model option", "os => os.map(o => o.value)") == ["", "tiny_llama"]
    shot = sweep / "report" / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert struct.unpack(">II", shot.read_bytes()[16:24])[0] == WIDTH


@pytest.mark.slow
def test_clicking_a_heading_sorts_the_rows(opened: tuple[Any, list[str], list[str]]) -> None:
    page, blocked, errors = opened
    table = page.locator("section[data-model] table").first
    heading = table.locator("th", has_text="Trainable (%)")
    column = heading.evaluate("th => th.cellIndex")
    methods = "t => Array.from(t.tBodies[0].rows).map(r => r.cells[0].textContent)"
    values = f"t => Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[{column}].dataset.v))"
    before, orders = table.evaluate(methods), []
    for direction in ("ascending", "descending"):   # a ↓ column sorts best (lowest) first, then the other way
        heading.click()
        assert heading.get_attribute("aria-sort") == direction
        shown = table.evaluate(values)
        assert shown == sorted(shown, reverse=direction == "descending") and len(set(shown)) == len(shown) > 1
        orders.append(table.evaluate(methods))
    assert orders[0] == orders[1][::-1] and orders[0] != orders[1]   # each click reordered: sorted both ways
    assert sorted(before) == sorted(orders[0])
    assert blocked == [] and errors == []


def test_seeds_curves_and_the_search_render_as_figures(browser: Any, tmp_path: Path) -> None:
    """What the gate's sweep lacks: three seeds and their spread, validation curves and a learning-rate search."""
    root = write_sweep(tmp_path / "sweep", {(m, s): "success" for m in ("full", "lora") for s in (0, 1, 2)})
    add_curves_and_search(root)
    for page, blocked, errors in open_page(browser, tables.write_report(root, figures=False)["report.html"]):
        figures = page.eval_on_selector_all("[data-figure]", SHOWN)
        assert [name for name, _ in figures] == FIGURES and all(traces > 0 for _, traces in figures), figures
        assert page.locator("[data-missing]").count() == 0 and blocked == [] and errors == []


def test_the_select_boxes_show_one_model(browser: Any, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for model, method, status in (("tiny_llama", "lora", "success"), ("tiny_glm", "lora", "success"),
                                  ("tiny_glm", "full", "failed")):
        record = fake_record(method, 0, status)
        record["run_info"]["config"]["model"]["name"] = model
        path = root / model / "triples_synth" / method / "seed0" / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
    page_path = tables.write_report(root, figures=False)["report.html"]
    for page, blocked, errors in open_page(browser, page_path):
        visible = "els => els.filter(e => e.offsetParent !== null).map(e => e.dataset.model)"
        assert page.eval_on_selector_all("section[data-model]", visible) == ["tiny_glm", "tiny_llama"]
        page.select_option("#f-model", "tiny_llama")
        assert page.eval_on_selector_all("section[data-model]", visible) == ["tiny_llama"]
        assert page.eval_on_selector_all("tr[data-model]", visible) == []          # tiny_glm's failed run
        page.select_option("#f-model", "tiny_glm")
        assert page.eval_on_selector_all("section[data-model]", visible) == ["tiny_glm"]
        assert page.eval_on_selector_all("tr[data-model]", visible) == ["tiny_glm"]
        assert blocked == [] and errors == []


def screenshot(sweep_dir: Path, png: Path) -> None:
    """``sweep_dir``'s report.html as a PNG of the whole page, ``WIDTH`` pixels wide (the docs' picture)."""
    path = chromium()
    if path is None:
        raise SystemExit("no chromium binary: make setup-browser")
    for browser in launched(path):
        for page, blocked, errors in open_page(browser, sweep_dir / "report" / "report.html"):
            if blocked or errors:
                raise SystemExit(f"the page fetched {blocked} or logged errors {errors}")
            page.screenshot(path=str(png), full_page=True)
    from PIL import Image   # matplotlib's dependency: a 256-colour PNG, a third of the size, looks the same

    Image.open(png).quantize(256, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
