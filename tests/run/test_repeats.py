"""`timing.repeats: k`: k separate processes per cell, median of medians, spread between processes, compare on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segbench.run.repeats import between_process_spread, merge_repeats
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite
from tests.helpers import cell_record


def test_a_cell_with_repeats_runs_in_k_processes_and_reports_the_median_of_their_medians(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    from tests.helpers import FAST_TIMING

    suite_path = write_suite(timing={**FAST_TIMING, "repeats": 3})
    [record] = run_suite(load_suite(suite_path), suite_path, tmp_path / "results").records
    assert record["status"] == "ok", record.get("error")
    repeats = record["repeats"]
    assert repeats["k"] == 3 and repeats["statuses"] == ["ok"] * 3 and len(repeats["process_medians_ms"]) == 3
    assert record["latency_ms"]["median"] == pytest.approx(float(np.median(repeats["process_medians_ms"])))
    assert (
        record["latency_ms"]["ci95"] == repeats["between_ci95"] and record["latency_ms"]["cv"] == repeats["between_cv"]
    )
    assert len(record["samples_ms"]) == record["iterations"] >= 3 * FAST_TIMING["min_iters"]
    log = (tmp_path / "results").glob("*/logs/*.log")
    assert len(list(log)) == 1  # one log, appended by each process


def _outcome(median: float, pid: int, samples: int = 10) -> dict[str, Any]:
    values = [median] * samples
    return {
        "status": "ok",
        "latency_ms": {"median": median, "cv": 0.0},
        "samples_ms": values,
        "end_to_end_ms": {"median": median + 1},
        "stage_samples_ms": {"forward": values},
        "pid": pid,
        "memory_mb": {"rss_peak": 100.0 + pid},
    }


def test_merge_keeps_the_middle_process_figures_and_the_between_process_interval() -> None:
    merged = merge_repeats([_outcome(12.0, 1), _outcome(10.0, 2), _outcome(11.0, 3)], batch_size=2)
    assert merged["latency_ms"]["median"] == 11.0 and merged["fps"] == pytest.approx(2000 / 11.0)
    assert merged["pid"] == 3 and merged["repeats"]["figures_from_process"] == 3  # memory etc. from the middle process
    low, high = merged["latency_ms"]["ci95"]
    assert low < 11.0 < high and merged["repeats"]["between_cv"] == pytest.approx(np.std([10, 11, 12], ddof=1) / 11)
    failed = merge_repeats([_outcome(10.0, 1), {"status": "oom", "error": "CUDA out of memory"}], batch_size=1)
    assert failed["status"] == "oom" and failed["repeats"]["statuses"] == ["ok", "oom"]
    assert between_process_spread([10.0])["ci95"] is None


def _record(medians: list[float]) -> dict[str, Any]:
    merged = merge_repeats([_outcome(m, i) for i, m in enumerate(medians)], batch_size=1)
    return cell_record(median=None, resolution=8, **merged)


def test_compare_uses_the_between_process_spread_when_both_runs_have_repeats(tmp_path: Path) -> None:
    from segbench.report.compare import compare_runs
    from segbench.results.runs import RunData

    # Every sample inside a process is identical, so a bootstrap over pooled samples calls +10 % certain;
    # between processes the medians scatter by +-15 %, so the same change is not significant.
    a = RunData(tmp_path / "a", {}, [_record([85.0, 100.0, 115.0])])
    b = RunData(tmp_path / "b", {}, [_record([95.0, 110.0, 125.0])])
    median = compare_runs(a, b).cells[0].metric("median_ms")
    assert median is not None and median.change_pct == pytest.approx(10.0)
    assert median.ci_pct is not None and median.ci_pct[0] < 0 < median.ci_pct[1] and not median.significant
    tight_b = RunData(tmp_path / "c", {}, [_record([109.0, 110.0, 111.0])])
    tight_a = RunData(tmp_path / "d", {}, [_record([99.0, 100.0, 101.0])])
    flagged = compare_runs(tight_a, tight_b, threshold=5).cells[0]
    assert flagged.metric("median_ms").significant and flagged.metric("fps").significant  # type: ignore[union-attr]


def _full_outcome(median: float, e2e: float, e2e_p95: float, pid: int) -> dict[str, Any]:
    summary = {"mean": median, "median": median, "p90": median, "p95": median, "p99": median, "min": median}
    return {
        **_outcome(median, pid),
        "latency_ms": {**summary, "max": median, "cv": 0.0, "n": 10},
        "end_to_end_ms": {**summary, "median": e2e, "p95": e2e_p95, "max": e2e_p95, "n": 10},
        "stages_ms": {"forward": {**summary, "max": median, "n": 10}},
        "first_call_ms": 10 * median,
    }


def test_one_rule_for_every_figure_of_a_repeated_cell() -> None:
    """Every timed figure is the median of the per-process figures with its between-process interval centred on it
    (the old merge centred the latency interval on the mean and took end to end's p95 from the middle process)."""
    outcomes = [
        _full_outcome(10.0, 30.0, 90.0, 1),
        _full_outcome(11.0, 20.0, 40.0, 2),
        _full_outcome(30.0, 21.0, 41.0, 3),
    ]
    merged = merge_repeats(outcomes, batch_size=1)
    latency, end_to_end = merged["latency_ms"], merged["end_to_end_ms"]
    assert latency["median"] == 11.0 and latency["ci95"][0] < 11.0 < latency["ci95"][1]
    assert np.sqrt(latency["ci95"][0] * latency["ci95"][1]) == pytest.approx(11.0)  # centred on the headline
    assert end_to_end["median"] == 21.0 and end_to_end["p95"] == 41.0  # median of 90, 40, 41: not the middle's 40
    assert merged["stages_ms"]["forward"]["median"] == 11.0 and merged["first_call_ms"] == 110.0
    assert merged["repeats"]["process_end_to_end_ms"] == [30.0, 20.0, 21.0]
    assert merged["repeats"]["process_p95_ms"] == [10.0, 11.0, 30.0]
    assert merged["end_to_end_fps"] == pytest.approx(1000 / 21.0)


def test_a_percentile_withheld_in_one_process_stays_withheld() -> None:
    outcomes = [_full_outcome(10.0, 20.0, 40.0, 1), _full_outcome(11.0, 20.0, 40.0, 2)]
    withheld = {"p99": "p99 needs n ≥ 100 samples (at least one beyond it), n = 10"}
    outcomes[1]["latency_ms"] = {**outcomes[1]["latency_ms"], "p99": None, "percentiles_withheld": withheld}
    merged = merge_repeats(outcomes, batch_size=1)
    assert merged["latency_ms"]["p99"] is None and merged["latency_ms"]["percentiles_withheld"] == withheld


def test_compare_tests_end_to_end_between_processes_too(tmp_path: Path) -> None:
    from segbench.report.compare import compare_runs
    from segbench.results.runs import RunData

    def record(e2e: list[float]) -> dict[str, Any]:
        merged = merge_repeats([_full_outcome(10.0, v, v, i) for i, v in enumerate(e2e)], batch_size=1)
        return cell_record(median=None, resolution=8, **merged)

    a = RunData(tmp_path / "a", {}, [record([20.0, 20.2, 19.8])])
    b = RunData(tmp_path / "b", {}, [record([26.0, 26.2, 25.8])])
    change = compare_runs(a, b).cells[0].metric("end_to_end_ms")
    assert change is not None and change.evidence == "between processes (3 vs 3)" and change.significant
