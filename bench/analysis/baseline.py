"""A sweep's summary for regression tracking: per (model, task, method) metric stats and a fingerprint.

``summarize_sweep`` turns a sweep folder into entries (built on bench.analysis.tables's rows, so a run is read
one way everywhere); ``pack`` makes the committed baseline (results/baselines/<name>.json) compact by
hoisting whatever every entry shares (most of the config, package versions, device, git SHA) to the
top; ``unpack`` undoes it. bench.compare compares two such entry lists.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench.analysis import tables
from bench.core import metrics, results

log = logging.getLogger(__name__)

FORMAT = 3   # 3: entries carry their task's metric declaration (task_metrics, primary_metric)
# Config keys that say where a run lives (or is mirrored: logger), not what it computes. The config hash keeps
# cache_dir, so configs are diffed key by key instead of by hash; the base itself is checked by its key.
LOCATION_KEYS = ("seed", "out_dir", "cache_dir", "logger")
FINGERPRINT = ("config_hash", "base_key", "world_size", "precision", "git_sha", "git_dirty", "device", "gpu_name",
               "versions")


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config as dotted keys (``train.steps``), location keys left out, lists kept whole."""
    flat = results.dotted({k: v for k, v in config.items() if k not in LOCATION_KEYS})
    out_dir = config.get("out_dir")
    if out_dir:     # paths derived from the run's folder (as bench.core.results.config_hash does)
        flat = {k: v.replace(str(out_dir), "<out_dir>") if isinstance(v, str) else v for k, v in flat.items()}
    return flat


def run_extra(record: dict[str, Any]) -> dict[str, Any]:
    """The columns bench.analysis.tables's rows lack: the flat config and the run's fingerprint.

    World size and the resolved training precision (``deepspeed.precision=auto`` is fp16 on a GPU, fp32 on CPU)
    are not in the config but change what the run computes: the fingerprint carries them for bench.compare.
    """
    run, meta = record.get("run_info") or {}, record.get("meta_info") or {}
    fingerprint = {"config_hash": run.get("config_hash"), "base_key": (record.get("base_info") or {}).get("key"),
                   "world_size": meta.get("world_size"), "precision": (record.get("train_info") or {}).get("precision"),
                   "git_sha": run.get("git_sha"), "git_dirty": run.get("git_dirty"),
                   "device": meta.get("device"), "gpu_name": meta.get("gpu_name"), "versions": meta.get("versions")}
    return {"_config": flat_config(run.get("config") or {}), "_fingerprint": fingerprint}


def merged(values: Iterable[Any]) -> Any:
    """One value where the seeds agree, else every distinct value (so a mixed entry shows it)."""
    distinct: list[Any] = []
    for value in values:
        if value not in distinct:
            distinct.append(value)
    return distinct[0] if len(distinct) == 1 else distinct


def _number(value: float) -> float | None:
    """A float for JSON: NaN (no value, or std of one seed) becomes null."""
    return None if value is None or math.isnan(value) else float(value)


def metric_stats(row: pd.Series, seeds: int, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Mean, std (null for one seed) and n of each of ``keys`` the entry recorded."""
    stats = {}
    for key in keys:
        mean = _number(row[f"{key}_mean"])
        if mean is not None:
            stats[key] = {"mean": mean, "std": _number(row[f"{key}_std"]), "n": seeds}
    return stats


def summarize_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """One entry per (model, task, method) with a successful seed; the others are logged and left out."""
    runs = tables.load_runs(Path(sweep_dir), extra=run_extra)
    keys = [*metrics.task_keys(runs), *metrics.BENCH]
    summary = tables.summarize(runs, keys=keys)
    groups = dict(list(runs.groupby(tables.KEYS, sort=False)))
    entries = []
    for _, row in summary.iterrows():
        group = groups[(row["model"], row["task"], row["method"])]
        ok = group[group["status"] == "success"]
        if ok.empty:
            log.warning("%s/%s/%s: no successful seed (%s)", row["model"], row["task"], row["method"], row["status"])
            continue
        configs = list(ok["_config"])
        if any(c != configs[0] for c in configs):
            log.warning("%s/%s/%s: seeds ran different configs; the first is recorded",
                        row["model"], row["task"], row["method"])
        entries.append({
            "model": row["model"], "task": row["task"], "method": row["method"], "status": row["status"],
            "seeds": sorted(int(s) for s in ok["seed"]), "config": configs[0],
            "fingerprint": {k: merged(fp[k] for fp in ok["_fingerprint"]) for k in FINGERPRINT},
            "primary_metric": merged(ok["primary_metric"]),
            "task_metrics": json.loads(ok["task_metrics"].dropna().iloc[0]) if ok["task_metrics"].notna().any() else [],
            "metrics": metric_stats(row, len(ok), keys),
        })
    return entries


def _shared(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The items every dict has with the same value."""
    if not dicts:
        return {}
    return {k: v for k, v in dicts[0].items() if all(k in d and d[k] == v for d in dicts[1:])}


def pack(entries: list[dict[str, Any]], *, name: str, sweep_dir: str) -> dict[str, Any]:
    """The baseline document: shared config and fingerprint at the top, each entry keeps the rest."""
    config = _shared([e["config"] for e in entries])
    fingerprint = _shared([e["fingerprint"] for e in entries])
    packed = [{**e, "config": {k: v for k, v in e["config"].items() if k not in config},
               "fingerprint": {k: v for k, v in e["fingerprint"].items() if k not in fingerprint}}
              for e in entries]
    cat = metrics.catalog(e["task_metrics"] for e in entries)
    directions = {k: "higher" if m.higher_is_better else "lower" for k, m in cat.items()}
    return {"format": FORMAT, "name": name, "sweep_dir": sweep_dir,
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "directions": directions, "fingerprint": fingerprint, "config": config, "entries": packed}


def unpack(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Entries of a baseline document with the shared config and fingerprint merged back in."""
    if doc.get("format") != FORMAT:
        raise ValueError(f"baseline format {doc.get('format')!r}, this code reads {FORMAT}: rebuild it")
    return [{**e, "config": {**doc["config"], **e["config"]}, "fingerprint": {**doc["fingerprint"], **e["fingerprint"]}}
            for e in doc["entries"]]


def load(path: Path) -> list[dict[str, Any]]:
    """The entries of a baseline file."""
    return unpack(json.loads(Path(path).read_text()))
