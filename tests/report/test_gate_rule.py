"""The regression gate's rule for what no statistics can judge: judged on size alone, named, never passed unseen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.report.compare import compare_runs
from tests.helpers import FIXTURES

SOURCE = FIXTURES / "h100-rtx3060"  # a real run: three ok cells, one process each


def run_copy(target: Path, samples: int, factor: float = 1.0, **flags: Any) -> Path:
    """The fixture run with `samples` kept samples a cell, the first cell's latency scaled by `factor`."""
    shutil.copytree(SOURCE, target)
    lines = (SOURCE / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for index, record in enumerate(records):
        scale = factor if index == 0 else 1.0
        median = record["latency_ms"]["median"] * scale
        record["latency_ms"] = {**record["latency_ms"], "median": median}
        record["samples_ms"] = [median * (1 + 0.001 * (i % 3)) for i in range(samples)]
        record.update(flags if index == 0 else {})
    (target / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return target


def gate(a: Path, b: Path, pct: str = "10") -> Any:
    return CliRunner().invoke(app, ["compare", str(a), str(b), "--fail-on-regression", pct])


def test_a_slowdown_without_an_interval_fails_the_gate(tmp_path: Path) -> None:
    """Issue 34 item 2: with 9 samples a cell there is no interval, so a +900 % slowdown passed
    `compare --fail-on-regression 10` with exit 0; it is judged on size alone and fails, and the gate says so."""
    a = run_copy(tmp_path / "a", samples=9)
    slow = run_copy(tmp_path / "slow", samples=9, factor=10.0)
    [(cell, why)] = [
        (c, w) for c, w in compare_runs(a, slow).judged_on_size_alone() if c.metric("median_ms").change_pct
    ]  # type: ignore[union-attr]
    assert "9 and 9 kept samples" in why
    done = gate(a, slow)
    assert done.exit_code == 1, done.output
    assert "+900.0 %, judged on size alone" in done.stderr and "regression:" in done.stderr


def test_an_unchanged_run_without_intervals_passes_with_a_warning(tmp_path: Path) -> None:
    """The rule's other half: a change below the bar (PCT and the threshold) passes, but never silently."""
    a = run_copy(tmp_path / "a", samples=9)
    same = run_copy(tmp_path / "same", samples=9, factor=1.05)
    done = gate(a, same)
    assert done.exit_code == 0, done.output
    assert "3 cell(s) judged on size alone" in done.stderr and "regression" not in done.stderr


def test_a_drifted_cell_is_judged_on_size_alone(tmp_path: Path) -> None:
    """A drifted or contended cell is never significant; a +900 % slowdown there still fails the gate."""
    a = run_copy(tmp_path / "a", samples=30)
    slow = run_copy(tmp_path / "slow", samples=30, factor=10.0, drifted="canary GEMM moved 30 %")
    done = gate(a, slow)
    assert done.exit_code == 1, done.output
    assert "drifted in B" in done.stderr and "judged on size alone)" in done.stderr
