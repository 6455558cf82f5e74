"""The sweep's grid: its cells, each cell's overrides, and what resume reads from a cell's folder.

Every distinct cell composes before any runs (``check_grid``), so a typo fails in seconds and the config
hash each cell will record is known: resume skips a cell only when its recorded success has that hash.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import hydra
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

import bench  # noqa: F401  (registers config resolvers)
from bench.core import results
from bench.core.labels import method_order, parse_label
from bench.core.paths import CONF_DIR

log = logging.getLogger(__name__)



class SweepError(Exception):
    """The grid cannot run as configured (found before any cell starts)."""


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    model: str
    task: str
    method: str
    seed: int

    def out_dir(self, root: Path) -> Path:
        """Where the cell's result.json and run.log live."""
        return root / self.model / self.task / self.method / f"seed{self.seed}"

    def label(self) -> str:
        """How progress lines name the cell."""
        return f"{self.method} seed{self.seed} ({self.model}/{self.task})"


def as_list(value: Any) -> list[Any]:
    """A grid axis: a list, or one value (what a Hydra multirun job gets for a swept key)."""
    return list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else [value]


def shipped_methods() -> list[str]:
    """Every method YAML under conf/method/ (``_``-prefixed ones are shared parts), in the figures' order: one YAML
    adds a method to every sweep whose ``methods`` is ``all``."""
    return method_order(p.stem for p in (CONF_DIR / "method").glob("*.yaml") if not p.stem.startswith("_"))


def methods_of(cfg: DictConfig) -> list[str]:
    """The sweep's methods axis: ``all`` is every shipped method YAML."""
    return shipped_methods() if str(cfg.methods) == "all" else [str(m) for m in as_list(cfg.methods)]


def grid(cfg: DictConfig) -> list[Cell]:
    """The cells in run order: every method of a seed before the next seed, so partial sweeps tabulate."""
    return [Cell(str(model), str(task), method, int(seed))
            for model in as_list(cfg.models) for task in as_list(cfg.tasks)
            for seed in as_list(cfg.seeds) for method in methods_of(cfg)]


def common_overrides(cfg: DictConfig) -> list[str]:
    """Overrides every cell gets: the preset's, then the command line's."""
    return [str(o) for o in [*(cfg.cell_overrides or []), *(cfg.extra or [])]]


def tuned_key(model: str, task: str, method: str) -> str:
    """The key of a (model, task, method) in ``tuned_lr``, the learning rates a search chose."""
    return f"{model}|{task}|{method}"


def run_overrides(cfg: DictConfig, cell: Cell, out: Path) -> list[str]:
    """The Hydra overrides of one cell's ``bench.run``: the learning rate a search chose comes last."""
    own = [str(o) for o in (cfg.method_overrides or {}).get(cell.method, [])]
    tuned = (cfg.get("tuned_lr") or {}).get(tuned_key(cell.model, cell.task, cell.method))
    name, bits = parse_label(cell.method)       # lora@4bit: LoRA on a 4-bit base
    return [f"model={cell.model}", f"task={cell.task}", f"method={name}", f"seed={cell.seed}",
            *([f"quantization.bits={bits}"] if bits else []), f"out_dir={out}", *common_overrides(cfg), *own,
            *([f"method.lr={tuned}"] if tuned is not None else [])]


def run_info(result: Path) -> dict[str, Any]:
    """The recorded ``run_info`` ({} where there is no readable result)."""
    try:
        return dict(json.loads(result.read_text())["run_info"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def status_of(result: Path) -> str | None:
    """The recorded status, or None where there is no readable result."""
    return run_info(result).get("status")


def is_done(result: Path, expected_hash: str | None) -> bool:
    """A success of the config this sweep would run now (a record without a hash: its status alone)."""
    info = run_info(result)
    recorded, changed = info.get("config_hash"), False
    if info.get("status") == "success" and recorded and expected_hash and recorded != expected_hash:
        log.warning("%s succeeded with another config (hash %s, now %s): it runs again", result.parent,
                    recorded, expected_hash)
        changed = True
    return info.get("status") == "success" and not changed


@contextlib.contextmanager
def _hydra_ready() -> Iterator[None]:
    """Hydra's compose API, inside the app (already initialised) or outside it (tests)."""
    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            yield


def world_size(cfg: DictConfig) -> int:
    """The ranks each cell will run on: ``gpus`` per node, times the hosts of the hostfile where there is one."""
    from bench.sweeping import cluster

    return int(cfg.gpus) * (len(cluster.hosts(Path(str(cfg.hostfile)))) if cfg.get("hostfile") else 1)


def check_grid(cfg: DictConfig,
               cells: Sequence[Cell]) -> tuple[set[tuple[str, str]], dict[tuple[str, ...], str]]:
    """Compose every distinct cell before any runs (a typo fails in seconds).

    Returns the (model, task) pairs whose model is a tiny one (they need a base) and the config hash
    each (model, task, method) will record, which resume compares with the recorded one.
    """
    tiny, hashes = set(), {}
    for model, task, method in sorted({(c.model, c.task, c.method) for c in cells}):
        run_cfg = compose_cell(cfg, Cell(model, task, method, 0))
        resolved = OmegaConf.to_container(run_cfg, resolve=True)
        hashes[(model, task, method)] = results.config_hash(resolved, world_size=world_size(cfg))
        if run_cfg.model.source == "tiny":
            tiny.add((model, task))
    return tiny, hashes


def compose_cell(cfg: DictConfig, cell: Cell, *more: str) -> DictConfig:
    """The run config a cell gets (with ``more`` overrides after its own); a grid typo is a ``SweepError``."""
    overrides = [o for o in [*run_overrides(cfg, cell, cell.out_dir(Path(cfg.sweep_dir))), *more]
                 if not o.lstrip("+~").startswith("hydra")]
    with _hydra_ready():
        try:
            run_cfg = hydra.compose(config_name="config", overrides=overrides)
            OmegaConf.to_container(run_cfg, resolve=True)
        except Exception as err:  # noqa: BLE001  (Hydra raises several types; all mean "fix the grid")
            raise SweepError(f"method={cell.method} model={cell.model} task={cell.task} does not compose: "
                             f"{err}") from err
    return run_cfg
