"""Per-method learning-rate search on the validation split, before a sweep's cells (``sweep=tuned``).

For each (model, task, method) of the grid, one launched process (``python -m bench.search``, the sweep's
``search_cmd``) trains a candidate at each learning rate ``search.lr_factors`` × the method's own (its YAML's,
after overrides) and scores it on the **validation** split (``eval.split=validation``: the candidates never
read the test split). The best by the task's declared primary metric (ties: the lower validation loss, then
the rate nearer the YAML's) is written to ``<sweep_dir>/search/<model>/<task>/<method>/choice.json`` with
every candidate's score and what the search cost, and the method's cells train at it, per seed, and are
scored once on test. A grid over a log scale, not an optimizer: with 5 points per method the whole curve is
the result (the report's sensitivity figure), and it is what the method comparisons we follow report.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

import bench  # noqa: F401  (registers config resolvers)
from bench.core import results

log = logging.getLogger(__name__)


def candidates(lr: float, factors: list[float]) -> list[float]:
    """The learning rates tried: the method's own times each factor, to three significant digits."""
    return [float(f"{lr * float(f):.3g}") for f in factors]


def folder(lr: float) -> str:
    """A candidate's folder name."""
    return f"lr{lr:g}"


def candidate_cfg(cfg: DictConfig, lr: float) -> DictConfig:
    """One candidate's run config: the rate, scored on validation, no test-time measurements."""
    one = copy.deepcopy(cfg)
    with open_dict(one):
        one.method.lr, one.eval.split, one.search_lrs = lr, "validation", None
        one.forgetting.measure = "none"
        one.out_dir = str(Path(str(cfg.out_dir)) / folder(lr))
    return one


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Train and score every candidate of ``search_lrs`` in this process, one after another; exit 0 when all
    succeeded (each records its own result.json either way)."""
    from bench import run
    from bench.models import kbit

    kbit.leave_bitsandbytes_out([cfg.get("quantization")])
    lrs = [float(x) for x in (cfg.search_lrs or [])]
    if not lrs:
        log.error("bench.search needs search_lrs=[…], the learning rates to try")
        sys.exit(2)
    codes = []
    for i, lr in enumerate(lrs, 1):
        log.info("candidate %d/%d: method=%s lr=%g", i, len(lrs), cfg.method.name, lr)
        codes.append(run.execute(candidate_cfg(cfg, lr)))
    bench.exit_now(0 if not any(codes) else 1)


def score_of(result: dict[str, Any]) -> tuple[float, float] | None:
    """(primary metric signed so that higher is better, minus the validation loss) of a successful candidate."""
    if (result.get("run_info") or {}).get("status") != "success":
        return None
    if result["eval_info"].get("split") != "validation":
        raise ValueError(f"a candidate scored on {result['eval_info'].get('split')}: a search chooses on the "
                         "validation split only (its candidates run with eval.split=validation)")
    task = result["task_info"]
    spec = next(m for m in task["metric_list"] if m["metric"] == task["primary_metric"])
    value = float(result["eval_info"][task["primary_metric"]])
    return (value if spec["higher_is_better"] else -value), -float(result["train_info"]["eval_loss"])


def choose(rows: list[dict[str, Any]], yaml_lr: float) -> dict[str, Any] | None:
    """The best candidate: primary metric, then validation loss, then the rate nearest the YAML's (log scale)."""
    ok = [r for r in rows if r["rank_key"] is not None]
    if not ok:
        return None
    return max(ok, key=lambda r: (*r["rank_key"], -abs(math.log(r["lr"] / yaml_lr))))


def collect(out: Path, lrs: list[float]) -> list[dict[str, Any]]:
    """Every candidate's record, as the choice and the report read it."""
    rows = []
    for lr in lrs:
        path = out / folder(lr) / "result.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            result = {"run_info": {"status": "missing", "error": f"no result at {path}"}}
        run, train = result.get("run_info") or {}, result.get("train_info") or {}
        task = result.get("task_info") or {}
        rows.append({"lr": lr, "status": run.get("status"), "error": run.get("error"), "rank_key": score_of(result),
                     "metric": task.get("primary_metric"),
                     "value": (result.get("eval_info") or {}).get(task.get("primary_metric", ""), None),
                     "eval_loss": train.get("eval_loss"), "train_time_s": train.get("train_time_s"),
                     "wall_time_s": run.get("wall_time_s")})
    return rows


