"""Issue 33.2: several models, each run with its own weights, in one report and one DataFrame; a compare with nothing
to compare is an error, not an empty table. Built from a committed real run (results/quick-20261201T233829Z),
copied and renamed the way a second model's run would look."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from segbench import results
from tests.helpers import REPO, segbench

from .test_report import copy_run

QUICK = REPO / "results" / "quick-20261201T233829Z"


def _as_other_model(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "model": "segformer-b0", "family": "segformer", "cell_id": f"x{record['cell_id'][1:]}"}


@pytest.fixture()
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    first = copy_run(QUICK, tmp_path / "fast-scnn-run")
    second = copy_run(QUICK, tmp_path / "segformer-run", change=_as_other_model)
    return first, second


def test_report_takes_several_run_folders_and_shows_every_cell(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """`segbench report RUN_A RUN_B` failed with "Got unexpected extra argument(s)"."""
    first, second = two_runs
    for fmt in ("html", "md", "csv"):
        out = tmp_path / f"both.{fmt}"
        done = segbench("report", str(first), str(second), "--format", fmt, "-o", str(out))
        assert done.returncode == 0, done.stderr
        text = out.read_text()
        assert "fast-scnn" in text and "segformer-b0" in text
        if fmt != "csv":
            assert "One report over 2 runs: fast-scnn-run (5 cells" in text and "all measured on" in text
        else:
            assert "fast-scnn-run" in text and "segformer-run" in text  # the `run` column
    default = segbench("report", str(first), str(second), cwd=tmp_path)
    assert default.returncode == 0 and (tmp_path / "reports" / "fast-scnn-run+segformer-run.html").is_file()


def test_a_cell_both_runs_measured_is_kept_twice_named_by_run(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    first, _ = two_runs
    again = copy_run(QUICK, tmp_path / "again")
    out = tmp_path / "same.csv"
    done = segbench("report", str(first), str(again), "--format", "csv", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "fast-scnn [again]" in out.read_text() and "fast-scnn [fast-scnn-run]" in out.read_text()


def test_results_load_reads_several_runs_into_one_frame(two_runs: tuple[Path, Path]) -> None:
    frame = results.load(list(two_runs))
    assert len(frame) == 10 and set(frame["run"]) == {"fast-scnn-run", "segformer-run"}
    assert set(frame["model"]) == {"fast-scnn", "segformer-b0"}


def test_compare_of_runs_sharing_no_cell_is_a_one_line_error(two_runs: tuple[Path, Path]) -> None:
    """It printed an empty table and exited 0."""
    done = segbench("compare", *map(str, two_runs))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "share no cell" in done.stderr and "segbench report A B" in done.stderr
