"""Regression verdicts: a sweep against a committed baseline, per (model, task, method, metric).

    python -m bench.compare baseline SWEEP_DIR --name NAME          # → results/baselines/NAME.json
    python -m bench.compare compare SWEEP_DIR --baseline results/baselines/NAME.json [--force] [--noisy] [--html]

The rule (settings in conf/compare.yaml): a metric is unchanged while |delta| ≤ floor, with

    floor = max(abs, rel · |baseline mean|)      per metric: a task's declared ``tolerance``, or conf/compare.yaml

and beyond it "improved" or "regressed" by the metric's declared direction (the task's ``metric_list``, carried by
every result JSON and baseline entry, for its metrics; bench/core/metrics.py for the harness's) — but only where the
seeds can say so. Every row whose seeds measured a spread gets a two-sided p-value (bench.core.stats.welch_p): Welch's
t-test from mean, std and n when both sides have n ≥ 2; one seed against several uses the spread the other side
measured for both, t = delta / (s_other · sqrt(1/n_b + 1/n_c)) with n_other − 1 df (tag "noise of the n=3
side"). Those p-values are corrected over the whole table (``correction``: holm, the default, keeps the
chance of any false alarm in the table ≤ alpha whatever the rows' dependence; bh bounds the expected share of
false alarms instead; none tests each row alone), and a row beyond its floor changes only where its adjusted p
≤ alpha. Rows without a spread (one seed a side, or seeds that agree exactly: on CPU a fixed seed gives
bit-identical quality and losses, std 0) get no p-value and the floor alone decides, so a rounding difference
between machines is no regression while a real shift of a deterministic row shows with one seed. Times, memory and
speed vary run to run at a fixed seed (metrics.py marks them ``noisy``): they are left out of verdicts unless
``--noisy``, and then judged against wide relative floors. One seed on a GPU against a CPU baseline (or the
reverse) is said above the table: its seed-to-seed noise is unmeasured, and the CPU floors assume none.

Refused (exit 2) unless ``--force``: entries whose resolved configs differ in anything but where they
live (seed, out_dir, cache_dir; the differing keys are named), or that differ in what the config does not
say but the run computes: the tiny base (``base_info.key``), the world size (``meta_info.world_size``: 8
ranks see 8x the data per step) or the resolved precision (``train_info.precision``). Where the package versions
alone moved the tiny base's key, the refusal says "the libraries changed, not the config" and names them. Other
differences of package versions, device or git SHA are shown, not refused: they are what a regression check is for.
Exit: 0 nothing regressed, 1 something regressed or went missing. ``--html`` also writes SWEEP_DIR/report/report.html
again (bench.analysis.html_report) with this verdict as its first section; a later ``make report`` writes the page
without it.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bench.analysis import baseline
from bench.analysis.verdicts import FAILING, Row, markdown
from bench.core import environment, metrics, stats
from bench.core.labels import method_order
from bench.core.paths import CONF_DIR
from bench.core.results import write_json

log = logging.getLogger(__name__)

RULES = CONF_DIR / "compare.yaml"
BASELINES = Path("results/baselines")
NOTED = ("git_sha", "git_dirty", "device", "gpu_name")
# Fingerprint keys that change what a run computes (refused like a config difference), by where a run records them.
COMPUTED = {"base_key": "base_info.key", "world_size": "meta_info.world_size", "precision": "train_info.precision"}
GPU_NOTE = ("one seed on a GPU: seed-to-seed noise unmeasured; run ≥ 3 seeds (make sweep SEEDS=[0,1,2]) or give this "
            "device its own baseline")
ROUNDING = 1e-9    # a std under this share of |mean| is the rounding of identical seeds' mean and std, not spread
CORRECTED = {"holm": "Holm-adjusted", "bh": "Benjamini–Hochberg-adjusted", "none": "unadjusted"}


def load_rules(path: Path = RULES) -> dict[str, Any]:
    """The verdict settings (alpha, correction, noisy, per-metric floors) as a plain dict, checked before use."""
    rules = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if rules.get("correction", "holm") not in stats.CORRECTIONS:
        raise ValueError(f"{path}: correction {rules['correction']!r} unknown; use one of "
                         f"{', '.join(stats.CORRECTIONS)}")
    if not 0.0 < float(rules.get("alpha", 0.05)) < 1.0:
        raise ValueError(f"{path}: alpha {rules['alpha']!r} must lie in (0, 1), e.g. 0.05")
    return rules


def floor_of(m: metrics.Metric, base: dict[str, Any], rules: dict[str, Any]) -> float:
    """The largest |delta| that is never a change, whatever the seeds say (float drift between machines).

    The rules' default, over it the task's declared ``tolerance`` for its metric, over that the rules' entry for the
    metric (conf/compare.yaml overrides a task's declaration).
    """
    declared = {"abs": m.floor[0], "rel": m.floor[1]} if m.floor else {}
    tol = {**rules["tolerance"]["default"], **declared, **rules["tolerance"].get(m.key, {})}
    return max(float(tol.get("abs", 0.0)), float(tol.get("rel", 0.0)) * abs(base["mean"]))


def noise_test(base: dict[str, Any], cur: dict[str, Any]) -> tuple[float, str]:
    """Two-sided p of the delta against the spread the seeds measured, and the rule's tag; (NaN, "tol") where they
    measured none (one seed a side, or seeds that agree exactly), so the floor alone decides."""
    b, c = measured_spread(base), measured_spread(cur)
    p = stats.welch_p(cur["mean"], c, cur["n"], mean_b=base["mean"], std_b=b, n_b=base["n"])
    if math.isnan(p):
        return p, "tol"
    if base["n"] >= 2 and cur["n"] >= 2:
        return p, "noise"
    return p, f"noise of the n={max(base['n'], cur['n'])} side"


def measured_spread(side: dict[str, Any]) -> float:
    """The seeds' std, 0 where they agree up to rounding (pandas' std of three equal floats may be 1e-17)."""
    std = side["std"] or 0.0
    return std if std > ROUNDING * abs(side["mean"]) else 0.0


def judge(m: metrics.Metric, delta: float, allowed: float) -> str:
    """unchanged within ``allowed`` (plus float slack), else improved or regressed by the metric's direction."""
    if abs(delta) <= allowed + 1e-12 * max(1.0, abs(allowed)):
        return "unchanged"
    return "improved" if delta * m.sign > 0 else "regressed"


