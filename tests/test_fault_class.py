"""Fault-clause classification: the shipped YAMLs compose, the data is deterministic and balanced, scores are right,
and every record fits a tiny model's character budget. No model, no training."""

from __future__ import annotations

from collections import Counter
from functools import cache

import pytest
from omegaconf import OmegaConf

from bench.core.errors import ConfigError, DataError
from bench.taskdata import taskcfg
from tasks import fault_class, synth
from tests.conftest import compose_cfg

TASKS = {"zh": "fault_class", "en": "fault_class_en"}
ZH_TARGET = ["部件故障", "性能故障", "组成", "检测工具"]
ZH_SOURCE = ["故障部件", "异常指标", "包含", "被检测于"]
EN_TARGET = ["part-fault", "perf-fault", "part-of", "test-tool"]
EN_SOURCE = ["fault-of", "state-of", "contains", "tested-by"]
NAMES = {("zh", "target"): ZH_TARGET, ("zh", "source"): ZH_SOURCE, ("en", "target"): EN_TARGET,
         ("en", "source"): EN_SOURCE}
# Measured over 20,000 records of each schema: (prompt + answer + bos + eos, prompt + bos, label + eos) in characters.
LENGTHS = {"zh": (85, 82, 5), "en": (147, 139, 11)}


@cache
def composed(language: str):
    """The whole run config with the language's task (the default model, tiny_llama)."""
    return compose_cfg(f"task={TASKS[language]}")


def task(language: str, schema: str = "target"):
    """The task config of a schema: the source task as the harness builds it (base_task merged over the task)."""
    cfg = composed(language).task
    return cfg if schema == "target" else taskcfg.source_task(cfg)


@cache
def many(language: str, schema: str) -> list[dict[str, str]]:
    return fault_class.generate(task(language, schema), n=20_000, seed=0)


def user_cfg(**keys):
    """A task on the user's files (no generator); ``keys`` override the composed zh task."""
    base = OmegaConf.to_container(task("zh"), resolve=False)
    return OmegaConf.merge(base, {"generator": None, "base_task": None, **keys})


def test_english_extends_chinese_and_keeps_the_contract():
    zh, en = composed("zh"), composed("en")
    assert (en.task.name, en.task.base_task.name) == ("fault_class_en", "fault_class_en_source")
    assert en.task.generator == {**zh.task.generator, "language": "en"}
    assert task("en", "source").generator == {**zh.task.base_task.generator, "language": "en"}
    assert task("zh", "source").generator.language == "zh" and en.task.metric_list == zh.task.metric_list
    for cfg in (zh, en):
        metrics = [m.metric for m in cfg.task.metric_list]
        assert cfg.task.primary_metric in metrics
        assert set(metrics) <= set(fault_class.score(["x"], ["x"], cfg.task))
        virtual = 16   # prompt-tuning methods' virtual tokens
        assert virtual + cfg.task.max_length + cfg.task.max_new_tokens <= cfg.model.arch.max_position_embeddings


@pytest.mark.parametrize(("language", "schema"), list(NAMES))
def test_instructions_name_their_schemas_labels(language, schema):
    cfg = task(language, schema)
    assert fault_class.labels(cfg) == NAMES[language, schema]
    assert all(label in cfg.instruction for label in NAMES[language, schema])
    assert fault_class.check(cfg, {"train": fault_class.generate(cfg, n=50, seed=3)}) == []


def test_generate_is_deterministic():
    cfg = task("zh")
    a, b = fault_class.generate(cfg, n=300, seed=5), fault_class.generate(cfg, n=300, seed=5)
    assert a == b and a != fault_class.generate(cfg, n=300, seed=6)
    assert fault_class.generate(cfg, n=10, seed=5) == a[:10]
    assert all(set(r) == {"instruction", "input", "output"} and r["instruction"] == cfg.instruction for r in a)
    # The stream is pinned: a change of draws changes every stored baseline of this task.
    assert [(r["input"], r["output"]) for r in a[:3]] == [
        ("477号故障报告：发动机的制动盘低速转动。", "组成"), ("557号故障报告：制动盘不工作。", "部件故障"),
        ("车主反映：转速明显过低。", "性能故障")]


@pytest.mark.parametrize(("language", "schema"), list(NAMES))
def test_classes_are_balanced_and_named_by_the_schema(language, schema):
    counts = Counter(r["output"] for r in fault_class.generate(task(language, schema), n=2000, seed=0))
    assert set(counts) == set(NAMES[language, schema])
    assert all(0.20 <= c / 2000 <= 0.30 for c in counts.values()), counts


@pytest.mark.parametrize("language", ["zh", "en"])
def test_schemas_share_texts_and_rename_only_labels(language):
    target, source = many(language, "target"), many(language, "source")
    assert [r["input"] for r in target] == [r["input"] for r in source]
    renames = {(t["output"], s["output"]) for t, s in zip(target, source, strict=True)}
    vocab = synth.LANGUAGES[language]
    assert renames == {(vocab.target_relations[k], vocab.source_relations[k]) for k in fault_class.KINDS}


@pytest.mark.parametrize("language", ["zh", "en"])
def test_each_text_has_one_label(language):
    """Learnable to accuracy 1: no clause text is drawn under two kinds."""
    labels_of: dict[str, set[str]] = {}
    for r in many(language, "target"):
        labels_of.setdefault(r["input"], set()).add(r["output"])
    assert all(len(v) == 1 for v in labels_of.values())


