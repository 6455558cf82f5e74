"""The sweep driver with a fake cell command: grid, overrides, resume, failure isolation, kill and rerun.

The real thing (deepspeed, tiny model) is the one slow test: ``pytest -m slow tests/test_sweep.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from bench import sweep
from bench.core import results
from bench.sweeping import grid as sweep_grid

ROOT = Path(__file__).resolve().parent.parent

# A stand-in for `deepspeed … bench.run`: records its call, then behaves by method name.
FAKE_CELL = '''
import json, os, sys, time
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:])
out, method = Path(args["out_dir"]), args["method"]
with open(os.environ["FAKE_CALLS"], "a") as fh:
    fh.write(json.dumps(args) + "\\n")
config = {"model": {"name": args["model"]}, "task": {"name": args["task"]}, "method": {"name": method}}
record = {"run_info": {"status": "running", "error": None, "seed": int(args["seed"]), "config": config}}
if method == "freeze":                                   # dies before writing anything
    sys.exit(3)
(out / "result.json").write_text(json.dumps(record))
if method in os.environ.get("FAKE_SLOW", "").split(","):
    time.sleep(60)
if method == "prompt_tuning":                            # records its own failure
    record["run_info"].update(status="failed", error="ValueError: bad prompt")
    (out / "result.json").write_text(json.dumps(record))
    sys.exit(1)
record["run_info"]["status"] = "success"
record["train_info"] = {"loss_curve": [2.0, 1.0], "trainable_params": 10, "peak_mem_bytes": 2**20,
                        "mem_kind": "cpu_peak_rss", "train_time_s": 1.0}
record["eval_info"] = {"f1_micro": 0.5, "f1_macro": 0.5, "latency_ms_p50": 1.0}
record["task_info"] = {"primary_metric": "f1_micro", "metric_list": [{"metric": "f1_micro", "higher_is_better": True},
                                                                     {"metric": "f1_macro", "higher_is_better": True}]}
(out / "result.json").write_text(json.dumps(record))
'''


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake cell script; its calls are logged to ``tmp_path/calls.jsonl``."""
    script = tmp_path / "fake_cell.py"
    script.write_text(FAKE_CELL)
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    return script


