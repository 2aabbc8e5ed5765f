"""Reliability under faults and hostile input (issue 14): each test reproduces one defect first.

Most run the real CLI in a subprocess, as the defects were seen; cells are real spawned processes
of the fault models in `tests/fault_models.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

from segbench import results

ROOT = Path(__file__).resolve().parent.parent


def segbench(*args: str, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "segbench", *args], check=False, capture_output=True, text=True, timeout=timeout, **kwargs)


def only_run_dir(out: Path) -> Path:
    [run_dir] = [path for path in out.iterdir() if path.is_dir()]
    return run_dir


def lines_of(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / results.RESULTS_FILE).read_text().splitlines()]


# ---- 1: terminal text is escaped --------------------------------------------------------------------

def test_an_error_that_looks_like_markup_is_printed_and_the_run_goes_on(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite = write_suite(models=["test-bracket-error", "test-tiny"])
    done = segbench("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr  # an error cell fails the run (its reason is the last line), and the run went on
    assert "MarkupError" not in done.stderr + done.stdout
    assert "[/data/frames/0001.png]" in done.stdout and "[enforce fail at alloc_cpu.cpp:127]" in done.stdout
    run_dir = only_run_dir(tmp_path / "out")
    assert [r["status"] for r in lines_of(run_dir)] == ["error", "ok"]
    assert results.read_meta(run_dir)["status"] == "complete"
