"""Intervals and tests that hold for benchmark samples.

Consecutive latency samples of one process are autocorrelated (lag-1 median 0.32 over the committed series, up to
0.98), so an i.i.d. bootstrap treats 293 samples as 293 independent ones when they are worth a handful, and its
interval is far too narrow. Within one process the interval here comes from a stationary block bootstrap (Politis &
Romano 1994, through `arch`): it resamples runs of consecutive samples, so the dependence stays in every resample.
Its standard error gives a t-interval whose degrees of freedom are the number of blocks, not of samples.

Samples of one process cannot show what changes from process to process (memory layout, thread placement, the
kernels a library picked: ±10–30 % on shared 2-core VMs). That spread needs several processes (`timing.repeats`),
and a change between two runs is then tested across processes, as pyperf does with its worker processes: a Welch
t-test on the logarithms of the per-process values, so a change is a ratio.

Testing many cells at 95 % each raises false alarms in proportion to their number; `adjust` applies Holm's
step-down correction (family-wise error rate, no assumption about how the cells' tests depend on each other).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Politis–White's block length is MSE-optimal for estimating a variance, and too short for an interval under
# strong dependence: on AR(1) series with rho = 0.9 it covered 87 % (n = 500) for a nominal 95 %; doubled, 90 %
# (n = 300) to 94 % (n = 1000), and 93 % on independent series (tests/measure/test_significance.py keeps this true).
BLOCK_LENGTH_FACTOR = 2.0
BLOCK_RESAMPLES = 1000  # a standard error needs fewer resamples than percentile tails
MIN_SAMPLES_FOR_INTERVAL = 10  # below this Politis–White cannot estimate a dependence (arch fails below ~6)
SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class Spread:
    """How precisely one statistic of one series is known: the log of its value, that log's standard error, and the
    degrees of freedom behind it (blocks within a process, processes between them)."""

    log_value: float
    log_se: float
    dof: float


@dataclass(frozen=True)
class ChangeTest:
    """A change from a to b of one statistic: the 95 % interval of the change in %, and the p-value of no change."""

    ci_pct: tuple[float, float]
    p_value: float
    evidence: str  # "between processes" or "within one process (block bootstrap)"


def block_length(samples: np.ndarray) -> float:
    """Mean block length of the stationary bootstrap for this series (Politis–White, doubled; see above)."""
    from arch.bootstrap import optimal_block_length  # lazy: arch imports pandas and scipy (about 2 s)

    if samples.size < MIN_SAMPLES_FOR_INTERVAL or float(np.ptp(samples)) == 0.0:
        return 1.0  # too short to estimate a dependence: resample single samples
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant stretch gives 0/0 autocorrelations
        estimate = float(optimal_block_length(samples)["stationary"].iloc[0])
    if not math.isfinite(estimate):
        estimate = 1.0
    return min(max(1.0, BLOCK_LENGTH_FACTOR * estimate), samples.size / 2)


def within_process_spread(
    samples: np.ndarray, quantile: float = 50.0, resamples: int = BLOCK_RESAMPLES, seed: int = 0
) -> Spread:
    """The spread of a quantile of one process's samples, by stationary block bootstrap (seeded: reproducible)."""
    return within_process_spreads(samples, (quantile,), resamples, seed)[0]


def within_process_spreads(
    samples: np.ndarray, quantiles: tuple[float, ...], resamples: int = BLOCK_RESAMPLES, seed: int = 0
) -> tuple[Spread, ...]:
    """within_process_spread of several quantiles of one series from the same resamples (the same seed drew the same
    resamples for each quantile before, so each Spread is the one a call per quantile gives, at the cost of one)."""
    values = np.asarray(samples, dtype=np.float64)
    length = block_length(values)
    chunks = [
        np.percentile(values[indices], quantiles, axis=1)
        for indices in stationary_indices(values.size, length, resamples, seed)
    ]
    logs = np.log(np.concatenate(chunks, axis=1))  # one row per quantile, one column per resample
    centres = np.percentile(values, quantiles)
    dof = max(1.0, values.size / length - 1)
    return tuple(
        Spread(log_value=math.log(float(centre)), log_se=float(row.std(ddof=1)), dof=dof)
        for centre, row in zip(centres, logs)
    )


CHUNK_ELEMENTS = 1 << 20  # resampled indices held at once: 8 MiB of int64, whatever the series' length


