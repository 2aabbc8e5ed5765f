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
    assert stats.p90 is None and stats.p99 is None  # 5 samples support no tail percentile (see below)
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


def test_fewer_than_five_samples_withhold_cv_and_ci_with_the_reason() -> None:
    single = LatencyStats.from_samples(
        [10388.0]
    )  # the committed zoo-cpu run's segformer-b2: n = 1, "CV 0.0, CI [10388, 10388]"
    assert single.cv is None and single.ci95 is None and not single.is_noisy
    assert single.spread_unavailable == "n = 1 < 5 samples: CV and CI would be meaningless"
    summary = single.summary()
    assert summary["cv"] is None and summary["ci95"] is None and summary["spread_unavailable"]
    assert LatencyStats.from_dict(summary, [10388.0]) == single
    five = LatencyStats.from_samples([10.0, 11.0, 12.0, 10.5, 11.5])
    assert five.cv is not None and five.ci95 is not None and five.spread_unavailable is None


def test_p95_needs_20_samples_and_p99_100_with_the_reason_below() -> None:
    # The rule n >= 1 / (1 - q): below it no sample is expected beyond the quantile, and the "p99" is the maximum.
    nineteen, twenty = LatencyStats.from_samples(list(range(1, 20))), LatencyStats.from_samples(list(range(1, 21)))
    assert nineteen.p95 is None and nineteen.p90 == pytest.approx(np.percentile(range(1, 20), 90))
    assert nineteen.percentiles_withheld is not None
    assert nineteen.percentiles_withheld["p95"] == "p95 needs n ≥ 20 samples (at least one beyond it), n = 19"
    assert twenty.p95 == pytest.approx(np.percentile(range(1, 21), 95)) and twenty.p99 is None
    assert twenty.percentiles_withheld is not None and "p95" not in twenty.percentiles_withheld
    assert "p99 needs n ≥ 100" in twenty.percentiles_withheld["p99"]
    hundred = LatencyStats.from_samples(list(range(100)))
    assert hundred.p99 == pytest.approx(np.percentile(range(100), 99)) and hundred.percentiles_withheld is None
    assert LatencyStats.from_samples([3.0] * 9).p90 is None and LatencyStats.from_samples([3.0] * 10).p90 == 3.0
    assert twenty.summary()["p95"] is not None and twenty.summary()["p99"] is None  # what results.jsonl stores


def test_an_old_summary_with_a_p99_of_two_samples_reads_back_without_it() -> None:
    # The committed zoo-cpu Mask2Former-Swin-B end-to-end summary, written before the rule: n = 2 and a numeric p99.
    old = {"mean": 5322.9, "median": 5322.9, "p90": 5498.7, "p95": 5520.6, "p99": 5538.2, "min": 5103.3}
    old |= {"max": 5542.6, "std": 310.6, "cv": None, "ci95": None, "n": 2}
    stats = LatencyStats.from_dict(old)
    assert stats.p90 is None and stats.p95 is None and stats.p99 is None
    assert stats.percentiles_withheld is not None and stats.percentiles_withheld["p99"].endswith("n = 2")


def test_a_cell_cut_short_by_max_time_is_flagged_undersampled() -> None:
    from segbench.cell.passes import measure_cell
    from segbench.cell.request import CellRequest
    from segbench.models.registry import load_plugin
    from segbench.suite.matrix import CellSpec
    from segbench.suite.schema import Timing
    from tests.helpers import FAULT_PLUGIN

    load_plugin(FAULT_PLUGIN)
    timing = Timing(
        warmup_iters=1, warmup_s=0.0, min_iters=10, max_iters=100, min_time_s=0.0, max_time_s=1e-6, memory_iters=1
    )
    outcome = measure_cell(CellRequest(CellSpec("test-tiny", (16, 16), 1, "fp32", "eager"), "cpu", timing, 10.0, 1))
    assert outcome["iterations"] == 1
    assert outcome["undersampled"].startswith(
        "latency pass n = 1, end-to-end pass n = 1 < min_iters 10: max_time_s (1e-06 s) ended the timed loop first; "
        "min_iters at "
    )
    assert outcome["latency_ms"]["cv"] is None and outcome["latency_ms"]["ci95"] is None
    # The machine's load around the timed passes travels with every cell (item 17).
    assert (
        outcome["load"]["before"]["load_1m"] is not None
        and outcome["load"]["others_cpus"] is not None
        and "contended" in outcome
    )


def test_report_lines_carry_the_undersampled_flag() -> None:
    from segbench.report.summary import measurement_flags, status_text

    record = {
        "status": "ok",
        "latency_ms": {"median": 10388.0},
        "fps": 0.1,
        "memory_mb": {},
        "undersampled": "n = 1 < min_iters 10: max_time_s (10 s) ended the timed loop first",
    }
    assert measurement_flags(record) == [f"undersampled: {record['undersampled']}"]
    assert "(! undersampled: n = 1 < min_iters 10" in status_text(record)
