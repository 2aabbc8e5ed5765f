"""Issue 33.10: `segbench.results.load` names its columns as the report's CSV does (one set of names), read the same
way; built from two committed real runs (one with accuracy against labels)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from segbench import results
from segbench.results.frame import JUDGED, SAMPLES
from tests.helpers import REPO, segbench

RUNS = [REPO / "results" / "quick-20261201T233829Z", REPO / "results" / "accuracy-demo-20261202T041955Z"]


@pytest.mark.parametrize("run_dir", RUNS, ids=lambda path: path.name.split("-2")[0])
def test_the_dataframe_and_the_csv_name_every_column_alike(run_dir: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "cells.csv"
    done = segbench("report", str(run_dir), "--format", "csv", "-o", str(csv_path))
    assert done.returncode == 0, done.stderr
    from_csv = pd.read_csv(csv_path)
    frame = results.load(run_dir)
    # The same columns in the same order: the CSV adds only the report's verdict, the frame only the raw samples.
    assert [c for c in frame.columns if c != SAMPLES] == [c for c in from_csv.columns if c not in JUDGED]
    assert frame.columns[-1] == SAMPLES and all(isinstance(s, list) for s in frame[SAMPLES].dropna())
    for column in ("batch", "median_ms", "p95_ms", "fps", "peak_mb", "latency_ms.median", "speedup"):
        assert column in frame.columns
    # The same cells in the same order, with the same values.
    assert list(frame["cell_id"]) == list(from_csv["cell_id"])
    for column in ("median_ms", "fps", "speedup", "batch_size"):
        pd.testing.assert_series_equal(frame[column].astype(float), from_csv[column].astype(float), check_names=False)
