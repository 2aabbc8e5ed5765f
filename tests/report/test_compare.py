"""`segbench compare`: which changes are real.

Real runs made here: a stable one-cell suite (test-tiny sleeping 20 ms per forward on one thread, so its latency
barely depends on how busy the shared 2-core machine is) measured in three processes per cell (`timing.repeats: 3`),
twice, one after the other: the genuine A/A pair. A slowdown is that run's folder with every latency figure scaled.
A single-process run of the same suite shows what one process per side can and cannot say. And a compute-bound pair
(a GEMM per forward) run at two threads and at one shows that a real slowdown between processes is found in every
cell, while the same suite's A/A pair finds none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.report.compare import (
    CPU_REPEATED_AA_BOUND_PCT,
    SINGLE_PROCESS_AA_BOUND_PCT,
    compare_runs,
    min_samples_for_ci,
)
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
    "warmup_s": 0.0,  # the pipeline warm-up second is not what these tests compare
    "max_time_s": 3.0,
    "timeout_s": 120,
    "memory_iters": 1,
}


def stable_suite(repeats: int = 3) -> dict[str, Any]:
    return {
        "name": "compare-test",
        "device": "cpu",
        "threads": 1,  # one thread: no thread-pool hand-offs, which jitter by tens of ms on a busy 2-core machine
        "plugins": [FAULT_PLUGIN],
        "models": [{"name": "test-tiny", "options": {"sleep_ms": 20}}],
        "resolutions": [16],
        "timing": {**STABLE_TIMING, "repeats": repeats},
        "roofline": {"measure_ceiling": False},  # a 4 s device measurement per run that these tests do not read
    }


def _runs(base: Path, suite: dict[str, Any], count: int) -> list[Path]:
    suite_path = base / f"{suite['name']}.yaml"
    suite_path.write_text(yaml.safe_dump(suite, sort_keys=False))
    loaded = load_suite(suite_path)
    return [_unflagged(run_suite(loaded, suite_path, base / "results").run_dir) for _ in range(count)]


def _unflagged(run_dir: Path) -> Path:
    """The run with its `drifted` and `contended` flags cleared: these tests check the statistics, which such a flag
    would leave unjudged (a shared CI box moves the host canary by 10 % now and then); tests/cell/test_drift.py and
    test_contended_cells_are_flagged_in_compare check the flags."""
    path = run_dir / "results.jsonl"
    records = [{**json.loads(line), "drifted": None, "contended": None} for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return run_dir


@pytest.fixture(scope="module")
def repeats(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real runs of the same one-cell suite (three processes per cell), one after the other."""
    first, second = _runs(tmp_path_factory.mktemp("compare-runs"), stable_suite(), 2)
    return first, second


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same suite measured in one process per cell."""
    [run_dir] = _runs(tmp_path_factory.mktemp("compare-single"), {**stable_suite(1), "name": "compare-single"}, 1)
    return run_dir


SCALED_SUMMARIES = ("latency_ms", "end_to_end_ms")
UNSCALED = ("n", "cv", "n_per_process")


def _scale(value: Any, factor: float) -> Any:
    if isinstance(value, dict):
        return {k: v if k in UNSCALED else _scale(v, factor) for k, v in value.items()}
    if isinstance(value, list):
        return [_scale(v, factor) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value * factor
    return value


def scaled(record: dict[str, Any], factor: float) -> dict[str, Any]:
    """The same cell, every timed figure multiplied by factor (a slowdown injected into real data)."""
    if record.get("status") != "ok":
        return record
    record = dict(record)
    for key in (*SCALED_SUMMARIES, "samples_ms", "stages_ms", "stage_samples_ms"):
        record[key] = _scale(record[key], factor)
    if record.get("repeats"):
        record["repeats"] = {
            k: _scale(v, factor) if k.startswith("process_") or k == "between_ci95" else v
            for k, v in record["repeats"].items()
        }
    record["fps"] /= factor
    record["end_to_end_fps"] /= factor
    return record


@ALONE
def test_the_stable_cell_runs_in_three_processes(repeats: tuple[Path, Path]) -> None:
    for run_dir in repeats:
        [line] = (run_dir / "results.jsonl").read_text().splitlines()
        record = json.loads(line)
        assert record["status"] == "ok" and record["repeats"]["k"] == 3
        assert all(n >= 30 for n in record["latency_ms"]["n_per_process"])
        assert 19 < record["latency_ms"]["median"] < 30


@ALONE
def test_a_20_percent_slowdown_between_processes_is_significant(repeats: tuple[Path, Path], tmp_path: Path) -> None:
    first, _ = repeats
    slow = copy_run(first, tmp_path / "slow", change=lambda r: scaled(r, 1.2))
    comparison = compare_runs(first, slow, threshold=10)  # a CPU's default (25 %) would hide 20 %
    [cell] = comparison.cells
    median = cell.metric("median_ms")
    assert median is not None and median.change_pct == pytest.approx(20.0, abs=0.01)
    assert median.ci_pct is not None and 10 < median.ci_pct[0] <= 20 <= median.ci_pct[1] < 30
    assert median.significant and median.worse and not median.indicative
    assert median.evidence == "between processes (3 vs 3)" and median.p_adjusted is not None
    fps = cell.metric("fps")
    assert fps is not None and fps.change_pct == pytest.approx(-100 / 6, abs=0.01) and fps.significant and fps.worse
    assert fps.ci_pct is not None and fps.ci_pct[0] < fps.change_pct < fps.ci_pct[1]
    end_to_end = cell.metric("end_to_end_ms")
    assert end_to_end is not None and end_to_end.significant and end_to_end.evidence.startswith("between")
    assert not cell.metric("peak_mb").significant  # type: ignore[union-attr]  # memory was not touched
    assert comparison.latency_regressions(10) == [cell] and comparison.latency_regressions(25) == []
    assert comparison.significant_count == (1, 0)
    reverse = compare_runs(
        slow, first, threshold=10
    )  # the reverse direction is a significant speed-up, not a regression
    assert reverse.significant_count == (0, 1) and reverse.latency_regressions(1) == []


@ALONE
def test_an_a_a_pair_between_processes_is_not_flagged(repeats: tuple[Path, Path]) -> None:
    first, second = repeats
    for other in (first, second):
        comparison = compare_runs(first, other)
        [cell] = comparison.cells
        for metric in cell.metrics:
            assert not metric.significant, (other.name, metric)
        assert comparison.latency_regressions(0) == [] and comparison.significant_count == (0, 0)
    same = compare_runs(first, first).cells[0].metric("median_ms")
    assert same is not None and same.change_pct == 0 and same.ci_pct is not None
    assert same.ci_pct[0] <= 0 <= same.ci_pct[1]


@ALONE
def on_gpu(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "device": "cuda:0"}


def test_the_default_threshold_is_the_measured_a_a_spread(repeats: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = repeats
    comparison = compare_runs(first, second)
    cvs = [json.loads((run / "results.jsonl").read_text())["repeats"]["between_cv"] for run in repeats]
    own = 2 * 100 * (cvs[0] + cvs[1]) / 2  # 2 x their median
    assert comparison.threshold_pct == pytest.approx(max(2.0, own, CPU_REPEATED_AA_BOUND_PCT))
    assert comparison.threshold_source.startswith("auto: the larger of 2 x the runs' median between-process CV")
    gpu_a, gpu_b = (copy_run(run, tmp_path / f"gpu-{run.name}", change=on_gpu) for run in repeats)
    assert compare_runs(gpu_a, gpu_b).threshold_source.endswith("no A/A runs measured on GPUs yet")
    assert compare_runs(first, second, threshold=7.5).threshold_source == "--threshold"


@ALONE
def test_one_process_per_side_is_only_indicative(single: Path, tmp_path: Path) -> None:
    """A 20 % change measured in one process per run is shown as indicative and never fails the gate; a change
    beyond what single-process A/A runs reach (the bound) is significant."""
    slow = copy_run(single, tmp_path / "slow", change=lambda r: scaled(r, 1.2))
    comparison = compare_runs(single, slow)
    median = comparison.cells[0].metric("median_ms")
    assert median is not None and median.indicative and not median.significant
    assert median.evidence == "within one process (block bootstrap)" and median.ci_pct is not None
    assert median.ci_pct[0] > 0  # the block bootstrap sees the change, but not the process-to-process spread
    assert comparison.threshold_pct == SINGLE_PROCESS_AA_BOUND_PCT
    runner = CliRunner()
    gate = runner.invoke(app, ["compare", str(single), str(slow), "--fail-on-regression", "10"])
    assert gate.exit_code == 0, gate.output
    assert "+20.0 %" in gate.stdout and "indicative" in gate.stdout and "timing.repeats=3" in gate.stdout
    far = copy_run(single, tmp_path / "far", change=lambda r: scaled(r, 1.5))
    beyond = compare_runs(single, far).cells[0].metric("median_ms")
    assert beyond is not None and beyond.indicative and beyond.significant
    assert runner.invoke(app, ["compare", str(single), str(far), "--fail-on-regression", "10"]).exit_code == 1


@ALONE
def test_cli_fail_on_regression_sets_the_exit_code_and_writes_html(repeats: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = repeats
    slow = copy_run(first, tmp_path / "slow", change=lambda r: scaled(r, 1.2))
    runner = CliRunner()
    flagged = runner.invoke(
        app,
        [
            "compare",
            str(first),
            str(slow),
            "--threshold",
            "10",
            "--fail-on-regression",
            "10",
            "-o",
            str(tmp_path / "cmp.html"),
        ],
    )
    assert flagged.exit_code == 1, flagged.output
    assert (
        "1 significantly slower" in flagged.stdout and "+20.0 %" in flagged.stdout and "regression:" in flagged.stderr
    )
    page = (tmp_path / "cmp.html").read_text()
    assert "+20.0 % (!)" in page and 'id="compare-table"' in page and "1 significantly slower" in page
    assert "Holm" in page and "3 vs 3 processes" in page
    assert runner.invoke(app, ["compare", str(first), str(slow), "--fail-on-regression", "10"]).exit_code == 0  # 25 %
    assert runner.invoke(app, ["compare", str(first), str(slow), "--fail-on-regression", "25"]).exit_code == 0
    assert runner.invoke(app, ["compare", str(first), str(slow)]).exit_code == 0  # without the flag it only reports
    repeat = runner.invoke(app, ["compare", str(first), str(second), "--fail-on-regression", "10"])
    assert repeat.exit_code == 0, repeat.output
    assert "0 significantly slower, 0 significantly faster" in repeat.stdout
    missing = runner.invoke(app, ["compare", str(first), str(tmp_path / "nope")])
    assert (
        missing.exit_code == 2
        and "not a run directory" in missing.stderr
        and len(missing.stderr.strip().splitlines()) == 1
    )


@ALONE
def test_confirm_reruns_the_flagged_cell_and_finds_the_injected_change_was_not_real(
    single: Path, tmp_path: Path
) -> None:
    """A 50 % slowdown injected into B's record is flagged; `--confirm` reruns that cell of B (three processes) on
    the same code, finds the change gone, and the gate passes on the confirmation."""
    far = copy_run(single, tmp_path / "far", change=lambda r: scaled(r, 1.5))
    done = CliRunner().invoke(app, ["compare", str(single), str(far), "--confirm", "--fail-on-regression", "10"])
    assert done.exit_code == 0, done.output
    assert "rerunning 1 flagged cell(s) of B in 3 processes" in done.stdout
    assert "not reproduced (+50.0 % then" in done.stdout
    [rerun] = [path for path in far.parent.iterdir() if path.name.startswith("compare-single-confirm")]
    [record] = [json.loads(line) for line in (rerun / "results.jsonl").read_text().splitlines()]
    assert record["repeats"]["k"] == 3


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


def compute_suite(threads: int) -> dict[str, Any]:
    """Two compute-bound cells (a GEMM per forward): their speed follows the thread count."""
    return {
        **stable_suite(3),
        "name": f"compare-gemm-{threads}t",
        "threads": threads,
        "models": [{"name": "test-tiny", "options": {"gemm_size": size}} for size in (384, 512)],
    }


def _gemm_runs(base: Path) -> tuple[Path, Path, Path]:
    """Two A/A runs at two threads, minutes apart at most, and one run of the same cells at one thread (the thread
    count is not an axis, so the cells match)."""
    base.mkdir(parents=True)
    first, second = _runs(base, compute_suite(2), 2)
    [half] = _runs(base, compute_suite(1), 1)
    return first, second, half


def _a_a_and_half_threads_problems(first: Path, second: Path, half: Path) -> list[str]:
    """What an A/A pair and a half-threads run got wrong: a change found between the same cells, or one of the two
    cells not found slower at half the threads."""
    runner = CliRunner()
    problems = []
    same = compare_runs(first, second)
    if len(same.cells) != 2 or same.significant_count != (0, 0):
        problems.append(f"A/A found a change: {[c.metric('median_ms') for c in same.cells]}")
    if runner.invoke(app, ["compare", str(first), str(second), "--fail-on-regression", "10"]).exit_code != 0:
        problems.append("A/A: --fail-on-regression 10 failed")
    slower = compare_runs(first, half)
    if len(slower.cells) != 2 or slower.significant_count != (2, 0):
        problems.append(f"half the threads not slower in both cells: {[c.metric('median_ms') for c in slower.cells]}")
    evidence = {cell.metric("median_ms").evidence for cell in slower.cells}  # type: ignore[union-attr]
    if evidence != {"between processes (3 vs 3)"}:
        problems.append(f"evidence {evidence}")
    if runner.invoke(app, ["compare", str(first), str(half), "--fail-on-regression", "10"]).exit_code != 1:
        problems.append("half the threads: --fail-on-regression 10 passed")
    return problems


@ALONE
@pytest.mark.slow
def test_a_a_runs_find_nothing_and_half_the_threads_is_slower_in_every_cell(tmp_path: Path) -> None:
    """A shared 2-core VM can change speed between two runs minutes apart (a core taken by a neighbour: the CI
    machine's 2-thread A side once ran 33 % slow, so half the threads read only +33 %), which no canary inside
    either run sees. Such a chance fails one try; a fresh set of runs is made once, and a compare that finds
    changes that are not there (or misses one that is) fails both."""
    tries = [_a_a_and_half_threads_problems(*_gemm_runs(tmp_path / "try-0"))]
    if tries[0]:
        tries.append(_a_a_and_half_threads_problems(*_gemm_runs(tmp_path / "try-1")))
    assert not tries[-1], tries


def test_quantile_intervals_need_samples_beyond_them() -> None:
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

    console = Console(record=True, width=400)
    console.print(comparison_table(comparison))
    assert "(! contended in B)" in console.export_text()
    assert "(! contended in B)" in render_comparison(comparison)
