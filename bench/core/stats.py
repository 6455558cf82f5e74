"""Statistics a reviewer accepts: intervals over seeds, bootstraps over test records, corrections over a table.

Pure functions of numbers (no torch, no task): scipy where it has the function (t quantiles, t-tests from summary
statistics, Benjamini–Hochberg), numpy's percentile bootstrap where a metric must be recomputed on resampled
records, and Holm's step-down by hand because scipy has none.

Over records, a metric is given as ``score_fn(indices) -> float`` that recomputes it on the records ``indices``
(repeats allowed): many task metrics are not means of per-record values (F1 micro is a ratio of sums), so
resampling per-record numbers would bootstrap the wrong statistic. Both bootstraps draw their indices from one
resampler (``numpy.random.default_rng(seed)``), so a seed fixes every draw and a paired test scores both methods
on the very same records. scipy.stats.bootstrap could resample ``arange(n)`` for the interval, but it has no
paired shifted-null p-value; one resampler for both keeps the interval and the test on the same draws.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

ScoreFn = Callable[[np.ndarray], float]
CORRECTIONS = ("holm", "bh", "none")


def _check_confidence(confidence: float) -> None:
    """A level outside (0, 1) would silently give an empty or infinite interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def t_interval(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) over seeds by Student's t, which few seeds need; one value has no spread: (mean, nan, nan)."""
    from scipy import stats  # 0.5 s to import: a run's own bootstrap needs no scipy

    _check_confidence(confidence)
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("t_interval of no values")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * stats.sem(x))    # sem: std with ddof=1 / sqrt(n)
    return mean, mean - half, mean + half


def _draws(n_records: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Record indices drawn with replacement, the same sequence for a seed (so paired scores share records)."""
    if n_records < 1 or resamples < 1:
        raise ValueError(f"bootstrap needs n_records ≥ 1 and resamples ≥ 1, got {n_records} and {resamples}")
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, n_records, size=n_records)


def bootstrap_interval(score_fn: ScoreFn, n_records: int, *, confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high): a percentile bootstrap over test records, for metrics that are no mean of records."""
    _check_confidence(confidence)
    point = float(score_fn(np.arange(n_records)))
    scores = np.array([score_fn(idx) for idx in _draws(n_records, resamples, seed)], dtype=float)
    low, high = np.percentile(scores, [50 * (1 - confidence), 50 * (1 + confidence)])
    return point, float(low), float(high)


def paired_bootstrap(score_a: ScoreFn, score_b: ScoreFn, n_records: int, *, higher_is_better: bool,
                     resamples: int = 2000, seed: int = 0) -> float:
    """One-sided p of H0 "A is at least as good as B" against H1 "A is worse", both scored on the same records.

    The shift method (Berg-Kirkpatrick et al. 2012, after Koehn 2004): with δ how much worse A is than B (in
    the metric's better direction), the bootstrap distribution of δ* centred on the observed δ stands in for
    δ's distribution under H0 (δ = 0), so p = share of resamples with δ* − δ ≥ δ, i.e. δ* ≥ 2δ. Ties count for
    H0 (identical predictions give p = 1); the resolution is 1/resamples (p = 0 means below it).
    """
    sign = 1.0 if higher_is_better else -1.0

    def worse_by(idx: np.ndarray) -> float:
        """δ on these records: > 0 where A is worse."""
        return sign * (float(score_b(idx)) - float(score_a(idx)))

    observed = worse_by(np.arange(n_records))
    deltas = np.array([worse_by(idx) for idx in _draws(n_records, resamples, seed)])
    return float(np.mean(deltas >= 2 * observed))


def _checked(p_values: Mapping[str, float]) -> Mapping[str, float]:
    """p-values in [0, 1]: a NaN would sort anywhere and silently change every other row's verdict."""
    bad = {k: p for k, p in p_values.items() if not 0.0 <= p <= 1.0}
    if bad:
        raise ValueError(f"p-values must lie in [0, 1] (leave untested rows out): {bad}")
    return p_values


def holm_adjusted(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's adjusted p-values (≤ alpha exactly where the step-down rejects), comparable with alpha row by row."""
    order = sorted(_checked(p_values), key=p_values.__getitem__)
    adjusted, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[key]))
        adjusted[key] = running
    return {key: adjusted[key] for key in p_values}


def holm(p_values: Mapping[str, float], *, alpha: float = 0.05) -> dict[str, bool]:
    """Holm–Bonferroni: which to reject so that P(any false rejection) ≤ alpha, whatever the tests' dependence."""
    return {key: p <= alpha for key, p in holm_adjusted(p_values).items()}


def benjamini_hochberg(p_values: Mapping[str, float], *,
                       alpha: float = 0.05) -> tuple[dict[str, float], dict[str, bool]]:
    """(adjusted p, rejected) by Benjamini–Hochberg: expected share of false rejections ≤ alpha; more power."""
    from scipy import stats  # 0.5 s to import: a run's own bootstrap needs no scipy

    keys = list(_checked(p_values))
    if not keys:
        return {}, {}
    adjusted = stats.false_discovery_control(np.array([p_values[k] for k in keys], dtype=float), method="bh")
    by_key = {key: float(p) for key, p in zip(keys, adjusted)}
    return by_key, {key: p <= alpha for key, p in by_key.items()}


def adjusted(p_values: Mapping[str, float], *, method: str) -> dict[str, float]:
    """Adjusted p-values by ``method`` (holm | bh | none), so one threshold (alpha) reads every correction."""
    if method == "holm":
        return holm_adjusted(p_values)
    if method == "bh":
        return benjamini_hochberg(p_values)[0]
    if method == "none":
        return dict(_checked(p_values))
    raise ValueError(f"correction {method!r} unknown: use one of {', '.join(CORRECTIONS)}")


def welch_p(mean_a: float, std_a: float | None, n_a: int, *, mean_b: float, std_b: float | None, n_b: int) -> float:
    """Two-sided p of "same mean" from summary statistics, for verdicts stored as mean ± std (n).

    n ≥ 2 on both sides: Welch's t-test. One value on one side: it has no spread, so the other side's is used for both
    (the pooled t-test with n = 1, i.e. Crawford & Howell 1998: t = Δ / (s·sqrt(1/n_a + 1/n_b)), df = n_other − 1).
    NaN where no spread was measured: one value on each side, or every spread used is 0 (deterministic seeds).
    """
    from scipy import stats  # 0.5 s to import: a run's own bootstrap needs no scipy

    if min(n_a, n_b) < 1 or max(n_a, n_b) < 2:
        return math.nan
    spread_a = 0.0 if n_a == 1 else float(std_a or 0.0)
    spread_b = 0.0 if n_b == 1 else float(std_b or 0.0)
    if spread_a == 0.0 and spread_b == 0.0:
        return math.nan
    pooled = n_a == 1 or n_b == 1     # pooled variance weights the n = 1 side by n − 1 = 0: the other side's spread
    result = stats.ttest_ind_from_stats(mean_a, spread_a, n_a, mean_b, spread_b, n_b, equal_var=pooled)
    return float(result.pvalue)
