"""bench.core.stats against known cases: hand computations, a textbook example and scipy's own functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from bench.core import stats

# Benjamini & Hochberg (1995), section 4.2: fifteen p-values; at 0.05 BH rejects four, Bonferroni three.
BH_1995 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262, 0.5719, 0.6528,
           0.7590, 1.000]


def mean_of(values: np.ndarray):
    """A score_fn: the mean of ``values`` over the drawn records."""
    return lambda idx: float(values[idx].mean())


def test_t_interval_of_one_to_five() -> None:
    mean, low, high = stats.t_interval([1, 2, 3, 4, 5])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)         # t_{0.975,4} · s / sqrt(n) = 1.9632
    assert mean == 3.0 and (high - mean) == pytest.approx(half, abs=1e-5) and (mean - low) == pytest.approx(half)
    assert half == pytest.approx(1.963, abs=1e-3)
    assert stats.t_interval([1, 2, 3, 4, 5], confidence=0.99)[2] == pytest.approx(3 + 4.604095 * math.sqrt(0.5))


def test_t_interval_of_one_seed_and_of_identical_seeds() -> None:
    mean, low, high = stats.t_interval([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)         # one value: no spread, no interval
    mean, low, high = stats.t_interval([0.7, 0.7, 0.7])               # deterministic seeds: zero width
    assert mean == pytest.approx(0.7) and high - low < 1e-12
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval([1, 2], confidence=95)


def test_bootstrap_interval_of_a_mean_contains_it_and_narrows_with_n() -> None:
    pattern = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])     # 5/8 correct
    widths = {}
    for copies in (4, 64):
        values = np.tile(pattern, copies)
        point, low, high = stats.bootstrap_interval(mean_of(values), len(values), seed=1)
        assert point == 0.625 and low < point < high
        normal = 1.959964 * values.std() / math.sqrt(len(values))       # the normal interval the bootstrap nears
        assert (high - low) / 2 == pytest.approx(normal, rel=0.15)
        widths[copies] = high - low
    assert widths[64] < widths[4] / 3                                   # 16× the records: about a quarter the width


def test_bootstrap_interval_recomputes_a_ratio_of_sums() -> None:
    found = np.array([3, 1, 0, 2, 4, 1])       # F1-micro-like: correct / predicted summed over records, no mean
    predicted = np.array([4, 1, 2, 2, 5, 3])
    point, low, high = stats.bootstrap_interval(lambda i: found[i].sum() / predicted[i].sum(), 6, resamples=500)
    assert point == pytest.approx(11 / 17) and low <= point <= high


def test_bootstraps_are_deterministic_for_a_seed() -> None:
    values = np.linspace(0.0, 1.0, 50) ** 2
    assert stats.bootstrap_interval(mean_of(values), 50, seed=3) == stats.bootstrap_interval(mean_of(values), 50,
                                                                                                seed=3)
    assert stats.bootstrap_interval(mean_of(values), 50, seed=3) != stats.bootstrap_interval(mean_of(values), 50,
                                                                                                seed=4)
    a, b = mean_of(values), mean_of(values[::-1])
    assert (stats.paired_bootstrap(a, b, 50, higher_is_better=True, seed=5)
            == stats.paired_bootstrap(a, b, 50, higher_is_better=True, seed=5))


def test_paired_bootstrap_identical_worse_and_better() -> None:
    b = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0] * 10)      # per-record correctness of method B
    same = stats.paired_bootstrap(mean_of(b), mean_of(b), len(b), higher_is_better=True)
    worse = stats.paired_bootstrap(mean_of(b - 0.5), mean_of(b), len(b), higher_is_better=True)   # worse everywhere
    better = stats.paired_bootstrap(mean_of(b + 0.5), mean_of(b), len(b), higher_is_better=True)
    assert same == 1.0 and worse == 0.0 and better == 1.0
    lower_loss = stats.paired_bootstrap(mean_of(b - 0.5), mean_of(b), len(b), higher_is_better=False)
    assert lower_loss == 1.0                                            # the direction is the metric's


def test_paired_bootstrap_matches_the_paired_one_sided_test() -> None:
    """400 records: A wrong where B is right on 30, the reverse on 20; p ≈ the one-sided paired t-test's (0.08)."""
    b = np.zeros(400)
    a = np.zeros(400)
    b[:30], a[30:50] = 1.0, 1.0
    p = stats.paired_bootstrap(mean_of(a), mean_of(b), 400, higher_is_better=True, resamples=4000, seed=0)
    reference = sps.ttest_rel(b, a, alternative="greater").pvalue
    assert 0.05 < reference < 0.1 and p == pytest.approx(reference, abs=0.02)


