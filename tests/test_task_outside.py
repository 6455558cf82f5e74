"""A task written outside tasks/ and conf/ — a module and a YAML in a temporary folder, with a metric of its own name
and direction — runs through a real two-method sweep; the table, LaTeX, CSV, primary-metric figure and the compare
verdict all show that metric, judged by its declared direction, with no edit to bench/ (docs/tasks.md "Adding a
task")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, child_env

MODULE = '''"""Count one letter in a string: a task that lives outside the repository."""

import random


def generate(task_cfg, *, n, seed):
    """Random strings of a-e; the answer is how often the task's letter occurs."""
    rng, letter = random.Random(seed), task_cfg.generator.letter
    texts = ["".join(rng.choice("abcde") for _ in range(rng.randint(3, 9))) for _ in range(n)]
    return [{"input": t, "output": str(t.count(letter))} for t in texts]


def prompt(record, task_cfg):
    """The question; the answer follows it."""
    return task_cfg.prompt_template.format(letter=task_cfg.generator.letter, **record)


def score(predictions, references, task_cfg):
    """Mean absolute error of the counts (an answer that is no number costs 10) and the share counted exactly."""
    errors = []
    for p, r in zip(predictions, references, strict=True):
        guess = p.strip()
        errors.append(abs(int(guess) - int(r)) if guess.isdigit() else 10)
    return {"count_error": sum(errors) / len(errors), "count_exact": errors.count(0) / len(errors)}
'''

YAML = '''name: letters
module: letter_count
data: {train: null, validation: null, test: null, holdout: null, fields: null, max_records: null}
generator: {letter: a, n_train: 256, n_validation: 8, n_test: 8, seed: 0}
prompt_template: "count {letter} in {input}="
prompt_init_text: count
chat_template: false
max_length: 32
max_new_tokens: 4
primary_metric: count_error
metric_list:
  - {metric: count_error, label: Count error, higher_is_better: false, bounds: [0, 10], tolerance: {abs: 0.01}}
  - {metric: count_exact, label: Counted exactly, higher_is_better: true, bounds: [0, 1]}
base_task:
  name: letters_source
  generator: {letter: b}
  pretrain: {steps: 40}
  min_score: null
'''
METHODS = ("lora", "prompt_tuning")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """The task written to a temporary folder, found through PEFTBENCH_CONF_PATH and PYTHONPATH; swept."""
    home = tmp_path_factory.mktemp("outside")
    (home / "conf" / "task").mkdir(parents=True)
    (home / "letter_count.py").write_text(MODULE)
    (home / "conf" / "task" / "letters.yaml").write_text(YAML)
    env = {**child_env(), "PYTHONPATH": f"{home}{os.pathsep}{ROOT}", "PEFTBENCH_CONF_PATH": f"file://{home / 'conf'}",
           "PEFTBENCH_CACHE": str(cache_dir)}
    out = home / "sweep"
    cmd = [sys.executable, "-m", "bench.sweep", f"methods=[{','.join(METHODS)}]", "tasks=[letters]",
           f"sweep_dir={out}", "--", "train.steps=8", "train.log_every=4", "eval.latency.records=4",
           "eval.latency.repeats=1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, env, len(MODULE.splitlines()) + len(YAML.splitlines())


def test_the_report_shows_the_declared_metric(sweep):
    out, _, lines = sweep
    report = out / "report"
    table = (report / "table.md").read_text()
    assert "Count error ↓" in table and "Counted exactly ↑" in table and "Primary metric: Count error" in table
    assert "F1" not in table                                            # nothing of the triple task leaks in
    assert r"Count error $\downarrow$" in (report / "table.tex").read_text()
    header = (report / "runs.csv").read_text().splitlines()[0].split(",")
    assert {"count_error", "count_exact"} <= set(header) and "f1_micro" not in header
    figure = report / "figures" / "count_error_vs_params-tiny_llama-letters.png"
    assert figure.stat().st_size > 10_000
    for method in METHODS:
        record = json.loads((out / "tiny_llama" / "letters" / method / "seed0" / "result.json").read_text())
        assert record["task_info"]["primary_metric"] == "count_error"
        assert 0 <= record["eval_info"]["count_error"] <= 10
    assert lines < 60                                                   # the whole task, module and YAML


def _compare(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.compare", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_compare_judges_the_metric_by_its_declared_direction(sweep, tmp_path):
    out, env, _ = sweep
    made = _compare(env, "baseline", out, "--name", "letters", "--out-dir", tmp_path)
    assert made.returncode == 0, made.stderr
    same = _compare(env, "compare", out, "--baseline", tmp_path / "letters.json")
    assert same.returncode == 0 and "| lora | Count error ↓ |" in same.stdout.replace("tiny_llama | letters | ", "")
    worse = tmp_path / "worse"
    shutil.copytree(out, worse, ignore=shutil.ignore_patterns("report", "*.safetensors"))
    for method, delta in zip(METHODS, (+1.0, -1.0)):    # lora counts worse, prompt tuning better
        path = worse / "tiny_llama" / "letters" / method / "seed0" / "result.json"
        record = json.loads(path.read_text())
        record["eval_info"]["count_error"] += delta
        path.write_text(json.dumps(record))
    verdict = _compare(env, "compare", worse, "--baseline", tmp_path / "letters.json", "--changed")
    rows = {line.split("|")[3].strip(): line for line in verdict.stdout.splitlines() if "Count error" in line}
    assert verdict.returncode == 1, verdict.stdout
    assert (rows["lora"].rstrip(" |").endswith("**regressed**")
            and rows["prompt_tuning"].rstrip(" |").endswith("improved"))
