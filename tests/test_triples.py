"""Parsing and scoring, including the seed authors' per-record rule, and the synthetic generator."""

from __future__ import annotations

import pytest

from tasks import synth, triples


def test_parse_keeps_only_three_part_lines():
    found, bad = triples.parse("发动机_部件故障_水温高\n坏行\n\na_b_c_d\n 风扇_部件故障_异响 ")
    assert found == [("发动机", "部件故障", "水温高"), ("风扇", "部件故障", "异响")]
    assert bad == 2


def test_score_micro_and_macro_differ_as_defined():
    preds = ["a_r_b\nc_r_d", "x_r_y"]
    refs = ["a_r_b", "x_r_y\nu_r_v\np_r_q"]
    s = triples.score(preds, refs)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 4)
    assert s["f1_micro"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    rec1 = 2 * 0.5 * 1.0 / 1.5
    rec2 = 2 * 1.0 * (1 / 3) / (4 / 3)
    assert s["f1_macro"] == pytest.approx((rec1 + rec2) / 2)
    assert s["exact_match"] == 0.0 and s["n"] == 2


def test_seed_rule_unparseable_line_counts_as_nothing():
    s = triples.score(["a_r_b\n垃圾输出"], ["a_r_b"])
    assert s["f1_micro"] == 1.0 and s["f1_macro"] == 1.0
    assert s["parse_fail_rate"] == 1.0 and s["exact_match"] == 0.0


def test_duplicates_count_once_and_empty_agreement():
    s = triples.score(["a_r_b\na_r_b", ""], ["a_r_b", ""])
    assert s["f1_micro"] == 1.0 and s["f1_macro"] == 1.0 and s["exact_match"] == 1.0


def test_generator_is_deterministic_and_schemas_share_texts():
    a, b = synth.generate(50, 3), synth.generate(50, 3)
    src = synth.generate(50, 3, "source")
    assert a == b
    assert [r["input"] for r in a] == [r["input"] for r in src]
    assert a[0]["instruction"] != src[0]["instruction"]
    relations = {line.split("_")[1] for r in synth.generate(500, 0) for line in r["output"].split("\n")}
    assert relations == {"部件故障", "性能故障", "组成", "检测工具"}
    for r in a:
        assert all(len(line.split("_")) == 3 for line in r["output"].split("\n"))


def test_source_schema_swaps_head_and_tail():
    tgt, src = synth.generate(20, 5)[0], synth.generate(20, 5, "source")[0]
    first_t = tgt["output"].split("\n")[0].split("_")
    first_s = src["output"].split("\n")[0].split("_")
    assert (first_t[0], first_t[2]) == (first_s[2], first_s[0])
