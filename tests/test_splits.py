"""bench.taskdata.splits: every task's records come from files (any of four formats, keys mapped) or its generator,
dealt into train, validation and test the same way; and the triple task's answer formats."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from bench.core.errors import DataError
from bench.taskdata import splits
from tasks import triples
from tests.conftest import compose_cfg


def _task(tmp_path, rows, *, suffix=".jsonl", **data):
    """The triple task on a file of ``rows`` written in the format ``suffix`` names."""
    path = tmp_path / f"d{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False))
    elif suffix in (".csv", ".tsv"):
        sep = "," if suffix == ".csv" else "\t"
        keys = list(rows[0])
        path.write_text("\n".join([sep.join(keys), *(sep.join(r[k] for k in keys) for r in rows)]))
    else:
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    task = compose_cfg("task=triples", f"task.data.train={path}", f"task.data.test={path}").task
    return OmegaConf.merge(task, {"data": data})


ROWS = [{"text": f"t{i}", "answer": f"h{i}_r_t{i}"} for i in range(50)]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".tsv"])
def test_every_format_reads_the_same_records_with_fields_mapped(tmp_path, suffix):
    task = _task(tmp_path, ROWS, suffix=suffix, fields={"input": "text", "output": "answer"},
                 holdout={"validation": 0.0})
    records = splits.load(task, "train")
    assert [(r["input"], r["output"]) for r in records] == [(r["text"], r["answer"]) for r in ROWS]
    assert triples.prompt(records[0], task).startswith(task.instruction)   # no instruction field: the YAML's


def test_holdout_deals_disjoint_seeded_splits_and_caps(tmp_path):
    task = _task(tmp_path, ROWS, fields={"input": "text", "output": "answer"},
                 holdout={"validation": 0.2, "seed": 3}, max_records={"validation": 4})
    train, val = splits.load(task, "train"), splits.load(task, "validation")
    assert len(train) == 40 and len(val) == 4                   # 10 held out, capped to 4
    assert not {r["input"] for r in train} & {r["input"] for r in splits.load(OmegaConf.merge(
        task, {"data": {"max_records": {"validation": None}}}), "validation")}
    assert splits.load(task, "train") == train                  # the same deal every time
    other = OmegaConf.merge(task, {"data": {"holdout": {"seed": 4}}})
    assert splits.load(other, "train") != train                 # another seed, another deal
    assert len(splits.load(task, "test")) == 50                 # test has its own file here


def test_a_test_split_can_be_held_out_and_an_empty_one_is_refused(tmp_path):
    task = _task(tmp_path, ROWS, fields={"input": "text", "output": "answer"}, test=None,
                 holdout={"validation": 0.1, "test": 0.2})
    assert (len(splits.load(task, "train")), len(splits.load(task, "validation")), len(splits.load(task, "test"))) \
        == (35, 5, 10)
    none = OmegaConf.merge(task, {"data": {"holdout": {"test": 0.0}}})
    with pytest.raises(DataError, match="test split is empty.*task.data.holdout.test"):
        splits.load(none, "test")


def test_a_record_without_a_reference_names_the_fix(tmp_path):
    task = _task(tmp_path, ROWS)
    with pytest.raises(DataError, match=r"no 'output' field.*task.data.fields=\{output: <its key>\}"):
        splits.load(task, "train")
    wrong = _task(tmp_path, ROWS, fields={"output": "label"})
    with pytest.raises(DataError, match=r"no field \['label'\].*fix task.data.fields"):
        splits.load(wrong, "train")


def test_generated_splits_have_their_own_seeds_and_the_test_split_is_the_old_eval_split():
    task = compose_cfg("task=triples_synth").task
    train, val, test = (splits.load(task, s) for s in splits.SPLITS)
    assert (len(train), len(val), len(test)) == (2000, 128, 128)
    assert not {r["input"] for r in val} & {r["input"] for r in test}
    from tasks import synth
    assert test == synth.generate(128, 0 + 1_000_003, "target")   # unchanged: the baseline's numbers stand


def test_underscore_labels_score_under_another_separator():
    task = OmegaConf.create({"answer": {"format": "lines", "separator": " | "}})
    gold = "Alice | Work_For | Acme_Corp\nBob | OrgBased_In | Paris"
    pred = "Alice | Work_For | Acme_Corp\nBob | Live_In | Paris"
    scores = triples.score([pred], [gold], task)
    assert (scores["precision"], scores["recall"], scores["parse_fail_rate"]) == (0.5, 0.5, 0.0)
    assert triples.parse(gold, task)[0][0] == ("Alice", "Work_For", "Acme_Corp")
    # The seed's "_" misreads them: one line splits into a wrong triple, the other into two parts.
    assert triples.parse(gold)[0] == [("Alice | Work", "For | Acme", "Corp")] and triples.parse(gold)[1] == 1


def test_json_answers_and_generated_records_follow_the_answer_format():
    task = compose_cfg("task=triples_synth", "task.answer.format=json").task
    record = splits.load(task, "test")[0]
    items = json.loads(record["output"])
    assert all(len(item) == 3 for item in items)
    assert triples.score([record["output"]], [record["output"]], task)["f1_micro"] == 1.0
    assert triples.parse("not json", task) == ([], 1)
    piped = compose_cfg("task=triples_synth", "task.answer.separator=|").task
    line = splits.load(piped, "test")[0]["output"].split("\n")[0]
    assert line.count("|") == 2 and "_" not in line


def test_the_default_format_scores_as_before():
    task = compose_cfg("task=triples_synth").task
    gold = splits.load(task, "test")[:3]
    assert triples.score([r["output"] for r in gold], [r["output"] for r in gold], task)["f1_micro"] == 1.0
    assert triples.score(["a_b_c"], ["a_b_c\nx_y_z"], task) == triples.score(["a_b_c"], ["a_b_c\nx_y_z"])
