"""CPU memory is measured on the steps that bound the peak, in exact mode, and training runs fast elsewhere."""

from __future__ import annotations

import sys

import pytest
import torch

from bench.pipeline import costs
from bench.taskdata import encoding


def _examples(lengths: list[int]) -> list[dict[str, list[int]]]:
    return [{"input_ids": [1] * n, "labels": [1] * n, "widths": [n]} for n in lengths]


def test_peak_steps_hold_the_first_steps_and_the_widest_batch():
    lengths = [10 + (i * 7919) % 90 for i in range(200)]
    examples = _examples(lengths)
    chosen = encoding.peak_steps(examples, encoding.BatchPlan(8, seed=3, group_by_length=True), steps=40)
    stream = encoding.batches(examples, encoding.BatchPlan(8, seed=3, group_by_length=True), pad_id=0)
    shapes = [tuple(next(stream)["input_ids"].shape) for _ in range(40)]
    widest = max(range(40), key=lambda k: shapes[k][0] * shapes[k][1])
    assert {0, 1, widest} <= chosen and len(chosen) <= 4
    assert encoding.peak_steps(examples, encoding.BatchPlan(8, seed=3, group_by_length=True), steps=1) == {0}


def test_peak_steps_follow_micro_batches_under_accumulation():
    examples = _examples([5] * 63 + [200])
    chosen = encoding.peak_steps(examples, encoding.BatchPlan(4, grad_accum=2), steps=8)
    stream = encoding.batches(examples, encoding.BatchPlan(4), pad_id=0)
    widths = [max(next(stream)["input_ids"].shape[1] for _ in range(2)) for _ in range(8)]
    assert widths.index(200) in chosen


@pytest.mark.skipif(not sys.platform.startswith("linux") or torch.cuda.is_available(), reason="glibc RSS on CPU")
def test_a_window_sees_a_tensor_freed_inside_it_and_steps_outside_cost_nothing():
    tracker = costs.CpuTracker(1 << 20)
    assert tracker.active
    watch = tracker.watcher({1})
    with watch(0):                       # not measured: no window
        torch.ones(64 << 20, dtype=torch.uint8).sum()
    assert tracker.peak is None
    with watch(1):
        before = costs.current_memory()
        big = torch.ones(256 << 20, dtype=torch.uint8)   # 256 MiB, freed before the window ends
        del big
    assert tracker.measured_steps == [1] and tracker.step_peaks == {1: tracker.peak}
    assert tracker.peak - before >= 250 << 20
    peak = costs.peak_memory(was_reset=True, tracker=tracker)
    assert peak["mem_kind"] == "cpu_rss_train_peak" and peak["mem_measured_steps"] == [1]


def test_no_threshold_means_no_tracking():
    tracker = costs.CpuTracker(None)
    assert not tracker.active and tracker.watcher({0}) is None
