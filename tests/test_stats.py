from __future__ import annotations

import numpy as np
import pytest

from segbench.measure.stats import LatencyStats, bootstrap_ci
from segbench.measure.timing import StopRule, time_cpu


def test_statistics_from_samples() -> None:
    samples = [10.0, 11.0, 12.0, 13.0, 100.0]
    stats = LatencyStats.from_samples(samples)
    assert stats.median == 12.0 and stats.min == 10.0 and stats.max == 100.0 and stats.n == 5
    assert stats.mean == pytest.approx(29.2)
    assert stats.std == pytest.approx(np.std(samples, ddof=1))
    assert stats.cv == pytest.approx(stats.std / stats.mean)
    assert stats.p99 == pytest.approx(np.percentile(samples, 99))
    low, high = stats.ci95
    assert low <= stats.median <= high
    assert stats.is_noisy
    assert LatencyStats.from_dict(stats.summary(), list(stats.samples)) == stats


def test_bootstrap_interval_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(1)
    few = bootstrap_ci(rng.normal(10, 1, 20))
    many = bootstrap_ci(rng.normal(10, 1, 2000))
    assert (many[1] - many[0]) < (few[1] - few[0])
    assert many[0] < 10 < many[1]


def test_stop_rule_needs_both_minimums_and_respects_maximums() -> None:
    rule = StopRule(min_iters=5, max_iters=50, min_time_s=0.05, max_time_s=1.0)
    assert not rule.done(10, 0.01)  # time minimum not met
    assert not rule.done(3, 0.5)  # iteration minimum not met
    assert rule.done(5, 0.05)
    assert rule.done(50, 0.0) and rule.done(1, 1.0)


def test_cpu_timer_keeps_every_sample() -> None:
    calls = []
    run = time_cpu(lambda: calls.append(1), StopRule(min_iters=7, max_iters=7, min_time_s=0, max_time_s=10))
    assert len(run.samples_ms) == len(calls) == 7
    assert all(sample >= 0 for sample in run.samples_ms)
