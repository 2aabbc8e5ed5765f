from __future__ import annotations

import json
from pathlib import Path

import pytest

from segbench.errors import ResultsError
from segbench.results import store as results
from segbench.results.frame import load
from tests.helpers import cell_record


def _record(cell_id: str, status: str = "ok", median: float = 10.0) -> dict:
    return cell_record(cell_id, status, median, samples_ms=[median])


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results.write_json(run_dir / results.META_FILE, {"suite": "s", "device": "cpu"})
    return run_dir


def test_appended_lines_carry_the_schema_version_and_load_as_a_frame(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    results.append_record(run_dir, _record("a", median=5.0))
    results.append_record(run_dir, _record("b", "oom"))
    line = json.loads((run_dir / results.RESULTS_FILE).read_text().splitlines()[0])
    assert line["schema_version"] == results.SCHEMA_VERSION
    frame = load(run_dir)  # the public segbench.results.load, named as the CSV names its columns
    assert list(frame["cell_id"]) == ["a", "b"]
    assert frame.loc[0, "latency_ms.median"] == 5.0 and frame.loc[0, "median_ms"] == 5.0
    assert frame.loc[0, "samples_ms"] == [5.0]


def test_torn_last_line_is_skipped_and_repaired_before_appending(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    results.append_record(run_dir, _record("a"))
    with open(run_dir / results.RESULTS_FILE, "a") as handle:
        handle.write('{"cell_id": "b", "stat')  # the run was killed mid-write
    assert [r["cell_id"] for r in results.read_records(run_dir)] == ["a"]
    results.drop_torn_tail(run_dir)
    results.append_record(run_dir, _record("c"))
    assert [r["cell_id"] for r in results.read_records(run_dir)] == ["a", "c"]


def test_corrupt_line_in_the_middle_is_a_clear_error(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    results.append_record(run_dir, _record("a"))
    with open(run_dir / results.RESULTS_FILE, "a") as handle:
        handle.write("not json\n")
    results.append_record(run_dir, _record("c"))
    with pytest.raises(ResultsError, match=r"results.jsonl: line 2: corrupt record"):
        results.read_records(run_dir)


def test_newer_schema_and_missing_folders_are_clear_errors(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    (run_dir / results.RESULTS_FILE).write_text(json.dumps({"cell_id": "a", "schema_version": 99}) + "\n")
    with pytest.raises(ResultsError, match="newer than this segbench"):
        results.read_records(run_dir)
    with pytest.raises(ResultsError, match="not a run directory"):
        results.read_records(tmp_path / "missing")


def test_latest_attempt_wins_and_finished_ids_honour_retry(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    for record in (_record("a", "error"), _record("b"), _record("a", "ok", 3.0)):
        results.append_record(run_dir, record)
    latest = results.read_records(run_dir)
    assert [(r["cell_id"], r["status"]) for r in latest] == [("b", "ok"), ("a", "ok")]
    results.append_record(run_dir, _record("c", "timeout"))
    assert results.finished_cell_ids(run_dir) == {"a", "b", "c"}
    assert results.finished_cell_ids(run_dir, retry_failed=True) == {"a", "b"}
