"""Data-parallel ranks: disjoint batches, sharded evaluation, one result written by rank 0, counts summed over ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import free_port
from bench.pipeline import tinybase
from bench.taskdata import encoding, splits
from tests.conftest import ROOT, TINY, child_env, compose_cfg


def test_ranks_draw_disjoint_batches_that_cover_the_data():
    examples = [{"input_ids": [1] * (5 + i % 7), "labels": [1] * (5 + i % 7), "widths": [5 + i % 7]} for i in range(40)]
    first_pass = 40 // 4   # batches of 4

    def seen(rank: int, world: int) -> list[list[int]]:
        stream = encoding.batches(examples, encoding.BatchPlan(4, seed=3, group_by_length=True, rank=rank, world=world),
                                  pad_id=0)
        return [next(stream)["input_ids"].sum(dim=1).tolist() for _ in range(first_pass // world)]

    whole = seen(0, 1)
    shards = [seen(r, 2) for r in (0, 1)]
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]


@pytest.mark.slow
def test_two_ranks_train_and_rank_zero_writes(cache_dir, tmp_path):
    common = [*TINY, "method=lora", "train.steps=4", f"cache_dir={cache_dir}", f"out_dir={tmp_path / 'run'}"]
    tinybase.ensure(compose_cfg(*common))   # a multi-rank launch refuses to build a base (it would deadlock)
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**child_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.run", *common,
                                       f"hydra.run.dir={tmp_path / str(rank)}"],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["run_info"]["status"] == "success" and result["meta_info"]["world_size"] == 2
    train = result["train_info"]
    # Each rank trained 4 steps of 32 records on its own batches: the sum covers 8 batches of the data.
    assert train["train_tokens"] > 8 * 32 * 20 and len(train["loss_curve"]) == 4
    assert not (tmp_path / "1" / "result.json").exists()
    # Evaluation was sharded: each rank generated half, and rank 0 wrote every record's answer in order.
    for rank, log in enumerate(logs):
        assert f"generate (rank {rank} of 2)" in log
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    cfg = compose_cfg(*common)
    records = splits.load(cfg.task, "test")[: cfg.eval.max_records]
    assert result["eval_info"]["n"] == len(rows) == len(records) == 8
    assert [r["input"] for r in rows] == [r["input"] for r in records]


@pytest.mark.slow
def test_a_process_removes_deepspeeds_cpu_allreduce_buffer_when_it_exits():
    # The launcher sets LOCAL_SIZE; with it DeepSpeed's CPU accelerator maps ~66 MB in /dev/shm per process.
    env = {**child_env(), "LOCAL_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    code = ("from bench.pipeline import distributed; distributed.ensure_distributed(); "
            "print(distributed.shm_buffer(), distributed.shm_buffer().exists())")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    path, existed = done.stdout.splitlines()[-1].split()
    if existed != "True":
        pytest.skip("this DeepSpeed accelerator keeps no shared-memory all-reduce buffer")
    assert not Path(path).exists(), f"{path} outlived its process"
