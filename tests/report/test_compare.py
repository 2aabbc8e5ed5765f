"""`segbench compare`: a 20 % slowdown is flagged, repeats of the same run are not, fingerprints and
unmatched cells are reported, and --fail-on-regression sets the exit code.

The baseline is a real run of one stable cell: test-tiny sleeping 20 ms per forward pass on one
thread, so its latency barely depends on how busy the (shared, 2-core) machine is. A second real run of the same
suite is the genuine repeat; a bootstrap-resampled copy of the first is a second kind of repeat (same
distribution, different draws); the slowdown is the first run's folder with every latency sample and
statistic scaled by 1.2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.measure.stats import LatencyStats
from segbench.report.compare import bootstrap_change_ci, compare_runs, min_samples_for_ci
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite
from tests.helpers import FAULT_PLUGIN, FIXTURES

from .test_report import copy_run

# The two runs in `repeats` are compared for a change: a neighbour test busy in one run and idle in the other
# would be one. Whichever of these tests builds `repeats` (module-scoped) holds the machine alone meanwhile.
ALONE = pytest.mark.alone

STABLE_TIMING = {
    "warmup_iters": 2,
    "min_iters": 30,
    "max_iters": 60,
    "min_time_s": 0.5,
    "max_time_s": 3.0,
    "timeout_s": 120,
    "memory_iters": 1,
}


def stable_suite() -> dict[str, Any]:
    return {
        "name": "compare-test",
        "device": "cpu",
        "threads": 1,  # one thread: no thread-pool hand-offs, which jitter by tens of ms on a busy 2-core machine
        "plugins": [FAULT_PLUGIN],
        "models": [{"name": "test-tiny", "options": {"sleep_ms": 20}}],
        "resolutions": [16],
        "timing": STABLE_TIMING,
        "roofline": {"measure_ceiling": False},  # a 4 s device measurement per run that these tests do not read
    }


@pytest.fixture(scope="module")
def repeats(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real runs of the same one-cell suite, one after the other."""
    base = tmp_path_factory.mktemp("compare-runs")
    suite_path = base / "suite.yaml"
    suite_path.write_text(yaml.safe_dump(stable_suite(), sort_keys=False))
    suite = load_suite(suite_path)
    first = run_suite(suite, suite_path, base / "results").run_dir
    second = run_suite(suite, suite_path, base / "results").run_dir
    return first, second


def scaled(record: dict[str, Any], factor: float) -> dict[str, Any]:
    """The same cell, every latency figure multiplied by factor (a slowdown injected into real data)."""
    if record.get("status") != "ok":
        return record
    record["samples_ms"] = [v * factor for v in record["samples_ms"]]
    record["latency_ms"] = LatencyStats.from_samples(record["samples_ms"]).summary()
    record["fps"] = record["batch_size"] * 1000 / record["latency_ms"]["median"]
    record["stage_samples_ms"] = {
        stage: [v * factor for v in values] for stage, values in record["stage_samples_ms"].items()
    }
    record["end_to_end_ms"] = LatencyStats.from_samples(
        np.sum(list(record["stage_samples_ms"].values()), axis=0)
    ).summary()
    return record


def resampled(record: dict[str, Any]) -> dict[str, Any]:
    """A repeat drawn from the same samples: a seeded bootstrap resample with its statistics recomputed."""
    if record.get("status") != "ok":
        return record
    rng = np.random.default_rng(7)
    record["samples_ms"] = [float(v) for v in rng.choice(record["samples_ms"], size=len(record["samples_ms"]))]
    record["latency_ms"] = LatencyStats.from_samples(record["samples_ms"]).summary()
    record["fps"] = record["batch_size"] * 1000 / record["latency_ms"]["median"]
    return record


@ALONE
def test_the_stable_cell_has_enough_samples(repeats: tuple[Path, Path]) -> None:
    for run_dir in repeats:
        [line] = (run_dir / "results.jsonl").read_text().splitlines()
        record = json.loads(line)
        assert record["status"] == "ok" and len(record["samples_ms"]) >= 30
        assert 19 < record["latency_ms"]["median"] < 30