def corrected(rows: list[Row], rules: dict[str, Any]) -> list[Row]:
    """Rows with their p adjusted over every tested row of the table; a change beyond the floor stands only where
    the adjusted p ≤ alpha, so a table of many noisy rows does not raise false alarms by sheer number."""
    alpha = float(rules.get("alpha", 0.05))
    tested = {str(i): r.p for i, r in enumerate(rows) if not math.isnan(r.p)}
    adj = stats.adjusted(tested, method=rules.get("correction", "holm"))
    out = []
    for i, row in enumerate(rows):
        if str(i) in adj:
            kept = row.verdict == "unchanged" or adj[str(i)] <= alpha
            row = replace(row, p_adj=adj[str(i)], verdict=row.verdict if kept else "unchanged")
        out.append(row)
    return out


def judged_metrics(rules: dict[str, Any], noisy: bool, cat: metrics.Catalog) -> list[metrics.Metric]:
    """The metrics a verdict covers: the task's declared ones first, then the harness's deterministic ones, the
    noisy ones when asked."""
    ordered_keys = sorted(cat, key=lambda k: k in metrics.BENCH)
    return [cat[k] for k in ordered_keys if noisy or bool(rules.get("noisy")) or not cat[k].noisy]


def compare_entry(label: tuple[str, str, str], base: dict[str, Any], cur: dict[str, Any],
                  *, rules: dict[str, Any], noisy: bool) -> list[Row]:
    """One row per metric of one (model, task, method), each judged by the direction its task declares."""
    cat = metrics.catalog([base.get("task_metrics") or [], cur.get("task_metrics") or []])
    rows = []
    for m in judged_metrics(rules, noisy, cat):
        b, c = base["metrics"].get(m.key), cur["metrics"].get(m.key)
        if b is None and c is None:
            continue
        if b is None or c is None:
            rows.append(Row(label, m.key, b, c, verdict="new" if b is None else "missing", spec=m))
            continue
        floor = floor_of(m, b, rules)
        p, rule = noise_test(b, c)
        rows.append(Row(label, m.key, b, c, floor, rule, judge(m, c["mean"] - b["mean"], floor), spec=m, p=p))
    return rows


def label_of(entry: dict[str, Any]) -> tuple[str, str, str]:
    """(model, task, method) of an entry."""
    return entry["model"], entry["task"], entry["method"]


