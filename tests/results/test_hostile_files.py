"""Issue 34, root cause 5: loaders validated only top-level shapes.

Deep nesting (RecursionError), wrong types in nested fields the readers use (`accuracy.per_class_iou`,
`repeats.process_medians_ms`, `fingerprint.cpu/gpus/packages`) and unreadable files (PermissionError) reached the user
as tracebacks. Each is now one line naming the file, the line and the field, from every command that reads a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.results import store as results
from tests.helpers import cell_record

FINGERPRINT = {"machine": "cpu", "cpu": {"model": "x", "logical_cores": 2}, "gpus": [], "packages": {"torch": "2"}}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def write_run(path: Path, record: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> Path:
    path.mkdir(parents=True)
    results.write_json(
        path / results.META_FILE, {"suite": "s", "device": "cpu", "fingerprint": FINGERPRINT, **(meta or {})}
    )
    base = cell_record("c", samples_ms=[10.0, 10.0, 10.0])
    with open(path / results.RESULTS_FILE, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(base | (record or {})) + "\n")
    return path


def one_line(args: list[str]) -> str:
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2 and "Traceback" not in done.output, (done.exit_code, done.output, done.exception)
    [line] = done.stderr.strip().splitlines()
    return line


RECORD_DAMAGE: dict[str, tuple[dict[str, Any], str]] = {
    "per_class_iou a string": ({"accuracy": {"miou": 0.5, "per_class_iou": "all"}}, "accuracy.per_class_iou"),
    "per_class_iou of strings": ({"accuracy": {"miou": 0.5, "per_class_iou": {"road": "high"}}}, "per_class_iou.road"),
    "process medians a string": ({"repeats": {"k": 3, "process_medians_ms": "12"}}, "repeats.process_medians_ms"),
    "a Ray node's fingerprint cpu a string": ({"node": {"fingerprint": {"cpu": "x86"}}}, "node.fingerprint.cpu"),
    "nested 100 deep": ({"accuracy": nested(100)}, "nested deeper than 64"),
}


@pytest.mark.parametrize("damage", list(RECORD_DAMAGE))
def test_a_bad_nested_record_field_is_one_line_in_report_and_compare(tmp_path: Path, damage: str) -> None:
    """Guards root cause 5 for results.jsonl: nested fields are validated (and nesting bounded) on load."""
    change, field = RECORD_DAMAGE[damage]
    good = write_run(tmp_path / "good")
    bad = write_run(tmp_path / "bad", change)
    for args in (
        ["report", str(bad), "--format", "md", "-o", str(tmp_path / "r.md")],
        ["compare", str(good), str(bad)],
    ):
        line = one_line(args)
        assert "results.jsonl: line 1: invalid record" in line and field in line, line


def test_a_line_nested_past_the_parsers_recursion_limit_is_one_line(tmp_path: Path) -> None:
    """Guards root cause 5: json.loads raised RecursionError on a line nested thousands deep."""
    run_dir = write_run(tmp_path / "run")
    good = (run_dir / results.RESULTS_FILE).read_text()
    deep = '{"cell_id": "d", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (run_dir / results.RESULTS_FILE).write_text(deep + "\n" + good)
    line = one_line(["report", str(run_dir), "--format", "md", "-o", str(tmp_path / "r.md")])
    assert "line 1: corrupt record" in line and "nested too deeply" in line, line
    (run_dir / results.RESULTS_FILE).write_text(good)
    (run_dir / results.META_FILE).write_text('{"suite": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "meta.json: nested too deeply" in one_line(["report", str(run_dir), "-o", str(tmp_path / "r.md")])


META_DAMAGE: dict[str, tuple[dict[str, Any], str]] = {
    "cpu a string": ({"cpu": "x86"}, "fingerprint.cpu"),
    "gpus of numbers": ({"gpus": [1]}, "fingerprint.gpus.0"),
    "packages a list": ({"packages": ["torch"]}, "fingerprint.packages"),
    "nested 100 deep": ({"cuda": nested(100)}, "nested deeper than 64"),
}


@pytest.mark.parametrize("damage", list(META_DAMAGE))
def test_a_bad_fingerprint_is_one_line_in_report_and_compare(tmp_path: Path, damage: str) -> None:
    """Guards root cause 5 for meta.json: the fingerprint's parts the reports read are validated on load."""
    change, field = META_DAMAGE[damage]
    good = write_run(tmp_path / "good")
    bad = write_run(tmp_path / "bad", meta={"fingerprint": FINGERPRINT | change})
    for args in (["report", str(bad), "-o", str(tmp_path / "r.html")], ["compare", str(good), str(bad)]):
        line = one_line(args)
        assert "meta.json: invalid" in line and field in line, line


@pytest.mark.parametrize("name", [results.RESULTS_FILE, results.META_FILE])
def test_an_unreadable_run_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Guards root cause 5: a PermissionError while reading a run file was a traceback (as root, chmod cannot make a
    file unreadable, so the read itself is made to fail)."""
    run_dir = write_run(tmp_path / "run")
    target = run_dir / name
    real_read = Path.read_bytes

    def refused(self: Path) -> bytes:
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", refused)
    line = one_line(["report", str(run_dir), "--format", "md", "-o", str(tmp_path / "r.md")])
    assert name in line and "cannot read it (Permission denied)" in line, line
