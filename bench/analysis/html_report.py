"""report.html: a sweep's report as one self-contained page that opens offline from file://.

The page holds, per (model, task), the method-comparison table of table.md (its cells, ↑/↓, intervals and
significance marks; sortable by clicking a heading, best first on the first click) and its notes, then the figures of
bench.analysis.html_figures; select boxes show one model or task. plotly.js is inlined once in the head, the page's
own CSS and JS are inlined too: nothing is fetched from a network. bench.compare's ``--html`` adds the regression
verdict as the first section. The cells come from bench.analysis.tables (its caller), never computed a second way.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from bench.analysis import html_figures
from bench.core.metrics import Catalog
from bench.core.results import write_atomic

NUMBER = re.compile(r"^[-+−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1500px;padding:0 18px 40px;color:#222}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 6px}.filters{position:sticky;top:0;background:#fff;padding:8px 0;z-index:5;
border-bottom:1px solid #eee}.filters label{margin-right:16px}.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 7px;
white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f6f8;position:relative}
th.sortable{cursor:pointer}th.sortable:hover{background:#e4e9ee}th[aria-sort=ascending]::after{content:" ▲"}
th[aria-sort=descending]::after{content:" ▼"}.note{color:#444;max-width:1100px}.missing{color:#8a4b00;
background:#fff7e6;border:1px solid #f0d9a8;padding:8px 12px;max-width:1100px}.grid{display:grid;
grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:10px}.fig{border:1px solid #eee;padding:4px}
.pass{color:#116611}.fail{color:#b00020}
"""

JS = r"""
function cellValue(td){const v=td.dataset.v;return v===undefined?null:parseFloat(v)}
function sortBy(th){
  const table=th.closest('table'),col=th.cellIndex,body=table.tBodies[0];
  const first=th.dataset.better==='up'?'descending':'ascending';
  const dir=th.getAttribute('aria-sort')===first?(first==='ascending'?'descending':'ascending'):first;
  table.querySelectorAll('th').forEach(h=>h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort',dir);
  const sign=dir==='ascending'?1:-1,rows=Array.from(body.rows);
  rows.sort((a,b)=>{
    const x=a.cells[col],y=b.cells[col],u=cellValue(x),w=cellValue(y);
    if(u!==null||w!==null){if(u===null)return 1;if(w===null)return -1;return sign*(u-w)}
    return sign*x.textContent.localeCompare(y.textContent)});
  rows.forEach(r=>body.appendChild(r));
}
function applyFilter(){
  const m=document.getElementById('f-model').value,t=document.getElementById('f-task').value;
  document.querySelectorAll('[data-model]').forEach(el=>{
    const show=(m===''||el.dataset.model===m)&&(t===''||el.dataset.task===t);el.hidden=!show});
  document.querySelectorAll('.plotly-graph-div').forEach(d=>{if(d.offsetParent)Plotly.Plots.resize(d)});
}
document.addEventListener('DOMContentLoaded',()=>{
  document.querySelectorAll('th.sortable').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
  document.querySelectorAll('.filters select').forEach(s=>s.addEventListener('change',applyFilter));
});
"""


@dataclass
class Section:
    """One (model, task) of the report: table.md's display table, the Markdown notes under it, and its runs."""

    model: str
    task: str
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    runs: pd.DataFrame | None = None


