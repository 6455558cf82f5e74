"""Live mirrors of a run (conf/logger/: TensorBoard, MLflow, a CSV file): per-step loss, learning rate, fp16 loss
scale and throughput while it trains, learning-curve points as they are scored, the declared metrics at the end.

The result JSON stays the record: a tracker mirrors what the run computes and nothing reads it back. A tracker is
a small class that its YAML names by ``_target_`` (``open`` → ``log_step`` / ``log_curve_point`` → ``log_final``
→ ``close``), so the loop never asks which one runs; rank 0 alone writes. The ``logger`` section is left out of the
config hash (bench.core.results): it changes no number a run computes.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bench.core import metrics, results
from bench.core.errors import ConfigError
from bench.pipeline.distributed import sum_over_ranks
from bench.pipeline.engine_setup import loss_scale

log = logging.getLogger(__name__)

INSTALL = "pip install 'peftbench[trackers]' (or `make setup`, which installs the lock)"


class Tracker:
    """What a logger YAML's ``_target_`` builds: ``open`` at the run's start, then the three ``log_*`` calls, each a
    ``write(phase, step, values)`` (phase: train, curve or final; names ``<phase>/<value>``) in the library's own
    writer, and ``close`` with the run's status. ``requires``: the packages it imports."""

    requires: tuple[str, ...] = ()

    def open(self, config: dict[str, Any], out_dir: Path) -> None:
        """Start writing; ``config`` is the resolved run config."""
        raise NotImplementedError

    def write(self, phase: str, step: int, values: dict[str, float]) -> None:
        """Values at a step (optimizer steps done, from 1)."""
        raise NotImplementedError

    def close(self, status: str) -> None:
        """Stop writing; ``status``: success or failed."""
        raise NotImplementedError

    def log_step(self, step: int, values: dict[str, float]) -> None:
        """One optimizer step's values."""
        self.write("train", step, values)

    def log_curve_point(self, step: int, values: dict[str, float]) -> None:
        """One learning-curve point."""
        self.write("curve", step, values)

    def log_final(self, step: int, values: dict[str, float]) -> None:
        """The declared metrics, at the last step."""
        self.write("final", step, values)


class Trackers:
    """The run's trackers called as one. ``enabled`` is the same on every rank (a logger is configured), so every
    rank takes part in the sums the streamed losses need; the trackers themselves exist on rank 0 only."""

    def __init__(self, sinks: list[Tracker], *, enabled: bool) -> None:
        self.sinks, self.enabled = sinks, enabled

    def log_step(self, step: int, values: dict[str, float]) -> None:
        """One optimizer step's values (step counts from 1: the steps done)."""
        for sink in self.sinks:
            sink.log_step(step, values)

    def log_curve_point(self, step: int, values: dict[str, float]) -> None:
        """One learning-curve point, as it is scored."""
        for sink in self.sinks:
            sink.log_curve_point(step, values)

    def log_final(self, step: int, values: dict[str, float]) -> None:
        """The declared metrics the run measured, at its last step."""
        for sink in self.sinks:
            sink.log_final(step, values)

    def stream(self, engine: Any, *, every: int, clock: Callable[[], float]) -> StepStream:
        """The per-step feed ``bench.pipeline.train.fit`` fills; ``clock()``: training seconds so far."""
        return StepStream(self, engine, every=every, clock=clock)


NONE = Trackers([], enabled=False)


def _classes(logger_cfg: Any) -> dict[str, type]:
    """Each configured tracker's class, its packages checked: a missing one fails the run at its start, on every
    rank, instead of silently mirroring nothing."""
    from hydra.utils import get_class

    found = {}
    for name, node in (logger_cfg or {}).items():
        if not (hasattr(node, "get") and node.get("_target_")):
            raise ConfigError(f"logger.{name}: needs a `_target_` (a tracker class, e.g. "
                              "bench.pipeline.trackers.TensorBoard); see conf/logger/")
        try:
            cls = get_class(str(node["_target_"]))
        except Exception as err:  # noqa: BLE001  (hydra wraps the import error in its own)
            raise ConfigError(f"logger.{name}._target_={node['_target_']}: not a class ({err})") from err
        missing = [pkg for pkg in getattr(cls, "requires", ()) if importlib.util.find_spec(pkg) is None]
        if missing:
            raise ConfigError(f"logger.{name} needs {', '.join(missing)}, which is not installed: {INSTALL}; "
                              "or drop the logger (logger=none)")
        found[name] = cls
    return found


