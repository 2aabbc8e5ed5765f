"""Issue 34, root cause 12: `report -o` and `compare -o` could overwrite the run's own results.jsonl or meta.json."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.results import store as results
from tests.helpers import cell_record


def a_run(path: Path) -> Path:
    path.mkdir(parents=True)
    results.write_json(path / results.META_FILE, {"suite": "s", "device": "cpu"})
    results.append_record(path, cell_record("c", samples_ms=[10.0, 10.0, 10.0]))
    (path / results.SUITE_FILE).write_text("name: s\n")
    (path / results.LOG_DIR).mkdir()
    (path / results.LOG_DIR / "c.log").write_text("log\n")
    return path


def contents(run_dir: Path) -> dict[str, bytes]:
    return {str(path.relative_to(run_dir)): path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file()}


def refused(args: list[str]) -> str:
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, (done.exit_code, done.output)
    [line] = done.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize("name", ["results.jsonl", "meta.json", "suite.yaml", "logs/c.log", "a link", "a hard link"])
def test_report_and_compare_never_write_over_a_runs_own_files(tmp_path: Path, name: str) -> None:
    """Guards root cause 12: an output path that is (or points at) one of the run's own files is refused in one line,
    and the run folder is left byte for byte as it was."""
    run_a, run_b = a_run(tmp_path / "a"), a_run(tmp_path / "b")
    output = run_b / name
    if name == "a link":
        output = tmp_path / "out.html"
        output.symlink_to(run_b / results.RESULTS_FILE)
    elif name == "a hard link":
        output = tmp_path / "out.html"
        os.link(run_b / results.META_FILE, output)
    before = contents(run_b)
    for args in (
        ["report", str(run_b), "-o", str(output), "--format", "csv"],
        ["compare", str(run_a), str(run_b), "-o", str(output)],
    ):
        line = refused(args)
        assert "the run's own" in line and str(output) in line, line
    assert contents(run_b) == before