def key_of(cell_hash: str, lrs: list[float], overrides: list[str]) -> str:
    """What a choice depends on: the cell's config (with its own lr), the candidates and their overrides."""
    return hashlib.sha256(json.dumps([cell_hash, lrs, overrides]).encode()).hexdigest()[:16]


def decide(out: Path, *, lrs: list[float], yaml_lr: float, key: str, world: int, wall: float) -> dict[str, Any]:
    """Read the candidates, choose, and write ``choice.json`` beside them (``wall``: the search process's wall
    seconds, launch included, which is what the search cost); returns it."""
    rows = collect(out, lrs)
    best = choose(rows, yaml_lr)
    scored = {(r["value"], r["eval_loss"]) for r in rows if r["rank_key"] is not None}
    if len(scored) == 1 and len(rows) > 1:
        log.warning("%s: every candidate scored the same (%s): the method's learning rate changes nothing; do its "
                    "param_groups fix every rate? (write them relative to method.lr: ${times:${method.lr},10})",
                    out, scored.pop())
    choice = {"key": key, "yaml_lr": yaml_lr, "chosen_lr": best["lr"] if best else None,
              "metric": next((r["metric"] for r in rows if r["metric"]), None), "split": "validation",
              "candidates": [{k: v for k, v in r.items() if k != "rank_key"} for r in rows], "runs": len(rows),
              "cost_s": wall, "device_s": world * wall,
              "candidates_s": sum(r["wall_time_s"] or 0.0 for r in rows)}
    results.write_json(out / "choice.json", choice)
    return choice


def reusable(out: Path, key: str) -> dict[str, Any] | None:
    """A choice made earlier for the same config, candidates and overrides (resume), else None."""
    try:
        choice = json.loads((out / "choice.json").read_text())
    except (OSError, ValueError):
        return None
    return choice if choice.get("key") == key and choice.get("chosen_lr") is not None else None


def as_overrides(lrs: list[float]) -> str:
    """``search_lrs`` as a Hydra override."""
    return f"search_lrs=[{','.join(f'{lr:g}' for lr in lrs)}]"


def phase(cfg: DictConfig, cells: list[Any], root: Path, *, hashes: dict[tuple[str, ...], str],
          blocked: dict[Any, str | None], launch: Any) -> dict[str, str]:
    """Search every (model, task, method) of the grid (reusing earlier choices); fills ``cfg.tuned_lr`` and
    returns, per "model|task|method" whose search found nothing, why. ``launch(cmd, log_path)`` runs a search
    process (the sweep's ``search_cmd`` before ``cmd``); ``blocked`` holds the (model, task) pairs whose base
    did not build."""
    from bench.sweeping.grid import Cell, compose_cell, run_overrides, tuned_key, world_size

    errors, tuned, extra = {}, {}, [str(o) for o in cfg.search.overrides or []]
    for model, task, method in dict.fromkeys((c.model, c.task, c.method) for c in cells):
        label, cell = tuned_key(model, task, method), Cell(model, task, method, int(cfg.search.seed))
        yaml_lr = float(compose_cell(cfg, cell).method.lr)
        lrs = candidates(yaml_lr, list(cfg.search.lr_factors))
        out, key = root / "search" / model / task / method, key_of(hashes[(model, task, method)], lrs, extra)
        choice = reusable(out, key)
        if choice is None and blocked.get((model, task)):
            errors[label] = f"learning-rate search not run: {blocked[(model, task)]}"
            continue
        if choice is None:
            log.info("search %s (%s/%s): lr %s on validation, log %s", method, model, task,
                     ", ".join(f"{lr:g}" for lr in lrs), out / "search.log")
            began = time.perf_counter()
            launch([*run_overrides(cfg, cell, out), *extra, as_overrides(lrs)], out / "search.log")
            choice = decide(out, lrs=lrs, yaml_lr=yaml_lr, key=key, world=world_size(cfg),
                            wall=time.perf_counter() - began)
        if choice["chosen_lr"] is None:
            errors[label] = f"learning-rate search: no candidate succeeded; see {out / 'search.log'}"
            continue
        tuned[label] = choice["chosen_lr"]
        log.info("search %s (%s/%s): lr %g chosen (YAML %g), %s on validation %s", method, model, task,
                 choice["chosen_lr"], yaml_lr, choice["metric"],
                 ", ".join(f"{c['lr']:g}→{c['value'] if c['value'] is None else round(c['value'], 4)}"
                           for c in choice["candidates"]))
    with open_dict(cfg):
        cfg.tuned_lr = tuned
    return errors


if __name__ == "__main__":
    main()
