"""Live loggers (conf/logger/): one real run streams to TensorBoard, MLflow and a CSV at once, and each tracker's own
reader finds the result JSON's numbers at their steps; the logger never changes what identifies a run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench.core import results
from bench.core.errors import ConfigError
from bench.pipeline import engine_setup, trackers
from bench.run import execute
from bench.sweeping import grid as sweep_grid
from bench.sweeping import launching
from tests.conftest import CONF, ROOT, compose_cfg
from tests.test_bad_inputs import save_random_tiny

STEPS, LOG_EVERY, CURVE_EVERY = 10, 4, 5   # windows of 4, 4 and a last one of 2; one curve point, at step 5


class NeedsMissing:
    """A tracker whose package is not installed."""

    requires = ("peftbench_no_such_package",)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[warnings.WarningMessage]]:
    """One short run with every logger at once (a random tiny ``local`` model: no base to build); its out_dir,
    its result and the warnings it raised."""
    model = save_random_tiny(tmp_path_factory.mktemp("local_model"))
    out = tmp_path_factory.mktemp("logged") / "run"
    cfg = compose_cfg(*model, "logger=[tensorboard,mlflow,csv]", f"out_dir={out}", f"train.steps={STEPS}",
                      f"train.log_every={LOG_EVERY}", f"eval.curve.every={CURVE_EVERY}", "eval.curve.records=4",
                      "train.micro_batch_size=8", "eval.max_records=4", "task.max_new_tokens=8",
                      "forgetting.measure=none", "eval.latency.records=4", "eval.latency.new_tokens=4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert execute(cfg) == 0
    return out, json.loads((out / "result.json").read_text()), caught


def expected_steps(result: dict[str, Any]) -> dict[str, dict[int, float]]:
    """What every tracker must hold, from the result JSON: the loss per step, the learning rate each step used
    (the schedule's), the curve's points and the final metrics."""
    train, cfg = result["train_info"], result["run_info"]["config"]
    factor = engine_setup.lr_lambda(STEPS, warmup_ratio=cfg["train"]["warmup_ratio"], schedule=cfg["train"]["schedule"])
    want = {"train/loss": dict(enumerate(train["loss_curve"], start=1)),
            "train/lr": {s: cfg["method"]["lr"] * factor(s - 1) for s in range(1, STEPS + 1)}}
    for point in train["curve"]["points"]:
        for key, value in point.items():
            if key != "step":
                want.setdefault(f"curve/{key}", {})[point["step"]] = value
    for key in ("final_loss", "eval_loss", "trainable_params", train["curve"]["metric"]):
        section = train if key in train else result["eval_info"]
        want[f"final/{key}"] = {STEPS: section[key]}
    return want


def check(found: dict[str, dict[int, float]], result: dict[str, Any], *, rel: float) -> None:
    """``found`` (tag → step → value, as a tracker's reader gives it) holds the result's numbers at their steps."""
    for tag, values in expected_steps(result).items():
        assert tag in found, f"{tag} missing; found {sorted(found)}"
        assert sorted(found[tag]) == sorted(values), tag
        for step, value in values.items():
            assert found[tag][step] == pytest.approx(value, rel=rel, abs=1e-12), (tag, step)
    assert sorted(found["train/tokens_per_s"]) == [4, 8, 10] and min(found["train/tokens_per_s"].values()) > 0
    assert "train/loss_scale" not in found, "fp32 on CPU has no loss scale"


def test_tensorboard_holds_the_results_numbers(streamed) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, result, _ = streamed
    (run_dir,) = (out / "tensorboard").iterdir()    # one subfolder per run start
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    found = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    check(found, result, rel=1e-6)    # TensorBoard stores float32


def test_mlflow_holds_the_results_numbers(streamed, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    out, result, _ = streamed
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")    # as docs/loggers.md tells a reader of a file store
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("peftbench").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["method.name"] == "lora"
    history = {key: client.get_metric_history(run.info.run_id, key) for key in run.data.metrics}
    found = {key: {m.step: m.value for m in metrics} for key, metrics in history.items()}
    check(found, result, rel=1e-15)


def test_csv_holds_the_results_numbers(streamed) -> None:
    out, result, _ = streamed
    found: dict[str, dict[int, float]] = {}
    with (out / "metrics.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            found.setdefault(f"{row['phase']}/{row['metric']}", {})[int(row["step"])] = float(row["value"])
    check(found, result, rel=1e-15)


def test_the_loggers_raise_no_warnings(streamed) -> None:
    """MLflow 3's file store is opted into (MLFLOW_ALLOW_FILE_STORE) rather than warned or refused."""
    messages = [f"{w.category.__name__}: {w.message} ({w.filename})" for w in streamed[2]
                if any(lib in w.filename for lib in ("mlflow", "tensorboard"))]
    assert not messages, messages


def test_the_logger_is_not_part_of_what_identifies_a_run() -> None:
    plain = OmegaConf.to_container(compose_cfg(), resolve=True)
    assert plain["logger"] == {}                                   # logger=none, the default
    bare = {k: v for k, v in plain.items() if k != "logger"}
    assert results.config_hash(plain) == results.config_hash(bare)
    logged = OmegaConf.to_container(compose_cfg("logger=[tensorboard,mlflow,csv]"), resolve=True)
    assert results.config_hash(logged) == results.config_hash(bare)
    assert results.config_hash(OmegaConf.to_container(compose_cfg("train.steps=7"), resolve=True)) != \
        results.config_hash(bare)


def test_a_sweep_passes_the_logger_to_every_cell_and_resumes_across_it(tmp_path: Path) -> None:
    def sweep(*extra: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("sweep", overrides=[f"sweep_dir={tmp_path}", "methods=[lora,full]", *extra])

    plain, logged = sweep(), sweep("extra=['logger=csv']")
    cells = sweep_grid.grid(logged)
    assert all("logger=csv" in sweep_grid.run_overrides(logged, c, c.out_dir(tmp_path)) for c in cells)
    assert sweep_grid.compose_cell(logged, cells[0]).logger.csv._target_ == "bench.pipeline.trackers.CsvFile"
    hashes = sweep_grid.check_grid(plain, cells)[1]
    assert sweep_grid.check_grid(logged, cells)[1] == hashes       # a finished cell is not rerun for a logger
    done = tmp_path / "result.json"
    results.write_json(done, {"run_info": {"status": "success", "config_hash": hashes[("tiny_llama", "triples_synth",
                                                                                      "lora")]}})
    assert sweep_grid.is_done(done, sweep_grid.check_grid(logged, cells)[1][("tiny_llama", "triples_synth", "lora")])


def test_a_logger_whose_package_is_missing_fails_the_run_at_its_start(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = compose_cfg(f"out_dir={out}", "+logger.mine._target_=tests.test_loggers.NeedsMissing")
    assert execute(cfg) == 2                                        # invalid, before any model loads
    record = json.loads((out / "result.json").read_text())
    info = record["run_info"]
    assert info["status"] == "invalid" and "peftbench_no_such_package" in info["error"]
    assert trackers.INSTALL in info["error"] and "train_info" not in record and not (out / "adapter").exists()
    with pytest.raises(ConfigError, match="needs a `_target_`"):
        trackers._classes({"mine": {"log_dir": "x"}})


def test_a_failed_run_ends_its_mlflow_run_failed_and_the_csv_keeps_what_came(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    cfg = compose_cfg(f"out_dir={tmp_path}", "logger=[mlflow,csv]")
    with pytest.raises(RuntimeError, match="boom"):
        with trackers.opened(cfg.logger, config={"seed": 0}, out_dir=tmp_path, rank=0) as live:
            live.log_step(1, {"loss": 2.5})
            raise RuntimeError("boom")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("peftbench").experiment_id])
    assert run.info.status == "FAILED" and run.data.metrics == {"train/loss": 2.5}
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["phase,step,metric,value", "train,1,loss,2.5"]
    with trackers.opened(cfg.logger, config={}, out_dir=tmp_path / "rank1", rank=1) as live:   # rank 0 alone writes
        assert live.enabled and not live.sinks
    assert not (tmp_path / "rank1").exists()
    record = {"train_info": {"final_loss": 1.5, "steps": 3, "mem_kind": "rss", "eval_loss": float("nan")}}
    assert trackers.final_values(record) == {"final_loss": 1.5}   # declared metrics only, numbers only


class Recorder(trackers.Tracker):
    """A tracker that keeps what it gets."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, dict[str, float]]] = []

    def write(self, phase: str, step: int, values: dict[str, float]) -> None:
        self.rows.append((phase, step, values))


class Fp16Engine:
    """What a StepStream reads of a DeepSpeed engine under fp16: two parameter groups' learning rates, the loss
    scale; ``step()`` moves both as the schedule and an overflow would."""

    def __init__(self) -> None:
        self.lrs, self.optimizer = [1e-3, 1e-2], type("Optimizer", (), {"loss_scale": 2.0**16})()

    def get_lr(self) -> list[float]:
        return list(self.lrs)

    def fp16_enabled(self) -> bool:
        return True

    def step(self) -> None:
        self.lrs = [lr / 2 for lr in self.lrs]
        self.optimizer.loss_scale /= 2


def test_each_step_is_sent_with_the_lr_and_loss_scale_it_used() -> None:
    import torch

    engine, sink, clock = Fp16Engine(), Recorder(), iter([2.0, 3.0])
    live = trackers.Trackers([sink], enabled=True).stream(engine, every=2, clock=lambda: next(clock))
    for step in range(3):
        engine.step()                            # the optimizer step, then fit hands over its sums
        live.add(torch.tensor([6.0 + step, 3.0, 6.0 + step], dtype=torch.float64), 10)
    live.send()
    steps = [(step, values) for phase, step, values in sink.rows if phase == "train"]
    assert [s for s, _ in steps] == [1, 2, 3]
    assert [v["loss"] for _, v in steps] == [2.0, 7 / 3, 8 / 3]
    assert [(v["lr"], v["lr_group1"], v["loss_scale"]) for _, v in steps] == \
        [(1e-3, 1e-2, 2.0**16), (5e-4, 5e-3, 2.0**15), (2.5e-4, 2.5e-3, 2.0**14)]
    assert [v.get("tokens_per_s") for _, v in steps] == [None, 10.0, 10.0]   # 20 tokens in 2 s, then 10 in 1 s


def test_deepspeeds_autotuner_does_not_import_mlflow_but_the_logger_can():
    """Where mlflow is installed (logger=mlflow), ``import deepspeed`` would import it for the autotuner, 1.5 s of
    every process's start (bench/__init__.py); refused there only, mlflow still imports for the logger."""
    probe = ("import sys, bench, deepspeed; from deepspeed.autotuning import autotuner; "
             "print(autotuner.has_mlflow, 'mlflow' in sys.modules); import mlflow; print(mlflow.MlflowClient.__name__)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split()[-3:] == ["False", "False", "MlflowClient"], done.stderr[-2000:]


def test_the_launchers_processes_skip_the_autotuners_mlflow_and_run_the_sitecustomize_they_shadow(tmp_path):
    """The ``deepspeed`` runner and ``launch.py`` never import bench: a launched command's environment
    (``launching.env``) starts them with bench/core/startup/sitecustomize.py, which refuses the same import (2.8 s of
    a cell) and then runs a ``sitecustomize`` it shadows, here one later on PYTHONPATH."""
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['SHADOWED_SITECUSTOMIZE_RAN'] = '1'\n")
    env = launching.env({**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(launching.STARTUP), str(ROOT), str(tmp_path)]
    probe = ("import os, sys, deepspeed.launcher.runner; from deepspeed.autotuning import autotuner; "
             "print(autotuner.has_mlflow, 'mlflow' in sys.modules, 'bench' in sys.modules, "
             "os.environ.get('SHADOWED_SITECUSTOMIZE_RAN'))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.split()[-4:] == ["False", "False", "False", "1"], done.stderr[-2000:]