def inline(text: str) -> str:
    """Markdown's inline marks (``**bold**``, ```code```) as HTML, the rest escaped."""
    out = html.escape(str(text), quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def sort_value(text: str) -> float | None:
    """The number a cell shows first (a mean, an interval's low end, a count), None for text and "—"."""
    found = NUMBER.match(str(text).replace("*", "").strip())
    return float(found.group(0).replace(",", "").replace("−", "-")) if found else None


def table_html(frame: pd.DataFrame, *, row_attrs: list[str] | None = None) -> str:
    """A sortable table: each heading sorts its column (numbers by value, best first where the heading has ↑/↓)."""
    heads = []
    for name in frame.columns:
        better = "up" if str(name).endswith("↑") else "down" if str(name).endswith("↓") else ""
        heads.append(f'<th class="sortable" data-better="{better}" title="click to sort">{inline(name)}</th>')
    numeric = [all(sort_value(v) is not None or str(v).strip() in ("—", "") for v in frame[c]) for c in frame.columns]
    rows = []
    for i, values in enumerate(frame.itertuples(index=False)):
        cells = []
        for value, number in zip(values, numeric):   # a column of numbers sorts by value, any other as text
            found = sort_value(value) if number else None
            attr = "" if found is None else f' class="n" data-v="{found!r}"'
            cells.append(f"<td{attr}>{inline(value)}</td>")
        rows.append(f"<tr{row_attrs[i] if row_attrs else ''}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table><thead><tr>{"".join(heads)}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def markdown_html(text: str) -> str:
    """The Markdown the report and the verdict print (headings, paragraphs, bullets, pipe tables) as HTML."""
    out, lines = [], text.strip("\n").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split(" | ")])
                i += 1
            frame = pd.DataFrame(block[2:], columns=block[0])
            attrs = ([f' data-model="{html.escape(m)}" data-task="{html.escape(t)}"'
                      for m, t in zip(frame["Model"], frame["Task"])] if {"Model", "Task"} <= set(frame) else None)
            out.append(table_html(frame, row_attrs=attrs))
            continue
        heading = re.match(r"^(#{1,4}) (.*)", line)
        if heading:
            level = min(len(heading.group(1)) + 1, 4)
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{inline(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f'<p class="note">{inline(line)}</p>')
        i += 1
    return "\n".join(out).replace("</ul>\n<ul>", "")


def figure_html(name: str, fig: Any) -> str:
    """A plotly figure as a div (plotly.js is the page's, not the figure's), or the sentence why there is none."""
    if isinstance(fig, str):
        name = html.escape(name)
        return f'<div class="missing" data-missing="{name}"><b>{name}</b>: {inline(fig)}</div>'
    body = pio.to_html(fig, full_html=False, include_plotlyjs=False, config=CONFIG, default_height="420px")
    return f'<div class="fig" data-figure="{html.escape(name)}">{body}</div>'


def section_html(section: Section, choices: dict[str, dict[str, Any]], cat: Catalog) -> str:
    """One (model, task): heading, table, notes, figures."""
    figs = html_figures.figures(section.runs, choices, cat)
    where = f'data-model="{html.escape(section.model)}" data-task="{html.escape(section.task)}"'
    parts = [f"<section {where}>", f"<h2>{html.escape(section.model)} · {html.escape(section.task)}</h2>",
             table_html(section.table), *(markdown_html(note) for note in section.notes), "<h3>Figures</h3>",
             '<div class="grid">', *(figure_html(name, fig) for name, fig in figs.items()), "</div></section>"]
    return "\n".join(parts)


def failed_html(runs: pd.DataFrame) -> str:
    """The runs that did not succeed, each with its error and log, filtered with the rest."""
    failed = runs[runs["status"] != "success"]
    if failed.empty:
        return ""
    rows = failed[["model", "task", "method", "seed", "status", "error", "log_path"]].fillna("").astype(str)
    rows["error"] = rows["error"].map(lambda e: e.replace("\n", " ")[:300])
    attrs = [f' data-model="{html.escape(m)}" data-task="{html.escape(t)}"'
             for m, t in zip(rows["model"], rows["task"])]
    return "<h2>Runs that did not succeed</h2>" + table_html(rows, row_attrs=attrs)


def select(name: str, values: list[str]) -> str:
    """A filter's select box: every value, or all."""
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    return f'<label>{name.capitalize()} <select id="f-{name}"><option value="">all</option>{options}</select></label>'


def page(*, title: str, runs: pd.DataFrame, sections: list[Section], choices: dict[tuple[str, str, str], Any],
         cat: Catalog, verdict: str | None = None) -> str:
    """The whole page as one string."""
    counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="note">{len(runs)} runs: {counts}. Mean ± std over successful seeds; bold: the best of a '
            "column; ↑/↓: which way is better. Click a heading to sort (best first); hover a point for its run."
            "</p>",
            f'<div class="filters">{select("model", sorted(runs["model"].dropna().unique()))}'
            f'{select("task", sorted(runs["task"].dropna().unique()))}</div>']
    if verdict is not None:
        body.append(f'<section id="verdict">{markdown_html(verdict)}</section>')
    for s in sections:
        mine = {k[2]: c for k, c in choices.items() if k[:2] == (s.model, s.task)}
        body.append(section_html(s, mine, cat))
    body.append(failed_html(runs))
    plotly_js = f"<script>{get_plotlyjs()}</script>" if "plotly-graph-div" in "".join(body) else ""   # once
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style>{plotly_js}<script>{JS}</script></head>"
            f"<body>\n{chr(10).join(body)}\n</body></html>\n")


def write(path: Path, **kwargs: Any) -> Path:
    """Write the page (``page``'s keywords) atomically to ``path``; returns it."""
    write_atomic(Path(path), page(**kwargs))
    return Path(path)
