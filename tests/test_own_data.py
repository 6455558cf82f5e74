"""docs/own-data.md's command, run as pasted (at a tiny budget) on its shipped English files: it trains SmolLM2, its
rendered prompt is English, and its answers parse with the separator the page tells a user to pass."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from bench import free_port
from tests.conftest import ROOT, child_env, compose_cfg
from tests.test_smollm2 import CACHE, FILE, needs_model

PAGE = ROOT / "docs" / "own-data.md"
TINY_BUDGET = ["train.steps=2", "train.micro_batch_size=2", "train.log_every=1", "eval.max_records=4",
               "task.max_new_tokens=32", "eval.latency.records=2", "eval.latency.repeats=1",
               "eval.latency.new_tokens=4", "forgetting.measure=none"]


def docs_command() -> list[str]:
    """The page's one-run command, split as a shell splits it."""
    block = re.search(r"```bash\n(\.venv/bin/deepspeed [^\n]+)\n```", PAGE.read_text())
    assert block, "docs/own-data.md no longer shows its `.venv/bin/deepspeed …` command"
    return shlex.split(block.group(1))


def test_the_english_task_prompts_in_english_and_the_seed_prompt_is_one_override_away():
    files = ["task.data.train=docs/examples/faults_en_train.jsonl", "task.data.test=docs/examples/faults_en_test.jsonl",
             "task.data.fields={input:text,output:triples}", 'task.answer.separator=" | "']
    from bench.taskdata import encoding, splits

    english = compose_cfg("task=triples", *files).task
    record = splits.load(english, "train")[0]
    prompt = encoding.prompt_text(record, english, tokenizer=None)
    assert not re.search(r"[\u3000-\u9fff\uff00-\uffef]", prompt), prompt
    assert "head | relation | tail" in prompt and prompt.endswith("Answer:\n")
    assert encoding.prompt_text(record, compose_cfg("task=triples_zh", *files).task, tokenizer=None).endswith("答：")


@needs_model
@pytest.mark.slow
def test_the_docs_own_data_command_runs_as_pasted(tmp_path):
    cmd = docs_command()
    out = tmp_path / "own_data"
    assert cmd[0] == ".venv/bin/deepspeed" and "out_dir=results/runs/own_data" in cmd
    # a free rendezvous port: another test worker may be launching too (the page's command takes DeepSpeed's 29500)
    cmd = [str(ROOT / cmd[0]), "--master_port", str(free_port()), *[a for a in cmd[1:] if not a.startswith("out_dir=")],
           f"out_dir={out}",
           f"cache_dir={CACHE}", *TINY_BUDGET]
    done = subprocess.run(cmd, cwd=ROOT, env={**child_env(), "PEFTBENCH_CACHE": CACHE}, capture_output=True,
                          text=True, timeout=900)
    result = json.loads((out / "result.json").read_text())
    assert done.returncode == 0, result["run_info"].get("error") or done.stderr[-3000:]
    assert result["task_info"]["splits"] == {"train": 108, "test": 4}   # 10 % of train held out for validation
    assert result["run_info"]["config"]["task"]["answer"]["separator"] == " | "
    log = (out / "run.log").read_text()
    assert "Extract every triple from the text, one per line, as head | relation | tail." in log
    assert "答" not in log.split("the first training prompt", 1)[1][:2000]
    assert "train lora: step 2/2, loss" in log                     # the progress bar's record, in run.log
    assert "inference latency: " in log and "eval.latency.repeats=1" in log   # its cost, and the knob
    # make test's one SmolLM2 launch: the GGUF base is recorded and a fresh process reloading the saved adapter
    # onto it gives the same answers (the six-step learning check is in make test-models: tests/test_smollm2.py)
    assert result["base_info"]["gguf_file"].endswith(FILE)
    check = subprocess.run([sys.executable, "-m", "bench.reproduce", str(out), "--batch-size", "4"], cwd=ROOT,
                           env={**child_env(), "PEFTBENCH_CACHE": CACHE}, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
