"""report.html in a real browser: a small real sweep (two methods × two seeds and their learning-rate search, through
the real launcher at a tiny budget) opened from file:// in the system chromium (Debian's package, `make
setup-browser`) driven by Playwright, every request off the file system aborted; the select boxes on a page of result
JSONs made here (two models, no run). Playwright never downloads a browser here: it launches the system binary;
without one the tests skip, saying so.

    python -m tests.test_browser SWEEP_DIR PNG    # a screenshot of SWEEP_DIR/report/report.html (docs/img/report.png)
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.analysis import tables
from tests.conftest import ROOT, child_env
from tests.test_regression_ci import CACHE   # the checkout's cache of tiny bases: a clean clone builds it once
from tests.test_report import fake_record

WIDTH = 1280
# Two methods × two seeds at 20 steps with validation curves, after a two-candidate search per method at 10 steps.
SWEEP = ["methods=[lora,prompt_tuning]", "seeds=[0,1]", "search.lr_factors=[0.5,2]",
         "search.overrides=['train.steps=10']"]
RUN = ["train.steps=20", "eval.max_records=8", "eval.curve.every=5", "eval.curve.records=8", "eval.latency.records=4"]
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
def sweep(browser_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small real sweep, its report written by the sweep itself."""
    root = tmp_path_factory.mktemp("browser") / "sweep"
    done = subprocess.run([sys.executable, "-m", "bench.sweep", *SWEEP, f"sweep_dir={root}", "--", *RUN], cwd=ROOT,
                          env={**child_env(), "PEFTBENCH_CACHE": CACHE}, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
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
    figures = page.eval_on_selector_all(
        "[data-figure]", "els => els.map(e => [e.dataset.figure, e.querySelectorAll('.scatterlayer .trace').length])")
    assert [name for name, _ in figures] == [
        "Primary metric against trainable parameters", "Primary metric against peak memory used",
        "Primary metric against latency p50", "Training loss", "Validation learning curves",
        "Learning-rate sensitivity"]
    assert all(traces > 0 for _, traces in figures), figures
    assert page.locator("[data-missing]").count() == 0
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