@ALONE
def test_injected_20_percent_slowdown_is_flagged(repeats: tuple[Path, Path], tmp_path: Path) -> None:
    first, _ = repeats
    slow = copy_run(first, tmp_path / "slow", change=lambda r: scaled(r, 1.2))
    comparison = compare_runs(first, slow)
    [cell] = comparison.cells
    median = cell.metric("median_ms")
    assert median is not None and median.change_pct == pytest.approx(20.0, abs=0.01)
    assert median.ci_pct is not None and 10 < median.ci_pct[0] <= 20 <= median.ci_pct[1] < 30
    assert median.significant and median.worse
    fps = cell.metric("fps")
    assert fps is not None and fps.change_pct == pytest.approx(-100 / 6, abs=0.01) and fps.significant and fps.worse
    assert fps.ci_pct is not None and fps.ci_pct[0] < fps.change_pct < fps.ci_pct[1]
    assert cell.metric("end_to_end_ms").significant  # type: ignore[union-attr]
    p95 = cell.metric("p95_ms")  # 30-60 samples: too few beyond the 95th percentile for an interval
    assert (
        p95 is not None
        and p95.change_pct == pytest.approx(20.0, abs=0.01)
        and p95.ci_pct is None
        and not p95.significant
    )
    assert not cell.metric("peak_mb").significant  # type: ignore[union-attr]  # memory was not touched
    assert comparison.latency_regressions(10) == [cell] and comparison.latency_regressions(25) == []
    assert comparison.significant_count == (1, 0)
    # The reverse direction is a significant speed-up, not a regression.
    reverse = compare_runs(slow, first)
    assert reverse.significant_count == (0, 1) and reverse.latency_regressions(1) == []