def ordered(labels: set[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Entries by model, task, then methods in the figures' order."""
    rank = {m: i for i, m in enumerate(method_order(m for _, _, m in labels))}
    return sorted(labels, key=lambda x: (x[0], x[1], rank[x[2]]))


def compare(base: list[dict[str, Any]], cur: list[dict[str, Any]], rules: dict[str, Any], *,
            noisy: bool = False) -> list[Row]:
    """Every row of the verdict: matched entries metric by metric (tests corrected over them all), missing and new
    entries whole."""
    b, c = {label_of(e): e for e in base}, {label_of(e): e for e in cur}
    rows: list[Row] = []
    for label in ordered(set(b) | set(c)):
        if label not in c:
            rows.append(Row(label, None, None, None, verdict="missing"))
        elif label not in b:
            rows.append(Row(label, None, None, None, verdict="new"))
        else:
            rows += compare_entry(label, b[label], c[label], rules=rules, noisy=noisy)
    return corrected(rows, rules)


def config_mismatches(base: list[dict[str, Any]], cur: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per entry on both sides: the config keys (and ``COMPUTED`` facts) whose values differ, as "key: old → new"."""
    c = {label_of(e): e for e in cur}
    found = {}
    for entry in base:
        other = c.get(label_of(entry))
        if other is None:
            continue
        old, new = entry["config"], other["config"]
        diffs = [f"{k}: {old.get(k, '(absent)')} → {new.get(k, '(absent)')}" for k in sorted(set(old) | set(new))
                 if old.get(k, "(absent)") != new.get(k, "(absent)")]
        old_fp, new_fp = entry["fingerprint"], other["fingerprint"]
        diffs += [f"{where}: {old_fp.get(key)} → {new_fp.get(key)}" for key, where in COMPUTED.items()
                  if old_fp.get(key) != new_fp.get(key)]
        if diffs:
            found["/".join(label_of(entry))] = diffs
    return found


def grouped(mismatched: dict[str, list[str]]) -> dict[str, list[str]]:
    """Differences every mismatched entry shares, said once ("every entry"), then each entry's own."""
    if len(mismatched) < 2:
        return mismatched
    shared = [d for d in next(iter(mismatched.values())) if all(d in ds for ds in mismatched.values())]
    own = {label: [d for d in ds if d not in shared] for label, ds in mismatched.items()}
    return {**({f"every entry ({len(mismatched)})": shared} if shared else {}), **{k: v for k, v in own.items() if v}}


def library_changes(base: list[dict[str, Any]], cur: list[dict[str, Any]]) -> list[str]:
    """The recorded package versions that differ between the two sides, as "package old → new"."""
    old_v, new_v = (baseline.merged(e["fingerprint"].get("versions") for e in side) for side in (base, cur))
    if isinstance(old_v, dict) and isinstance(new_v, dict):
        return [f"{pkg} {old_v.get(pkg)} → {new_v.get(pkg)}" for pkg in sorted(set(old_v) | set(new_v))
                if old_v.get(pkg) != new_v.get(pkg)]
    return [] if old_v == new_v else ["package versions differ between entries"]


def fingerprint_notes(base: list[dict[str, Any]], cur: list[dict[str, Any]]) -> list[str]:
    """What changed in the environment between the two (shown, never refused)."""
    notes = []
    for key in NOTED:
        old, new = (baseline.merged(e["fingerprint"].get(key) for e in side) for side in (base, cur))
        if old != new:
            notes.append(f"{key}: {old} → {new}")
    libraries = library_changes(base, cur)
    return notes + ([f"the libraries changed: {', '.join(libraries)}"] if libraries else [])


def refusal(mismatched: dict[str, list[str]], libraries: list[str]) -> str:
    """Why the two sides are not comparable: the libraries alone (the tiny base's key follows the versions that
    train it) or the config, each with its fix."""
    config = {label: [d for d in diffs if not d.startswith(f"{COMPUTED['base_key']}:")]
              for label, diffs in mismatched.items()}
    if libraries and not any(config.values()):
        return (f"the libraries changed, not the config: {', '.join(libraries)} (the tiny base is keyed by the "
                f"versions that train it, so it was rebuilt). Compare on the lock's versions ({environment.FIX}), "
                "or --force to judge the upgrade itself")
    lines = [f"  {label}: {'; '.join(diffs)}" for label, diffs in mismatched.items()]
    also = f"\n  (the libraries changed too: {', '.join(libraries)})" if libraries else ""
    return "refusing to compare runs of different configs (--force to compare anyway):\n" + "\n".join(lines) + also


def on_gpu(device: Any) -> bool:
    """A CUDA device, whose kernels are not bit-reproducible at a fixed seed."""
    return isinstance(device, str) and device.startswith("cuda")


def single_seed_gpu_notes(base: list[dict[str, Any]], cur: list[dict[str, Any]]) -> list[str]:
    """The caveat when one seed crossed between CPU and GPU: its noise is unmeasured, and CPU floors assume none."""
    b = {label_of(e): e for e in base}
    crossed = [e for e in cur if label_of(e) in b and len(e["seeds"]) == 1
               and on_gpu(e["fingerprint"].get("device")) != on_gpu(b[label_of(e)]["fingerprint"].get("device"))]
    return [f"{GPU_NOTE} ({len(crossed)} of {len(cur)} entries)"] if crossed else []


def test_note(rows: list[Row], rules: dict[str, Any]) -> list[str]:
    """How the rows with a measured spread were judged, since their p shows adjusted."""
    tested = sum(not math.isnan(r.p) for r in rows)
    if not tested:
        return []
    return [f"p: two-sided t-test over seeds, {CORRECTED[rules.get('correction', 'holm')]} over the {tested} rows "
            f"with a measured spread; beyond its floor such a row changes only where p ≤ {rules.get('alpha', 0.05)}"]


def cmd_baseline(args: argparse.Namespace) -> int:
    """Summarize a sweep into ``results/baselines/<name>.json``."""
    entries = baseline.summarize_sweep(args.sweep_dir)
    if not entries:
        log.error("no successful run under %s: nothing to record", args.sweep_dir)
        return 2
    path = args.out_dir / f"{args.name}.json"
    write_json(path, baseline.pack(entries, name=args.name, sweep_dir=str(args.sweep_dir)))
    log.info("baseline %s: %d entries (%s) from %s", path, len(entries),
             ", ".join(sorted({e["method"] for e in entries})), args.sweep_dir)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Print the verdict table; 1 when anything regressed or went missing, 2 when refused."""
    base, cur = baseline.load(args.baseline), baseline.summarize_sweep(args.sweep_dir)
    notes = fingerprint_notes(base, cur)
    mismatched = grouped(config_mismatches(base, cur))
    if mismatched:
        lines = [f"  {label}: {'; '.join(diffs)}" for label, diffs in mismatched.items()]
        if not args.force:
            log.error("%s", refusal(mismatched, library_changes(base, cur)))
            return 2
        log.warning("configs differ; comparing anyway (--force):\n%s", "\n".join(lines))
        notes = [f"**forced**, another config in {label}: {'; '.join(d)}" for label, d in mismatched.items()] + notes
    rules = load_rules(args.rules)
    rows = compare(base, cur, rules, noisy=args.noisy)
    notes += test_note(rows, rules) + single_seed_gpu_notes(base, cur)
    if not (args.noisy or rules.get("noisy")):
        notes.append("times, memory and speed are noisy and not judged (`--noisy` to judge them loosely)")
    title = f"Regression check: `{args.sweep_dir}` against `{args.baseline}`"
    text = markdown(rows, title=title, notes=notes, changed_only=args.changed)
    sys.stdout.write(text)
    if args.html:
        from bench.analysis import tables   # matplotlib and plotly: only for the page

        log.info("verdict written into %s, its first section", tables.write_html(args.sweep_dir, verdict=text))
    return 1 if any(r.verdict in FAILING for r in rows) else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The ``baseline`` and ``compare`` subcommands."""
    parser = argparse.ArgumentParser(description="Baselines of sweeps and regression verdicts against them.")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("baseline", help="summarize a sweep into results/baselines/<name>.json")
    make.add_argument("sweep_dir", type=Path)
    make.add_argument("--name", required=True, help="file name of the baseline (no .json)")
    make.add_argument("--out-dir", type=Path, default=BASELINES)
    check = sub.add_parser("compare", help="a sweep against a baseline: Markdown verdict, exit 1 on a regression")
    check.add_argument("sweep_dir", type=Path)
    check.add_argument("--baseline", type=Path, required=True)
    check.add_argument("--force", action="store_true", help="compare even when configs or the tiny base differ")
    check.add_argument("--noisy", action="store_true", help="also judge times, memory and speed (loosely)")
    check.add_argument("--changed", action="store_true", help="list only rows that are not unchanged")
    check.add_argument("--html", action="store_true",
                       help="also write SWEEP_DIR/report/report.html with this verdict as its first section")
    check.add_argument("--rules", type=Path, default=RULES, help="floors, alpha, correction (conf/compare.yaml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.compare {baseline,compare} …``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        return cmd_baseline(args) if args.command == "baseline" else cmd_compare(args)
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