@contextlib.contextmanager
def opened(logger_cfg: Any, *, config: dict[str, Any], out_dir: Path, rank: int) -> Iterator[Trackers]:
    """The run's trackers, open while the run works; closed with its status ("success" or "failed")."""
    from hydra.utils import instantiate

    classes = _classes(logger_cfg)
    sinks: list[Tracker] = []
    status = "failed"
    try:
        for name in classes if rank == 0 else ():
            sink = instantiate(logger_cfg[name])
            sink.open(config, Path(out_dir))
            sinks.append(sink)
        if sinks:
            log.info("live logging to: %s", ", ".join(classes))
        yield Trackers(sinks, enabled=bool(classes))
        status = "success"
    finally:
        for sink in sinks:
            try:
                sink.close(status)
            except Exception:
                if status == "success":
                    raise
                log.exception("closing %s after the run failed", type(sink).__name__)   # the run's error goes on


def mirrored(probe: Any, trackers: Trackers) -> Any:
    """The learning-curve probe (bench.pipeline.curve.Curve), each point it scores also sent to the trackers."""
    if probe is None or not trackers.sinks:
        return probe

    def scored(spent: dict[str, float]) -> bool:
        """Score a point, mirror it, say whether to stop."""
        stop = probe(spent)
        point = probe.points[-1]
        trackers.log_curve_point(int(point["step"]), {k: float(v) for k, v in point.items() if k != "step"})
        return stop

    return scored


def final_values(record: dict[str, Any]) -> dict[str, float]:
    """The declared metrics (the harness's and the task's, bench.core.metrics) that a result's sections hold."""
    task = record.get("task_info") or {}
    found = {}
    for m in metrics.catalog([task.get("metric_list") or []]).values():
        value = (record.get(m.section) or {}).get(m.key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[m.key] = float(value)
    return found


class StepStream:
    """Per-step values, sent to the trackers every ``every`` steps (and at the end): the loss is the result's
    ``loss_curve`` entry, from the same per-step sums over the ranks (one all-reduce per ``every`` steps, on every
    rank, only when a logger is configured); the learning rate and loss scale are the ones the step used."""

    def __init__(self, trackers: Trackers, engine: Any, *, every: int, clock: Callable[[], float]) -> None:
        self.trackers, self.engine, self.every, self.clock = trackers, engine, max(1, every), clock
        self.rows: list[torch.Tensor] = []   # per waiting step: ce sum, answer tokens, objective sum, tokens
        self.settings: list[tuple[list[float], float | None]] = []
        self.sent, self.sent_at = 0, 0.0
        self.upcoming = self._settings() if trackers.enabled else ([], None)

    def _settings(self) -> tuple[list[float], float | None]:
        """The learning rates (one per parameter group) and the fp16 loss scale the next step will use."""
        return [float(lr) for lr in self.engine.get_lr()], loss_scale(self.engine)

    def add(self, sums: torch.Tensor, tokens: int) -> None:
        """One optimizer step done: its [ce sum, answer tokens, objective sum] (on the device) and tokens fed."""
        if not self.trackers.enabled:
            return
        self.rows.append(torch.cat([sums, sums.new_tensor([float(tokens)])]))
        self.settings.append(self.upcoming)
        self.upcoming = self._settings()
        if len(self.rows) >= self.every:
            self.send()

    def send(self) -> None:
        """The waiting steps to the trackers (every rank calls this at the same steps: it sums over them)."""
        if not self.rows:
            return
        window = sum_over_ranks(torch.stack(self.rows)).cpu()
        now = self.clock()
        losses = (window[:, 0] / window[:, 1]).tolist()
        speed = float(window[:, 3].sum()) / max(now - self.sent_at, 1e-9)
        for i, (loss, (lrs, scale)) in enumerate(zip(losses, self.settings)):
            values = {"loss": loss, "lr": lrs[0], **{f"lr_group{g}": lr for g, lr in enumerate(lrs) if g}}
            if scale is not None:
                values["loss_scale"] = scale
            if i == len(losses) - 1:
                values["tokens_per_s"] = speed   # over the window these steps make up
            self.trackers.log_step(self.sent + i + 1, values)
        self.sent, self.sent_at = self.sent + len(losses), now
        self.rows, self.settings = [], []


def flat(config: dict[str, Any]) -> dict[str, str]:
    """A resolved config as dotted keys (bench.core.results.dotted) with their values as text (for a tracker's
    parameters)."""
    return {key: str(value) for key, value in results.dotted(config).items()}


class TensorBoard(Tracker):
    """Scalars ``train/…``, ``curve/…``, ``final/…`` through torch's SummaryWriter; a subfolder per run start, so
    a rerun in the same out_dir is its own run in TensorBoard instead of overlapping the last one's steps."""

    requires = ("tensorboard",)

    def __init__(self, *, log_dir: str, flush_secs: int = 10) -> None:
        self.log_dir, self.flush_secs = Path(log_dir), int(flush_secs)
        self.writer: Any = None

    def open(self, config: dict[str, Any], out_dir: Path) -> None:
        """A writer in ``log_dir/<start time>``, the config as text."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.log_dir / time.strftime("%Y%m%d-%H%M%S")),
                                    flush_secs=self.flush_secs)
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in flat(config).items()))

    def write(self, phase: str, step: int, values: dict[str, float]) -> None:
        """Scalars ``<phase>/<name>`` at the step; a curve point is flushed at once (it comes seldom)."""
        for key, value in values.items():
            self.writer.add_scalar(f"{phase}/{key}", value, step)
        if phase == "curve":
            self.writer.flush()

    def close(self, status: str) -> None:
        """The status as text, everything flushed."""
        self.writer.add_text("status", status)
        self.writer.close()


class MLflow(Tracker):
    """One MLflow run per benchmark run, through ``MlflowClient`` with an explicit tracking URI (never the
    process-global one): metrics ``train/…``, ``curve/…``, ``final/…``, the flat config as parameters."""

    requires = ("mlflow",)
    PARAM_CHARS = 6000   # MLflow's longest parameter value; the result JSON keeps the whole config

    def __init__(self, *, tracking_uri: str | None = None, experiment: str = "peftbench", run_name: str | None = None,
                 allow_file_store: bool = True) -> None:
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.allow_file_store = bool(allow_file_store)
        self.client: Any = None
        self.run_id: str | None = None

    def open(self, config: dict[str, Any], out_dir: Path) -> None:
        """The client, the experiment (made where missing), a new run with the config as parameters."""
        from mlflow import MlflowClient
        from mlflow.entities import Param

        uri = self.tracking_uri or (Path(out_dir).resolve() / "mlruns").as_uri()
        with file_store_allowed(self.allow_file_store):
            self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
        params = [Param(re.sub(r"[^\w\-. /]", "_", k), v[: self.PARAM_CHARS]) for k, v in flat(config).items()]
        for start in range(0, len(params), 100):   # MLflow's batch limit
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        log.info("mlflow: run %s in %s (experiment %s)", self.run_id, uri, self.experiment)

    def write(self, phase: str, step: int, values: dict[str, float]) -> None:
        """Metrics ``<phase>/<name>`` at the step, in one batch."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"{phase}/{k}", float(v), stamp, step)
                                                    for k, v in values.items()])

    def close(self, status: str) -> None:
        """The MLflow run ends FINISHED or FAILED, as the benchmark run did."""
        self.client.set_terminated(self.run_id, "FINISHED" if status == "success" else "FAILED")