@ALONE
def test_repeats_of_the_same_run_are_not_flagged(repeats: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = repeats
    redrawn = copy_run(first, tmp_path / "redrawn", change=resampled)
    for other in (first, second, redrawn):
        comparison = compare_runs(first, other)
        [cell] = comparison.cells
        for metric in cell.metrics:
            assert not metric.significant, (other.name, metric)
        assert comparison.latency_regressions(0) == [] and comparison.significant_count == (0, 0)
    same = compare_runs(first, first).cells[0].metric("median_ms")
    assert (
        same is not None and same.change_pct == 0 and same.ci_pct is not None and same.ci_pct[0] <= 0 <= same.ci_pct[1]
    )


@ALONE
def test_cli_fail_on_regression_sets_the_exit_code_and_writes_html(repeats: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = repeats
    slow = copy_run(first, tmp_path / "slow", change=lambda r: scaled(r, 1.2))
    runner = CliRunner()
    flagged = runner.invoke(
        app, ["compare", str(first), str(slow), "--fail-on-regression", "10", "-o", str(tmp_path / "cmp.html")]
    )
    assert flagged.exit_code == 1, flagged.output
    assert "(!)" in flagged.stdout and "+20.0 %" in flagged.stdout and "regression:" in flagged.stderr
    page = (tmp_path / "cmp.html").read_text()
    assert "+20.0 % (!)" in page and 'id="compare-table"' in page and "1 significantly slower" in page
    assert runner.invoke(app, ["compare", str(first), str(slow), "--fail-on-regression", "25"]).exit_code == 0
    assert runner.invoke(app, ["compare", str(first), str(slow)]).exit_code == 0  # without the flag it only reports
    repeat = runner.invoke(app, ["compare", str(first), str(second), "--fail-on-regression", "5"])
    assert repeat.exit_code == 0, repeat.output
    assert "(!)" not in repeat.stdout
    missing = runner.invoke(app, ["compare", str(first), str(tmp_path / "nope")])
    assert (
        missing.exit_code == 2
        and "not a run directory" in missing.stderr
        and len(missing.stderr.strip().splitlines()) == 1
    )


@ALONE
def test_fingerprint_differences_warn_and_ignore_volatile_fields(repeats: tuple[Path, Path], tmp_path: Path) -> None:
    first, _ = repeats
    meta = json.loads((first / "meta.json").read_text())
    fingerprint = meta["fingerprint"]
    changed = {
        **fingerprint,
        "hostname": "another-host",
        "packages": {**fingerprint["packages"], "torch": "0.0.1-test"},
        "segbench": {**fingerprint["segbench"], "commit": "abc1234"},
    }
    other = copy_run(
        first, tmp_path / "other", meta={"fingerprint": changed, "start_time": "2030-01-01T00:00:00+00:00"}
    )
    differences = compare_runs(first, other).fingerprint_differences
    assert any("package torch" in d and "0.0.1-test" in d for d in differences)
    assert any("segbench commit" in d and "abc1234" in d for d in differences)
    assert not any("hostname" in d or "another-host" in d for d in differences)
    volatile_only = copy_run(
        first, tmp_path / "volatile", meta={"fingerprint": {**fingerprint, "hostname": "x"}, "duration_s": 1}
    )
    assert compare_runs(first, volatile_only).fingerprint_differences == ()
    done = CliRunner().invoke(app, ["compare", str(first), str(other)])
    assert done.exit_code == 0 and "fingerprints differ" in done.stdout


@ALONE
def test_unmatched_cells_and_status_changes(repeats: tuple[Path, Path], tmp_path: Path) -> None:
    first, _ = repeats

    def moved(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "cell_id": "000000000000", "resolution": [32, 32]}

    elsewhere = compare_runs(first, copy_run(first, tmp_path / "moved", change=moved))
    assert (
        elsewhere.cells == () and len(elsewhere.only_in_a) == 1 and elsewhere.only_in_b[0].startswith("test-tiny 32x32")
    )
    failed = copy_run(first, tmp_path / "failed", change=lambda r: {**r, "status": "oom", "error": "out of memory"})
    comparison = compare_runs(first, failed)
    assert [c.status_b for c in comparison.status_regressions] == ["oom"] and comparison.cells[0].metrics == ()
    assert CliRunner().invoke(app, ["compare", str(first), str(failed), "--fail-on-regression", "50"]).exit_code == 1


def test_bootstrap_change_ci_on_known_samples() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(100, 2, size=200)
    low, high = bootstrap_change_ci(base, base)
    assert low < 0 < high and high - low < 2
    low, high = bootstrap_change_ci(base, base * 1.2)
    assert 18 < low < 20 < high < 22
    assert bootstrap_change_ci(base, base, seed=3) == bootstrap_change_ci(base, base, seed=3)  # seeded: reproducible
    assert bootstrap_change_ci(base, base * 1.2, quantile=95)[0] > 15
    assert (min_samples_for_ci(50), min_samples_for_ci(95)) == (10, 100)


# ---- machines and measurement conditions (the real H100 run as both sides) -------------------------------


def _h100_run(path: Path, **meta_changes: Any) -> Any:
    from segbench.results.runs import RunData

    source = FIXTURES / "h100-rtx3060"
    meta = {**json.loads((source / "meta.json").read_text()), **meta_changes}
    records = [json.loads(line) for line in (source / "results.jsonl").read_text().splitlines()]
    return RunData(path=path, meta=meta, records=records)


def test_ceilings_that_differ_by_more_than_10_percent_warn_and_flag(tmp_path: Path) -> None:
    a = _h100_run(tmp_path / "a")
    ceiling = json.loads(json.dumps(a.meta["ceiling"]))
    ceiling["matmul"]["fp32"]["gflops"] *= 175.9 / 67.7  # the AVX2 vs AVX-512 quick runs
    b = _h100_run(tmp_path / "b", ceiling=ceiling)
    comparison = compare_runs(a, b)
    [warning] = comparison.machine_warnings
    assert warning.startswith("measured fp32 matmul ceiling 51560.3 → 133965.3 GFLOP/s (+160 %)")
    ceiling["matmul"]["fp32"]["gflops"] = a.meta["ceiling"]["matmul"]["fp32"]["gflops"] * 1.05
    assert compare_runs(a, _h100_run(tmp_path / "c", ceiling=ceiling)).machine_warnings == ()


def test_fingerprints_compare_the_cpu_instruction_sets(tmp_path: Path) -> None:
    a = _h100_run(tmp_path / "a")
    fingerprint = a.meta["fingerprint"]
    avx2_only = {**fingerprint, "cpu": {**fingerprint["cpu"], "flags": ["avx", "avx2", "f16c", "fma"]}}
    differences = compare_runs(a, _h100_run(tmp_path / "b", fingerprint=avx2_only)).fingerprint_differences
    assert any(
        line.startswith("CPU instruction sets: amx_bf16") and line.endswith("→ avx avx2 f16c fma")
        for line in differences
    )


def test_contended_cells_are_flagged_in_compare(tmp_path: Path) -> None:
    from segbench.report.compare import comparison_table
    from segbench.report.html import render_comparison

    a = _h100_run(tmp_path / "a")
    b = _h100_run(tmp_path / "b")
    b.records[0]["contended"] = "other processes used 1.90 CPUs while it was timed"
    comparison = compare_runs(a, b)
    assert comparison.cells[0].flags == ("contended in B",) and all(cell.flags == () for cell in comparison.cells[1:])
    from rich.console import Console

    console = Console(record=True, width=250)
    console.print(comparison_table(comparison))
    assert "(! contended in B)" in console.export_text()
    assert "(! contended in B)" in render_comparison(comparison)