def test_prompt_uses_the_records_instruction_or_the_tasks():
    zh, en = task("zh"), task("en")
    assert fault_class.prompt({"instruction": "I:", "input": "风扇异响。"}, zh) == "I:风扇异响。\n答："
    assert fault_class.prompt({"input": "fan noisy."}, en) == f"{en.instruction}\nfan noisy.\nAnswer:\n"


def test_perfect_answers_score_one():
    refs = ZH_TARGET * 3
    assert fault_class.score(list(refs), refs, task("zh")) == {"accuracy": 1.0, "macro_f1": 1.0,
                                                              "invalid_rate": 0.0, "n": 12}


def test_wrong_label_is_an_error_and_garbage_is_invalid():
    refs = ["组成", "组成", "检测工具", "性能故障"]
    scores = fault_class.score(["检测工具", "组成", "检测工具", "答：性能"], refs, task("zh"))
    assert scores["accuracy"] == 0.5 and scores["invalid_rate"] == 0.25 and scores["n"] == 4


def test_answers_are_read_as_their_first_nonempty_line():
    preds = ["  组成 \n检测工具", "\n\n 检测工具\t\n组成", "", "组成。"]
    assert [fault_class.parse(p) for p in preds] == ["组成", "检测工具", "", "组成。"]
    scores = fault_class.score(preds, ["组成", "检测工具", "组成", "组成"], task("zh"))
    assert scores["accuracy"] == 0.5 and scores["invalid_rate"] == 0.5


def test_macro_f1_by_hand():
    # A: tp 1, 1 predicted, 2 gold -> 2/3; B: tp 1, 2 predicted, 1 gold -> 2/3; C: 0 -> mean 4/9.
    # X (invalid) only costs C its recall; D and X, in no reference, are not averaged over.
    cfg = user_cfg(labels=["A", "B", "C", "D"])
    scores = fault_class.score(["A", "B", "B", "X"], ["A", "A", "B", "C"], cfg)
    assert scores["macro_f1"] == pytest.approx(4 / 9)
    assert scores["accuracy"] == 0.5 and scores["invalid_rate"] == 0.25


def test_labels_fall_back_to_the_references():
    cfg = user_cfg(labels=None)
    assert fault_class.labels(cfg, ["b", "a", "b"]) == ["a", "b"]
    assert fault_class.score(["a", "c"], ["a", "b"], cfg)["invalid_rate"] == 0.5
    assert fault_class.labels(user_cfg(labels=["y", "x"])) == ["y", "x"]


def test_check_warns_on_unknown_references_and_refuses_them_when_strict():
    records = [{"input": "t", "output": "A"}, {"input": "t", "output": "Z"}, {"input": "t", "output": "A\nB"}]
    cfg = user_cfg(labels=["A", "B"])
    (warning,) = fault_class.check(cfg, {"train": records[:1], "test": records})
    assert "test split: 2 of 3" in warning and "record 1: 'Z'" in warning and "strict_format" in warning
    with pytest.raises(DataError, match=r"test split.*task.labels.*task.data.strict_format=false"):
        fault_class.check(OmegaConf.merge(cfg, {"data": {"strict_format": True}}), {"test": records})


def test_check_warns_when_the_source_instruction_omits_labels():
    cfg = OmegaConf.merge(task("en", "source"), {"instruction": task("en").instruction})
    (warning,) = fault_class.check(cfg, {})
    assert "task.base_task.instruction" in warning and "fault-of" in warning


@pytest.mark.parametrize(("keys", "match"), [
    ({"generator": {"language": "fr"}}, r"task.generator.language='fr'.*\['en', 'zh'\]"),
    ({"generator": {"schema": "other"}}, r"task.generator.schema='other'.*\['target', 'source'\]"),
    ({"instruction": None}, r"task.instruction=None.*task.base_task.instruction"),
])
def test_bad_generator_settings_name_the_field(keys, match):
    with pytest.raises(ConfigError, match=match):
        fault_class.generate(OmegaConf.merge(task("zh"), keys), n=1, seed=0)


def test_a_label_set_given_as_text_names_the_field():
    with pytest.raises(ConfigError, match=r"task.labels='A,B'.*list"):
        fault_class.labels(user_cfg(labels="A,B"))


@pytest.mark.parametrize("language", ["zh", "en"])
def test_records_fit_the_character_budget(language):
    """A character tokenizer: bos + prompt + label + eos trains uncut, and generation has room for every prompt."""
    cfg = task(language)
    full = prompt = label = 0
    for schema in ("target", "source"):
        src = task(language, schema)
        for r in many(language, schema):
            length = len(fault_class.prompt(r, src))
            full, prompt = max(full, length + len(r["output"]) + 2), max(prompt, length + 1)
            label = max(label, len(r["output"]) + 1)
    assert (full, prompt, label) == LENGTHS[language]
    assert full <= cfg.max_length and label <= cfg.max_new_tokens
    assert prompt <= cfg.max_length - cfg.max_new_tokens   # bench/pipeline/evaluate.py cuts longer prompts
    assert task(language, "source").max_length == cfg.max_length


@pytest.mark.parametrize("language", ["zh", "en"])
def test_prompt_init_text_uses_only_characters_the_tiny_tokenizer_sees(language):
    seen = set()
    for schema in ("target", "source"):
        src = task(language, schema)
        seen.update(*(fault_class.prompt(r, src) + r["output"] for r in many(language, schema)[:500]))
    assert set(task(language).prompt_init_text) <= seen
