"""Issue 34, root cause 3: a cell's outcome is plain JSON and a valid record before it is appended.

A plugin's `detections()` returning a 0-d tensor aborted the run ("cannot write (Connection reset by peer)"); one
returning `numpy.int64` stored "3", which segbench's own reader then refused, so the folder could no longer be
reported or resumed. Each test runs the real CLI on cells of `tests/hostile_models.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segbench.results import store as results
from tests.helpers import TESTS_DIR, segbench

HOSTILE_PLUGIN = str(TESTS_DIR / "hostile_models.py")


def test_numpy_and_tensor_counts_are_stored_as_numbers_and_a_bad_one_is_that_cells_error(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    """Guards root cause 3: the outcome is converted in the cell and validated before it is appended."""
    suite = write_suite(
        plugins=[HOSTILE_PLUGIN],
        models=["hostile-tensor-count", "hostile-numpy-count", "hostile-fraction-count"],
    )
    done = segbench("run", str(suite), "--out", str(tmp_path / "out"))
    assert "Traceback" not in done.stderr and "cannot write" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr  # one cell ended in error; the run itself completed
    [run_dir] = (tmp_path / "out").iterdir()
    by_model = {record["model"]: record for record in results.read_records(run_dir)}  # the folder reads back
    for model in ("hostile-tensor-count", "hostile-numpy-count"):
        assert by_model[model]["status"] == "ok", by_model[model].get("error")
        assert set(by_model[model]["detections_per_frame"]) == {3}
    bad = by_model["hostile-fraction-count"]
    assert bad["status"] == "error" and "detections_per_frame" in bad["error"], bad
    assert results.read_meta(run_dir)["status"] == "complete"
    assert segbench("report", str(run_dir), "-o", str(tmp_path / "r.md"), "--format", "md").returncode == 0