def calls(tmp_path: Path) -> list[dict[str, str]]:
    """The fake cell's invocations, in order."""
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sweep_cfg(tmp_path: Path, fake: Path, *overrides: str) -> DictConfig:
    """The real conf/sweep.yaml, pointed at ``tmp_path`` and the fake cell, without a base build."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("sweep", overrides=[f"sweep_dir={tmp_path / 'sweep'}", f"cell_cmd=[python,{fake}]",
                                           "base_cmd=null", "report=false", *overrides])


def status(tmp_path: Path, method: str, seed: int = 0) -> str | None:
    """The recorded status of one cell of the default model and task."""
    cell = tmp_path / "sweep" / "tiny_llama" / "triples_synth" / method / f"seed{seed}"
    return sweep_grid.status_of(cell / "result.json")


def test_grid_order_and_cell_overrides(tmp_path: Path, fake: Path) -> None:
    cfg = sweep_cfg(tmp_path, fake, "methods=[lora,full]", "seeds=[0,1]", "extra=['train.steps=5']",
                    "cell_overrides=['eval.max_records=8']", "method_overrides={lora:['method.lr=0.01']}")
    cells = sweep_grid.grid(cfg)
    assert [(c.method, c.seed) for c in cells] == [("lora", 0), ("full", 0), ("lora", 1), ("full", 1)]
    out = cells[0].out_dir(Path("S"))
    assert out == Path("S/tiny_llama/triples_synth/lora/seed0")
    assert sweep_grid.run_overrides(cfg, cells[0], out)[-3:] == ["eval.max_records=8", "train.steps=5",
                                                                 "method.lr=0.01"]
    assert "method.lr=0.01" not in sweep_grid.run_overrides(cfg, cells[1], out)
    one = sweep_cfg(tmp_path, fake, "methods=lora", "seeds=3")          # what a multirun job gets
    assert [(c.method, c.seed) for c in sweep_grid.grid(one)] == [("lora", 3)]
    assert sweep_cfg(tmp_path, fake, "sweep=smoke").methods == ["lora", "full"]
    for preset in sorted((ROOT / "conf" / "sweep").glob("*.yaml")):     # every shipped preset composes
        assert sweep_grid.grid(sweep_cfg(tmp_path, fake, f"sweep={preset.stem}"))


def test_slurm_launcher_config_composes(tmp_path: Path, fake: Path) -> None:
    # The compose API does not load plugins' configs by itself: importing the plugin's config module registers them.
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config", reason="pip install hydra-submitit-launcher")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("sweep", overrides=["hydra/launcher=slurm", "gpus=8"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 8


def test_words_after_double_dash_become_quoted_extra() -> None:
    words = ["train.steps=5", "task.train_file=my data/it's.json", "method.peft_config.target_modules=[q,v]"]
    argv = sweep.split_argv(["bench.sweep", "methods=[lora]", "--", *words])
    assert argv[:2] == ["bench.sweep", "methods=[lora]"]
    assert OverridesParser.create().parse_overrides([argv[2]])[0].value() == words
    assert sweep.split_argv(["x", "seeds=[1]"]) == ["x", "seeds=[1]"]


def test_an_unknown_method_stops_the_sweep_before_any_cell(tmp_path: Path, fake: Path) -> None:
    assert sweep.run_sweep(sweep_cfg(tmp_path, fake, "methods=[lora,lorra]")) == 2
    assert calls(tmp_path) == []


def test_the_hash_a_resume_compares_covers_the_sweeps_world_size(tmp_path: Path, fake: Path) -> None:
    cfg = sweep_cfg(tmp_path, fake, "methods=[lora]")
    cells = sweep_grid.grid(cfg)
    one = sweep_grid.check_grid(cfg, cells)[1]
    cfg.gpus = 8
    hosts = tmp_path / "hosts"
    hosts.write_text("# two nodes\nnode1 slots=8\nnode2 slots=8\n")
    eight = sweep_grid.check_grid(cfg, cells)[1]
    cfg.hostfile = str(hosts)
    assert sweep_grid.world_size(cfg) == 16 and sweep_grid.check_grid(cfg, cells)[1] != eight != one


def test_resume_skips_successful_cells_and_reruns_the_rest(tmp_path: Path, fake: Path) -> None:
    cfg = sweep_cfg(tmp_path, fake, "methods=[lora,full,adalora,vblora,freeze]")
    cells = sweep_grid.grid(cfg)
    cell_dirs = {c.method: c.out_dir(Path(cfg.sweep_dir)) for c in cells}
    _, hashes = sweep_grid.check_grid(cfg, cells)
    lora_hash = hashes[("tiny_llama", "triples_synth", "lora")]
    states = {"lora": ("success", lora_hash), "full": ("failed", None), "adalora": ("running", None),
              "vblora": ("success", "another-config")}
    for method, (state, config_hash) in states.items():
        record = {"run_info": {"status": state, "run_id": "old", "config_hash": config_hash}}
        results.write_json(cell_dirs[method] / "result.json", record)
    (cell_dirs["full"] / "stale_adapter.bin").write_text("from the failed attempt")
    assert sweep.run_sweep(cfg) == 1                                    # freeze (the fake) always fails
    assert [c["method"] for c in calls(tmp_path)] == ["full", "adalora", "vblora", "freeze"]
    assert json.loads((cell_dirs["lora"] / "result.json").read_text())["run_info"]["run_id"] == "old"
    assert not (cell_dirs["full"] / "stale_adapter.bin").exists()      # a rerun starts from a clean folder
    assert sweep.run_sweep(cfg) == 1 and [c["method"] for c in calls(tmp_path)][4:] == ["freeze"]   # only it


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path: Path, fake: Path) -> None:
    cfg = sweep_cfg(tmp_path, fake, "methods=[freeze,lora,prompt_tuning,full]", "report=true")
    assert sweep.run_sweep(cfg) == 1
    assert [c["method"] for c in calls(tmp_path)] == ["freeze", "lora", "prompt_tuning", "full"]
    assert [status(tmp_path, m) for m in ("freeze", "lora", "prompt_tuning", "full")] == \
        ["failed", "success", "failed", "success"]
    died = json.loads((tmp_path / "sweep/tiny_llama/triples_synth/freeze/seed0/result.json").read_text())
    assert "exited with code 3" in died["run_info"]["error"] and died["run_info"]["log_path"].endswith("run.log")
    table = (tmp_path / "sweep" / "report" / "table.md").read_text()
    assert "| freeze" in table and "ValueError: bad prompt" in table and "exited with code 3" in table
    assert len(list((tmp_path / "sweep" / "report" / "figures").glob("*.png"))) == 4


def test_the_base_is_built_once_per_model_and_task_with_pending_cells(tmp_path: Path, fake: Path) -> None:
    base = tmp_path / "fake_base.py"
    record = f"open({str(tmp_path / 'base_calls.txt')!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')"
    base.write_text(f"import sys\n{record}\n")
    cfg = sweep_cfg(tmp_path, fake, "methods=[lora,full]", "seeds=[0,1]", f"base_cmd=[python,{base}]",
                    "extra=['train.steps=5']")
    assert sweep.run_sweep(cfg) == 0
    built = (tmp_path / "base_calls.txt").read_text().splitlines()
    assert len(built) == 1 and "model=tiny_llama task=triples_synth" in built[0] and "train.steps=5" in built[0]
    assert sweep.run_sweep(cfg) == 0
    assert len((tmp_path / "base_calls.txt").read_text().splitlines()) == 1   # nothing pending: no base step


def run_cli(tmp_path: Path, fake: Path, *args: str, **popen: object) -> subprocess.Popen:
    """``python -m bench.sweep`` against the fake cell, in its own process group."""
    cmd = [sys.executable, "-m", "bench.sweep", f"sweep_dir={tmp_path / 'sweep'}", f"cell_cmd=[python,{fake}]",
           "base_cmd=null", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def test_cli_reports_progress_passes_overrides_and_exits_non_zero(tmp_path: Path, fake: Path) -> None:
    proc = run_cli(tmp_path, fake, "methods=[lora,freeze]", "report=false", "--", "train.steps=5",
                   "eval.max_records=8")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    assert "[1/2] lora seed0" in output and "ETA" in output
    assert "[2/2] freeze seed0 (tiny_llama/triples_synth): failed" in output
    assert all(c["train.steps"] == "5" and c["eval.max_records"] == "8" for c in calls(tmp_path))
    assert (tmp_path / "sweep" / "sweep.log").exists() and (tmp_path / "sweep" / ".hydra" / "config.yaml").exists()


def test_sigkill_of_the_process_group_then_rerun_completes_the_grid(tmp_path: Path, fake: Path) -> None:
    args = ("methods=[lora,full,adalora]", "report=false")
    proc = run_cli(tmp_path, fake, *args, env={**os.environ, "FAKE_SLOW": "full"})
    deadline = time.monotonic() + 60
    while status(tmp_path, "full") != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert [status(tmp_path, m) for m in ("lora", "full", "adalora")] == ["success", "running", None]

    rerun = run_cli(tmp_path, fake, *args)
    output, _ = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, output
    assert [c["method"] for c in calls(tmp_path)] == ["lora", "full", "full", "adalora"]
    assert [status(tmp_path, m) for m in ("lora", "full", "adalora")] == ["success"] * 3
    leftovers = [p for p in (tmp_path / "sweep").rglob("*") if p.name.startswith(".") and p.suffix == ".tmp"]
    assert leftovers == [] and len(list((tmp_path / "sweep").rglob("result.json"))) == 3


@pytest.mark.slow
def test_real_two_method_sweep_through_deepspeed(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("runs real training; select with -m slow")
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "-m", "bench.sweep", "sweep=smoke", f"sweep_dir={sweep_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for method in ("lora", "full"):
        cell = sweep_dir / "tiny_llama" / "triples_synth" / method / "seed0"
        record = json.loads((cell / "result.json").read_text())
        assert record["run_info"]["status"] == "success" and record["train_info"]["steps"] == 5
        assert record["eval_info"]["n"] == 8 and "success" in (cell / "run.log").read_text()
    table = (sweep_dir / "report" / "table.md").read_text()
    assert "| lora" in table and "| full" in table
    assert len(list((sweep_dir / "report" / "figures").glob("*.pdf"))) == 4
