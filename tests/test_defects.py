"""Regression tests of defects found in review: each failed before its fix (unit level, no training)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench import compare
from bench.analysis import baseline
from bench.core import results
from bench.models import chartok, checks, dtypes, loading
from bench.pipeline import tinybase, validate
from bench.taskdata import encoding
from tasks import triples
from tests.conftest import CONF, compose_cfg
from tests.test_compare import make_baseline, write_sweep

SHA = re.compile(r"[0-9a-f]{40}")
VOCAB = ["<pad>", "a", "b"]


# 1. What a run computes beyond its config (the world size) is in the config hash and the fingerprint.

def test_config_hash_covers_the_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"train": {"steps": 10}, "seed": 0, "out_dir": "/tmp/x"}
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = results.config_hash(config)                      # bench.run's call, outside a launch
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert results.config_hash(config) == alone
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert results.config_hash(config) != alone              # 8 ranks see 8x the data at the same train.steps
    assert results.config_hash(config, world_size=1) == alone


def set_world(sweep: Path, world: int) -> Path:
    """Every result JSON of a fake sweep says it ran on ``world`` ranks."""
    for path in sweep.rglob("result.json"):
        record = json.loads(path.read_text())
        record["meta_info"]["world_size"] = world
        path.write_text(json.dumps(record))
    return sweep


def test_compare_refuses_another_world_size(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            caplog: pytest.LogCaptureFixture) -> None:
    base_file = make_baseline(tmp_path, set_world(write_sweep(tmp_path / "before"), 1))
    assert "world_size" in baseline.FINGERPRINT
    code = compare.main(["compare", str(set_world(write_sweep(tmp_path / "after"), 8)), "--baseline", str(base_file)])
    assert code == 2 and "meta_info.world_size: 1 → 8" in caplog.text
    assert compare.main(["compare", str(set_world(write_sweep(tmp_path / "same"), 1)),
                         "--baseline", str(base_file)]) == 0


# 2. The tiny base's key covers everything its build reads.

BUILD_INPUTS = ["train.schedule=linear", "train.warmup_ratio=0.2", "train.grad_clip=0.5", "eval.batch_size=8",
                "+deepspeed.extra.gradient_clipping=0.1", "task.max_new_tokens=32", "task.prompt_template='{input}:'"]


@pytest.mark.parametrize("override", BUILD_INPUTS)
def test_base_key_covers_what_the_build_reads(override: str) -> None:
    assert tinybase.base_key(compose_cfg(override), VOCAB) != tinybase.base_key(compose_cfg(), VOCAB)


def test_base_key_covers_the_deepspeed_json_contents(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text('{"gradient_clipping": 0.5}')
    cfg = compose_cfg(f"deepspeed.json_file={path}")
    first = tinybase.base_key(cfg, VOCAB)
    path.write_text('{"gradient_clipping": 0.1}')
    assert tinybase.base_key(cfg, VOCAB) != first
    assert tinybase.deepspeed_section(cfg.deepspeed).extra.gradient_clipping == 0.1   # and the build applies the file


def test_base_key_ignores_what_the_build_does_not_read() -> None:
    assert tinybase.base_key(compose_cfg("train.steps=7", "method=full", "seed=3"), VOCAB) == \
        tinybase.base_key(compose_cfg(), VOCAB)


# 3. Remote code runs only from the repository and commit a reviewed YAML pins.

HUB_FP16 = ["model=chatglm_6b", "deepspeed=fp16"]   # the precision a GPU run's auto picks, for float16 weights


def test_remote_code_yamls_pin_a_commit() -> None:
    for path in sorted((CONF / "model").glob("*.yaml")):
        model = compose_cfg(f"model={path.stem}").model
        assert "revision" in model, path.name
        if model.trust_remote_code:
            assert SHA.fullmatch(str(model.revision)), path.name


@pytest.mark.parametrize("override,field", [("model.path=evil/repo", "model.path=evil/repo"),
                                            (f"model.revision={'0' * 40}", "model.revision=" + "0" * 40),
                                            ("model.revision=main", "model.revision=main")])
def test_remote_code_model_cannot_be_redirected(override: str, field: str) -> None:
    validate.check(compose_cfg(*HUB_FP16))
    with pytest.raises(validate.ConfigError, match=re.escape(field)) as err:
        validate.check(compose_cfg(*HUB_FP16, override))
    assert "chatglm_6b.yaml" in str(err.value)


def test_remote_code_yaml_without_a_revision_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "my_glm.yaml").write_text(
        "name: my_glm\nsource: hub\npath: THUDM/chatglm-6b\ntrust_remote_code: true\nrevision: null\n")
    monkeypatch.setattr(checks, "CONF_DIR", tmp_path)
    cfg = compose_cfg(*HUB_FP16, "model.name=my_glm", "model.revision=null")
    with pytest.raises(validate.ConfigError, match=r"model\.revision=None.*commit sha"):
        validate.check(cfg)


def test_load_pretrained_passes_the_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class Fake:
        pad_token, eos_token = None, "</s>"

        @classmethod
        def from_pretrained(cls, path: str, **kwargs: Any) -> Fake:
            calls.append(kwargs)
            return cls()

    monkeypatch.setattr(loading, "AutoTokenizer", Fake)
    monkeypatch.setattr(loading, "auto_class", lambda _cfg: Fake)
    model_cfg = compose_cfg("model=chatglm_6b").model
    loading.load_pretrained(model_cfg.path, model_cfg)
    assert [c.get("revision") for c in calls] == [model_cfg.revision] * 2


# 4. Weights load in float32 or in the training precision's own dtype.

@pytest.mark.parametrize("dtype,precision", [("float16", "fp32"), ("bfloat16", "fp16"), ("float16", "bf16"),
                                             ("bfloat16", "fp32")])
def test_load_dtype_must_fit_the_training_precision(dtype: str, precision: str) -> None:
    with pytest.raises(validate.ConfigError, match=rf"model\.dtype={dtype}.*{precision}.*model\.dtype=float32"):
        validate.check(compose_cfg(f"model.dtype={dtype}", f"deepspeed={precision}"))


@pytest.mark.parametrize("dtype,precision", [("float32", "fp16"), ("float32", "bf16"), ("float16", "fp16"),
                                             ("bfloat16", "bf16"), ("float32", "fp32")])
def test_load_dtype_that_fits_passes(dtype: str, precision: str) -> None:
    validate.check(compose_cfg(f"model.dtype={dtype}", f"deepspeed={precision}"))


def test_auto_precision_is_resolved_before_the_dtype_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtypes, "resolve", lambda ds: "fp32")          # CPU
    with pytest.raises(validate.ConfigError, match=r"deepspeed\.precision=auto resolves to fp32"):
        validate.check(compose_cfg("model=llama2_7b"))
    validate.check(compose_cfg("model=llama2_7b", "model.dtype=float32"))
    monkeypatch.setattr(dtypes, "resolve", lambda ds: "fp16")          # an accelerator
    validate.check(compose_cfg("model=llama2_7b"))


# 5. Only ZeRO stage 1 until the others are built and tested.

@pytest.mark.parametrize("override,field", [("deepspeed.zero_stage=2", "deepspeed.zero_stage=2"),
                                            ("deepspeed.zero_stage=0", "deepspeed.zero_stage=0"),
                                            ("+deepspeed.extra.zero_optimization.stage=3", "deepspeed.extra")])
def test_only_zero_stage_one(override: str, field: str) -> None:
    with pytest.raises(validate.ConfigError, match=re.escape(field) + ".*stage 1"):
        validate.check(compose_cfg(override))


# 6. An answer cut by task.max_length keeps its EOS and is marked.

def test_cut_answer_keeps_its_eos_and_is_counted() -> None:
    task = compose_cfg("task.max_length=40").task
    records = [{"instruction": "I", "input": "x", "output": "a_b_c"},
               {"instruction": "I", "input": "y", "output": "a_b_c\n" * 20}]
    tokenizer = chartok.build(r["instruction"] + r["input"] + r["output"] for r in records)
    examples = encoding.encode(records, tokenizer, task)
    eos = tokenizer.eos_token_id
    assert [e["labels"][-1] for e in examples] == [eos, eos]
    assert [e["answer_cut"] for e in examples] == [False, True]
    assert all(len(e["input_ids"]) <= 40 for e in examples)
    assert encoding.answers_cut(examples) == 1
    batch = encoding.collate(examples, tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}


# 7. Triple parts compare stripped; gold lines that do not parse are counted.

def test_triple_parts_are_stripped() -> None:
    assert triples.parse(" a _ r _ b ")[0] == [("a", "r", "b")]
    assert triples.score(["a_r_b"], [" a _ r _ b "])["f1_micro"] == 1.0


def test_unparseable_gold_lines_are_counted() -> None:
    scores = triples.score(["a_r_b", "c_r_d"], ["a_r_b\nnot a triple", "c_r_d\nx_y\n"])
    assert scores["gold_parse_fail"] == 2
    assert {"precision", "recall", "f1_micro", "f1_macro", "exact_match", "parse_fail_rate", "n"} <= set(scores)
    assert triples.score(["a_r_b"], ["a_r_b"])["gold_parse_fail"] == 0