def test_holm_on_a_known_set_stops_at_the_first_acceptance() -> None:
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    # sorted: 0.005·4 = 0.02 reject, 0.01·3 = 0.03 reject, 0.03·2 = 0.06 stop; 0.04·1 ≤ 0.05 is never reached
    assert stats.holm(p, alpha=0.05) == {"a": True, "b": False, "c": False, "d": True}
    assert stats.holm_adjusted(p) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    textbook = stats.holm({str(i): v for i, v in enumerate(BH_1995)}, alpha=0.05)
    assert sum(textbook.values()) == 3                                  # 0.0095·12 = 0.114: stop after three


def test_benjamini_hochberg_against_the_paper_and_scipy() -> None:
    p = {str(i): v for i, v in enumerate(BH_1995)}
    adjusted, rejected = stats.benjamini_hochberg(p, alpha=0.05)
    assert [k for k, r in rejected.items() if r] == ["0", "1", "2", "3"]       # the paper: four rejected
    assert list(adjusted.values()) == pytest.approx(sps.false_discovery_control(BH_1995, method="bh"))
    small = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}                      # by hand: 0.02, 0.04, 0.04, 0.02
    assert stats.benjamini_hochberg(small)[0] == pytest.approx({"a": 0.02, "b": 0.04, "c": 0.04, "d": 0.02})
    assert stats.benjamini_hochberg({}) == ({}, {})


def test_adjusted_by_name_and_bad_input() -> None:
    p = {"a": 0.01, "b": 0.04}
    assert stats.adjusted(p, method="none") == p
    assert stats.adjusted(p, method="holm") == stats.holm_adjusted(p)
    with pytest.raises(ValueError, match="holm, bh, none"):
        stats.adjusted(p, method="bonferroni")
    with pytest.raises(ValueError, match="leave untested rows out"):
        stats.holm({"a": math.nan})


def test_welch_p_equals_scipy_on_the_raw_seeds() -> None:
    a, b = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([2.0, 4.0, 6.0, 8.0, 10.0, 12.0])
    p = stats.welch_p(a.mean(), a.std(ddof=1), 5, mean_b=b.mean(), std_b=b.std(ddof=1), n_b=6)
    assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)


def test_welch_p_with_one_seed_uses_the_other_sides_spread() -> None:
    # Crawford & Howell: one value 10 against 1..5: t = 7 / (1.5811·sqrt(1 + 1/5)) = 4.0415, df = 4
    p = stats.welch_p(10.0, None, 1, mean_b=3.0, std_b=math.sqrt(2.5), n_b=5)
    assert p == pytest.approx(2 * sps.t.sf(7 / math.sqrt(2.5 * 1.2), 4)) and p == pytest.approx(0.01556, abs=1e-4)
    assert stats.welch_p(3.0, math.sqrt(2.5), 5, mean_b=10.0, std_b=None, n_b=1) == pytest.approx(p)   # symmetric
    assert math.isnan(stats.welch_p(0.8, None, 1, mean_b=0.7, std_b=None, n_b=1))    # no spread on either side
    assert math.isnan(stats.welch_p(0.8, 0.0, 3, mean_b=0.7, std_b=0.0, n_b=3))      # deterministic seeds
