"""A cell measured while the machine drifted carries `drifted` into its record, the reports and `compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from segbench.cell import passes
from segbench.cell.passes import run_cell
from segbench.measure.canary import CANARY_SIDE, drift_reason
from segbench.report.compare import compare_runs, comparison_table
from segbench.report.exports import render_csv, render_markdown
from segbench.report.html import render_comparison, render_report
from segbench.results import store as results
from segbench.results.runs import RunData, load_run
from segbench.run import runner
from segbench.run.executors.base import Job, JobFinished, JobStarted
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite

DRIFTED = "drifted: the host canary GEMM moved -15 % over the cell (200 → 170 GFLOP/s; tolerance 10 %)"


class InThisProcess:
    """An executor that runs each cell here, so the monkeypatched canary is the one the cell reads."""

    def run(self, jobs: list[Job], started: JobStarted, finished: JobFinished) -> None:
        for job in jobs:
            started(job)
            finished(job, run_cell(job.request))


@pytest.fixture
def threads_kept() -> Iterator[None]:
    previous = torch.get_num_threads()  # run_cell sets the thread count of the process it runs in
    yield
    torch.set_num_threads(previous)


class Stolen(passes.StealWindow):
    """12 % of the CPUs' time stolen over the timed passes."""

    def __exit__(self, *exc: object) -> None:
        self.steal_pct, self.stolen_cpu_s = 12.0, 0.6


def _drifting_run(monkeypatch: pytest.MonkeyPatch, write_suite: Callable[..., Path], out: Path) -> Path:
    readings = iter([200.0, 170.0])  # before warm-up, after the timed passes
    monkeypatch.setattr(passes, "canary_reading", lambda: {"gflops": next(readings), "side": CANARY_SIDE, "threads": 1})
    monkeypatch.setattr(passes, "StealWindow", Stolen)
    reference = {"gflops": 200.0, "side": CANARY_SIDE, "threads": 1, "where": "host CPU"}
    monkeypatch.setattr(runner, "measure_ceiling_isolated", lambda *args, **kwargs: {"matmul": {}, "canary": reference})
    suite_path = write_suite(threads=1, roofline={"measure_ceiling": True})
    return run_suite(load_suite(suite_path), suite_path, out, executor=InThisProcess()).run_dir


def test_a_drifting_cell_is_flagged_in_its_record_the_reports_and_compare(
    monkeypatch: pytest.MonkeyPatch, write_suite: Callable[..., Path], tmp_path: Path, threads_kept: None
) -> None:
    run_dir = _drifting_run(monkeypatch, write_suite, tmp_path / "results")
    [record] = [json.loads(line) for line in (run_dir / results.RESULTS_FILE).read_text().splitlines()]
    assert record["status"] == "ok", record.get("traceback") or record["error"]
    canary = record["canary"]
    assert (canary["before_gflops"], canary["after_gflops"], canary["steal_pct"]) == (200.0, 170.0, 12.0)
    assert canary["run_reference_gflops"] == 200.0 and canary["vs_run_reference_pct"] == pytest.approx(-15.0)
    assert record["drifted"] == (
        "the host canary GEMM moved -15 % over the cell (200 → 170 GFLOP/s; tolerance 10 %); "
        "the hypervisor stole 12.0 % of the CPUs' time while it was timed (bound 5 %); "
        "the host canary read -15 % against the run's reference (200 GFLOP/s, measured with the ceiling)"
    )

    run = load_run(run_dir)
    assert DRIFTED in render_markdown(run)
    assert DRIFTED in render_report(run)
    csv = render_csv(run)
    assert "drifted" in csv.splitlines()[0] and "canary.steal_pct" in csv.splitlines()[0]

    steady = RunData(path=tmp_path / "a", meta=run.meta, records=[{**record, "drifted": None}])
    comparison = compare_runs(steady, run)
    # The real cell may also be contended on a busy machine: only the drift flag is this test's.
    assert "drifted in B" in comparison.cells[0].flags and "drifted in A" not in comparison.cells[0].flags
    from rich.console import Console

    console = Console(record=True, width=400)
    console.print(comparison_table(comparison))
    assert "(! drifted in B)" in console.export_text()
    assert "(! drifted in B)" in render_comparison(comparison)


def test_a_real_fast_scnn_cell_records_its_canary_against_the_runs(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    """A real cell in its own process, beside a real (short) ceiling: the fields are there, whatever the speeds."""
    suite_path = write_suite(
        models=["fast-scnn"], resolutions=[[64, 128]], roofline={"measure_ceiling": True, "ceiling_seconds": 0.3}
    )
    run_dir = run_suite(load_suite(suite_path), suite_path, tmp_path / "results").run_dir
    [record] = [json.loads(line) for line in (run_dir / results.RESULTS_FILE).read_text().splitlines()]
    assert record["status"] == "ok", record.get("traceback") or record["error"]
    reference: dict[str, Any] = results.read_meta(run_dir)["ceiling"]["canary"]
    assert reference["gflops"] > 0 and reference["side"] == CANARY_SIDE and reference["where"] == "host CPU"
    canary = record["canary"]
    assert canary["before_gflops"] > 0 and canary["after_gflops"] > 0 and canary["threads"] == record["threads"]
    assert canary["change_pct"] == pytest.approx(100 * (canary["after_gflops"] / canary["before_gflops"] - 1))
    assert canary["steal_pct"] is not None or canary["unavailable"]["steal_pct"]
    assert canary["run_reference_gflops"] == reference["gflops"] and canary["vs_run_reference_pct"] is not None
    assert "drifted" in record and record["drifted"] == drift_reason(canary)
