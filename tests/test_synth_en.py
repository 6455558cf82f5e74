"""The English synthetic task: deterministic, parseable, short, within a tiny model's budget; Chinese unchanged."""

from __future__ import annotations

import hashlib
import json
import statistics

import pytest

from bench.core.errors import ConfigError
from bench.pipeline import tinybase, validate
from bench.taskdata import encoding, splits, taskcfg
from tasks import synth, triples
from tests.conftest import compose_cfg

TARGET = {"part-fault", "perf-fault", "part-of", "test-tool"}
SOURCE = {"fault-of", "state-of", "contains", "tested-by"}


def digest(records: list[dict[str, str]]) -> str:
    """A short fingerprint of records, to pin a stream without pasting it."""
    return hashlib.sha256(json.dumps(records, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def en_cfg(*overrides: str):
    """The composed English task on the tiny model."""
    return compose_cfg("task=triples_synth_en", "model=tiny_llama", *overrides)


def test_zh_stream_is_unchanged():
    # Taken from the generator before the language option existed: the committed regression baseline uses it.
    assert synth.generate(3, 0)[1] == {"instruction": "抽取三元组（部件故障、性能故障、组成、检测工具），格式头_关系_尾：",
                                       "input": "底盘的氧传感器渗水。", "output": "氧传感器_组成_底盘\n氧传感器_部件故障_渗水"}
    assert digest(synth.generate(3, 0)) == "93e64e6d3f871c02"
    assert digest(synth.generate(128, 0)) == "23a5faaa2c325aa6"
    assert digest(synth.generate(2000, 0, "source")) == "c1e71a6e4b93dade"
    assert synth.generate(50, 4, language="zh") == synth.generate(50, 4)


def test_en_is_deterministic_and_schemas_share_texts():
    a, b = synth.generate(200, 3, language="en"), synth.generate(200, 3, language="en")
    src = synth.generate(200, 3, "source", language="en")
    assert a == b and a != synth.generate(200, 4, language="en")
    assert [r["input"] for r in a] == [r["input"] for r in src]
    assert all(r["input"].isascii() and r["output"].isascii() for r in a + src)


@pytest.mark.parametrize(("schema", "relations"), [("target", TARGET), ("source", SOURCE)])
def test_en_answers_parse_into_three_clean_parts(schema, relations):
    records = synth.generate(2000, 0, schema, language="en")
    found = set()
    for r in records:
        triples_, bad = triples.parse(r["output"])
        lines = r["output"].split("\n")
        assert bad == 0 and len(triples_) == len(lines), r
        for line, parts in zip(lines, triples_, strict=True):
            assert line.split("_") == list(parts) and all(p and p == p.strip() for p in parts), line
            found.add(parts[1])
    assert found == relations
    assert triples.format_problems(records, None)[0] == 0


def test_en_words_hold_no_separator():
    """A "_" inside a head, relation or tail would split one triple into four parts."""
    vocab = synth.EN
    words = [*vocab.parts, *vocab.part_faults, *vocab.metrics, *vocab.perf_faults, *vocab.wholes, *vocab.tools,
             *vocab.tool_objects, *vocab.target_relations.values(), *vocab.source_relations.values()]
    assert not [w for w in words if "_" in w or "\n" in w or w != w.strip()]
    assert set(vocab.target_relations.values()).isdisjoint(vocab.source_relations.values())


def test_en_records_are_short():
    records = synth.generate(5000, 0, language="en") + synth.generate(5000, 7, "source", language="en")
    words = [len(r["input"].split()) + len(r["output"].replace("_", " ").split()) for r in records]
    lines = [len(r["output"].split("\n")) for r in records]
    assert max(words) <= 40 and statistics.mean(words) < 20, (max(words), statistics.mean(words))
    assert max(len(r["input"]) for r in records) <= 125 and max(len(r["output"]) for r in records) <= 143
    assert max(lines) == 4 and min(lines) == 1


def test_unknown_language_names_the_field():
    with pytest.raises(ConfigError, match=r"task.generator.language='fr'.*\['en', 'zh'\]"):
        synth.generate(1, 0, language="fr")


def test_generator_language_reaches_both_splits():
    cfg = en_cfg()
    assert cfg.task.generator.language == "en" and cfg.task.base_task.generator.language == "en"
    src = taskcfg.source_task(cfg.task)
    assert src.generator.schema == "source" and src.name == "triples_synth_en_source"
    assert splits.load(cfg.task, "test") == synth.generate(128, 1_000_003, language="en")
    assert splits.load(src, "train") == synth.generate(3000, 7, "source", language="en")


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "adalora", "vblora", "prompt_tuning", "p_tuning",
                                    "prefix_tuning", "p_tuning_v2"])
def test_task_composes_and_validates_on_tiny_llama(method):
    assert validate.check(en_cfg(f"method={method}")) == []


def test_splits_fit_the_tiny_budget_without_cuts():
    """Character tokens: no answer is cut in training and generation has room for every prompt and answer."""
    cfg = en_cfg()
    tokenizer, _ = tinybase.tokenizer_and_key(cfg)
    new = int(cfg.eval.max_new_tokens)
    for task in (cfg.task, taskcfg.source_task(cfg.task)):
        for split in splits.SPLITS:
            records = splits.load(task, split)
            assert encoding.answers_cut(encoding.encode(records, tokenizer, task)) == 0, (task.name, split)
            prompts = [len(encoding.prompt_ids(tokenizer, triples.prompt(r, task))) for r in records]
            answers = [len(tokenizer(r["output"], add_special_tokens=False).input_ids) + 1 for r in records]
            assert max(prompts) <= int(task.max_length) - new and max(answers) <= new, (task.name, split)
    known = set(tokenizer.get_vocab())
    assert set(cfg.task.prompt_init_text) <= known, "prompt_init_text has characters the tiny tokenizer lacks"