@contextlib.contextmanager
def file_store_allowed(allowed: bool) -> Iterator[None]:
    """MLflow 3 refuses a ``file://`` tracking store unless ``MLFLOW_ALLOW_FILE_STORE=true`` (the store is in
    maintenance mode; a database store needs the full ``mlflow`` package, not mlflow-skinny). The opt-in holds
    while the client builds its store, which MLflow then keeps per URI; other stores ignore it."""
    key = "MLFLOW_ALLOW_FILE_STORE"
    if not allowed or key in os.environ:
        yield
        return
    os.environ[key] = "true"
    try:
        yield
    finally:
        os.environ.pop(key, None)


class CsvFile(Tracker):
    """One long CSV, a row per value: phase (train | curve | final), step, metric, value; flushed as it goes, so
    ``tail -f`` or pandas can read it while the run trains. A rerun in the same out_dir replaces it."""

    requires = ()
    FIELDS = ("phase", "step", "metric", "value")

    def __init__(self, *, path: str) -> None:
        self.path = Path(path)
        self.file: Any = None
        self.writer: csv.DictWriter | None = None

    def open(self, config: dict[str, Any], out_dir: Path) -> None:
        """The file and its header."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        self.writer.writeheader()

    def write(self, phase: str, step: int, values: dict[str, float]) -> None:
        """A row per value, flushed."""
        self.writer.writerows({"phase": phase, "step": step, "metric": k, "value": repr(float(v))}
                              for k, v in values.items())
        self.file.flush()

    def close(self, status: str) -> None:
        """The file closed (the run's status is the result JSON's)."""
        self.file.close()
