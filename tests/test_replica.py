"""``model.source=replica``: a published shape (scaled down here) with random weights, trained through the real path
without a download or a tiny base, every result marked as meaningless for quality."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from bench.models import replica
from bench.pipeline import validate
from bench.run import execute
from tests.conftest import compose_cfg

# LLaMA-2-7B's YAML with its shape scaled down: 2 layers, hidden 64 (head size 16), its vocabulary of 32000 rows.
SMALL = ["model=llama2_7b", "model.source=replica", "model.dtype=float32", "model.shape.num_hidden_layers=2",
         "model.shape.hidden_size=64", "model.shape.intermediate_size=128", "model.shape.num_attention_heads=4",
         "model.shape.num_key_value_heads=4", "model.shape.max_position_embeddings=512"]
BUDGET = ["train.steps=3", "train.log_every=1", "train.micro_batch_size=8", "task.generator.n_train=64",
          "eval.max_records=4", "eval.latency.records=2", "eval.latency.repeats=1", "task.max_new_tokens=8",
          "forgetting.measure=none"]


def llama_params(*, hidden: int, inter: int, layers: int, vocab: int, kv_heads: int, heads: int) -> int:
    """A LLaMA's parameter count from its shape: embeddings and head untied, RMSNorm weights only."""
    kv = hidden // heads * kv_heads
    block = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter + 2 * hidden
    return 2 * vocab * hidden + layers * block + hidden


def test_replica_trains_offline_without_a_tiny_base_and_is_marked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"a replica run opened a connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)   # Python-level connections: the hub, urllib
    cfg = compose_cfg(*SMALL, *BUDGET, "method=lora", f"cache_dir={tmp_path / 'cache'}", f"out_dir={tmp_path / 'run'}")
    assert execute(cfg) == 0, (tmp_path / "run" / "result.json").read_text()[-2000:]
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["run_info"]["status"] == "success", record["run_info"]["error"]
    base = record["base_info"]
    assert base["replica"] is True and base["quality_meaningful"] is False and base["vocab_rows"] == 32000
    expected = llama_params(hidden=64, inter=128, layers=2, vocab=32000, kv_heads=4, heads=4)
    assert base["params"] == expected == record["train_info"]["total_params"] - record["train_info"]["trainable_params"]
    assert not (tmp_path / "cache" / "bases").exists()   # the tiny base stage never ran
    assert len(record["train_info"]["loss_curve"]) == 3


def test_replica_is_the_published_shape_on_the_meta_device():
    cfg = compose_cfg("model=codellama_34b", "model.source=replica", "model.dtype=float32")
    validate.check(cfg)
    tok = replica.tokenizer(cfg)
    config = replica.config(cfg.model, tok)
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads, config.vocab_size) == \
        (8192, 48, 8, 32000)
    assert llama_params(hidden=8192, inter=22016, layers=48, vocab=32000, kv_heads=8, heads=64) / 1e9 == \
        pytest.approx(33.74, rel=0.005)


@pytest.mark.parametrize(("overrides", "match"), [
    (["model=chatglm_6b"], r"no such section with a model_type"),
    (["model=llama2_7b", "model.shape.vocab_size=8"], r"model\.shape\.vocab_size=8 is smaller"),
    (["model=llama2_7b", "quantization.bits=4"], r"quantization\.bits=null"),
])
def test_replica_refusals_name_the_field(overrides, match):
    cfg = compose_cfg(*overrides, "model.source=replica", "model.dtype=float32", "model.trust_remote_code=false")
    with pytest.raises(validate.ConfigError, match=match):
        validate.check(cfg)
        replica.config(cfg.model, replica.tokenizer(cfg))


def test_report_marks_replica_rows(tmp_path):
    from bench.analysis import tables

    run = Path(tmp_path) / "sweep" / "llama2_7b" / "triples_synth" / "lora" / "seed0"
    run.mkdir(parents=True)
    record = {"run_info": {"status": "success", "seed": 0, "config": {"model": {"name": "llama2_7b"},
                                                                      "task": {"name": "triples_synth"},
                                                                      "method": {"name": "lora"}}},
              "train_info": {"train_time_s": 1.0}, "eval_info": {"split": "test"},
              "base_info": {"replica": True, "quality_meaningful": False}}
    (run / "result.json").write_text(json.dumps(record))
    runs = tables.load_runs(tmp_path / "sweep")
    text = tables.markdown(runs, tables.summarize(runs), "t", tables.metrics.catalog_of(runs))
    assert "llama2_7b (replica)" in text and "random weights" in text
