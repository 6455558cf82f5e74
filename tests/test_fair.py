"""A fair comparison: the test split is read only by the final evaluation, a search chooses on validation alone,
budgets in tokens and seconds stop the run where they say, and learning curves are recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import search
from bench.pipeline import train, validate
from bench.run import execute
from bench.taskdata import splits


def run(cfg) -> dict:
    assert execute(cfg) == 0
    return json.loads((Path(cfg.out_dir) / "result.json").read_text())


@pytest.fixture
def reads(monkeypatch):
    """Every split the run loads, in order, with "fit" marking where training ended."""
    log: list[str] = []
    load, fit, check = splits.load, train.fit, validate.check

    def logged_load(task_cfg, split):
        log.append(f"{task_cfg.name}:{split}")
        return load(task_cfg, split)

    def logged_fit(*args, **kwargs):
        out = fit(*args, **kwargs)
        log.append("fit")
        return out

    def logged_check(cfg):
        log.append("check")
        out = check(cfg)
        log.append("checked")
        return out

    monkeypatch.setattr(splits, "load", logged_load)
    monkeypatch.setattr(train, "fit", logged_fit)
    monkeypatch.setattr(validate, "check", logged_check)
    return log


def test_the_test_split_is_read_only_after_training(tiny_cfg, reads):
    result = run(tiny_cfg("eval.curve.every=4", "eval.curve.records=8", "forgetting.measure=none"))
    # The pre-flight check parses every split it will use (a malformed test file fails in seconds, not after
    # training); after it, nothing reads the test split until training has ended.
    tests = [i for i, r in enumerate(reads) if r == "triples_synth:test" and i > reads.index("checked")]
    assert tests and min(tests) > reads.index("fit"), reads           # learning curves read validation only
    assert "triples_synth:validation" in reads[: reads.index("fit")]
    assert result["eval_info"]["split"] == "test" and len(result["train_info"]["curve"]["points"]) == 2


def test_a_validation_run_never_reads_the_test_split(tiny_cfg, reads):
    result = run(tiny_cfg("eval.split=validation", "forgetting.measure=none"))
    assert "triples_synth:test" not in reads, reads
    assert result["eval_info"]["split"] == "validation" and "infer_ms_adapter" not in result["eval_info"]
    assert result["task_info"]["splits"] == {"train": 256, "validation": 8}


def test_token_and_second_budgets_stop_the_run_and_are_recorded(tiny_cfg, tmp_path):
    tokens = run(tiny_cfg("train.budget.tokens=15000", "forgetting.measure=none", out=tmp_path / "tokens"))
    budget = tokens["train_info"]["budget"]
    spent = budget["spent"]
    per_step = spent["tokens"] / spent["steps"]
    assert budget["kind"] == "tokens" and budget["stopped_by"] == "tokens" and spent["steps"] < 12
    assert 15000 <= spent["tokens"] < 15000 + 2 * per_step                  # stopped at the budget, ± one step
    assert len(tokens["train_info"]["loss_curve"]) == spent["steps"] == budget["planned_steps"]
    timed = run(tiny_cfg("train.budget.seconds=1.0", "train.steps=400", "forgetting.measure=none",
                         out=tmp_path / "seconds"))
    budget = timed["train_info"]["budget"]
    per_step = budget["spent"]["seconds"] / budget["spent"]["steps"]
    assert budget["stopped_by"] == "seconds" and budget["spent"]["steps"] < 400
    assert 1.0 <= budget["spent"]["seconds"] < 1.0 + 2 * per_step


def _candidate(folder: Path, lr: float, *, value: float, loss: float, split: str = "validation") -> None:
    """A candidate's result.json as bench.search's process writes it."""
    path = folder / search.folder(lr) / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "run_info": {"status": "success", "wall_time_s": 3.0},
        "task_info": {"primary_metric": "f1_micro",
                      "metric_list": [{"metric": "f1_micro", "higher_is_better": True}]},
        "eval_info": {"f1_micro": value, "split": split}, "train_info": {"eval_loss": loss, "train_time_s": 2.0}}))


def test_the_choice_reads_validation_scores_only(tmp_path):
    lrs = [0.001, 0.003, 0.01]
    for lr, value, loss in zip(lrs, [0.2, 0.5, 0.5], [1.0, 0.9, 0.8]):
        _candidate(tmp_path, lr, value=value, loss=loss)
    choice = search.decide(tmp_path, lrs=lrs, yaml_lr=0.003, key="k", world=1, wall=10.0)
    assert choice["chosen_lr"] == 0.01                  # tie on F1: the lower validation loss wins
    assert json.loads((tmp_path / "choice.json").read_text())["runs"] == 3
    _candidate(tmp_path / "other", 0.001, value=0.9, loss=0.1, split="test")
    with pytest.raises(ValueError, match="scored on test"):
        search.collect(tmp_path / "other", [0.001])


def test_a_method_with_param_groups_moves_them_with_its_learning_rate():
    """A search sets method.lr only; VB-LoRA's groups are relative to it, so every candidate differs (before, all
    five trained at the same fixed rates and scored alike)."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_cfg

    groups = OmegaConf.to_container(compose_cfg("method=vblora", "method.lr=0.001").method.param_groups, resolve=True)
    assert [g["lr"] for g in groups] == [0.001, 0.01]
    default = OmegaConf.to_container(compose_cfg("method=vblora").method.param_groups, resolve=True)
    assert [g["lr"] for g in default] == [5.0e-3, 5.0e-2]            # the committed baseline's rates, unchanged