def stationary_indices(n: int, length: float, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The indices of `arch`'s StationaryBootstrap(length, seed=default_rng(seed)), chunks of rows of resamples.

    The draws come from the same generator in the same order as arch's (per resample: n block starts, then n
    uniforms), so a seed gives the very resamples arch gives; only arch's per-sample loop that continues a block
    (u > 1 / length: the next index, wrapping at n) is done for a whole chunk at once, with no Python per resample
    beyond the two draws. The median of 1,000 resamples of 1,000 samples took 80 ms through arch's loop.
    """
    generator = np.random.default_rng(seed)
    probability = 1.0 / length
    positions = np.arange(n)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, n))
    for first in range(0, resamples, rows_per_chunk):
        rows = min(rows_per_chunk, resamples - first)
        starts = np.empty((rows, n), dtype=np.int64)
        uniforms = np.empty((rows, n))
        for row in range(rows):
            starts[row] = generator.integers(n, size=n, dtype=np.int64)
            uniforms[row] = generator.random(n)
        block_start = np.where(uniforms <= probability, positions, 0)  # a block starts where u <= p (and at 0)
        block_start[:, 0] = 0
        np.maximum.accumulate(block_start, axis=1, out=block_start)
        yield (np.take_along_axis(starts, block_start, axis=1) + positions - block_start) % n


def between_process_spread(values: np.ndarray) -> Spread:
    """The spread of the mean log of k per-process values (k >= 2)."""
    logs = np.log(np.asarray(values, dtype=np.float64))
    return Spread(float(logs.mean()), float(logs.std(ddof=1)) / math.sqrt(logs.size), float(logs.size - 1))


def _t_quantile(probability: float, dof: float) -> float:
    from scipy import stats  # lazy: importing scipy.stats costs about 1 s

    return float(stats.t.ppf(probability, dof))


def _two_sided_p(t_value: float, dof: float) -> float:
    from scipy import stats  # lazy: importing scipy.stats costs about 1 s

    return float(2 * stats.t.sf(abs(t_value), dof))


def interval(spread: Spread, confidence: float = 0.95) -> tuple[float, float]:
    """The t-interval of the statistic itself (in its own unit)."""
    half = _t_quantile(0.5 + confidence / 2, spread.dof) * spread.log_se
    return math.exp(spread.log_value - half), math.exp(spread.log_value + half)


def change_test(a: Spread, b: Spread, evidence: str, confidence: float = 0.95) -> ChangeTest:
    """Welch's test of log(b) - log(a): the interval of the ratio b / a - 1 in %, and its p-value."""
    difference = b.log_value - a.log_value
    variance = a.log_se**2 + b.log_se**2
    if variance == 0:
        change = (math.exp(difference) - 1) * 100
        return ChangeTest((change, change), 0.0 if difference else 1.0, evidence)
    # Welch–Satterthwaite: the degrees of freedom of a difference of two estimates with their own.
    dof = variance**2 / (a.log_se**4 / a.dof + b.log_se**4 / b.dof)
    half = _t_quantile(0.5 + confidence / 2, dof) * math.sqrt(variance)
    ci = ((math.exp(difference - half) - 1) * 100, (math.exp(difference + half) - 1) * 100)
    return ChangeTest(ci, _two_sided_p(difference / math.sqrt(variance), dof), evidence)


WITHIN = "within one process (block bootstrap)"
BETWEEN = "between processes"


def within_process_change(
    a: np.ndarray, b: np.ndarray, quantile: float = 50.0, resamples: int = BLOCK_RESAMPLES, seed: int = 0
) -> ChangeTest:
    """The change of a quantile between two single-process series; indicative only (see the module's docstring)."""
    return change_test(
        within_process_spread(a, quantile, resamples, seed), within_process_spread(b, quantile, resamples, seed), WITHIN
    )


def between_process_change(a: np.ndarray, b: np.ndarray) -> ChangeTest:
    """The change of a figure measured in k_a and k_b processes (each >= 2), from their per-process values."""
    return change_test(between_process_spread(a), between_process_spread(b), BETWEEN)


def adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (the cells one comparison judges)."""
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests  # lazy: statsmodels is heavy and only compare needs it

    return [float(p) for p in multipletests(p_values, alpha=SIGNIFICANCE_LEVEL, method="holm")[1]]
