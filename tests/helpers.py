"""What many test modules share: the CLI run as a user runs it, and a cell record as the runner writes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
FIXTURES = TESTS_DIR / "fixtures"  # committed inputs: a real H100 run made with `hardware: rtx3060`
FAULT_PLUGIN = str(TESTS_DIR / "fault_models.py")  # test models: tiny, sleeping, failing, hanging, chattering

# A cell measured in a fraction of a second: enough to exercise every pass, never to judge a speed.
FAST_TIMING = {
    "warmup_iters": 1,
    "warmup_s": 0.0,
    "min_iters": 3,
    "max_iters": 20,
    "min_time_s": 0.05,
    "max_time_s": 1.0,
    "timeout_s": 240,
    "memory_iters": 1,
}


def segbench(
    *args: str, cwd: Path | None = None, timeout: float = 300, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """`python -m segbench ARGS` in a fresh process, its output captured as text; a failing exit is the test's to
    judge (never raised)."""
    return subprocess.run(
        [sys.executable, "-m", "segbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
        **kwargs,
    )


def cell_record(
    cell_id: str = "c",
    status: str = "ok",
    median: float | None = 10.0,
    model: str = "m",
    resolution: int = 16,
    precision: str = "fp32",
    backend: str = "eager",
    **fields: Any,
) -> dict[str, Any]:
    """One results.jsonl line: a square batch-1 cell with a median latency (none when `median` is None); `fields`
    add to it or replace its parts."""
    record: dict[str, Any] = {
        "cell_id": cell_id,
        "status": status,
        "model": model,
        "resolution": [resolution, resolution],
        "batch_size": 1,
        "precision": precision,
        "backend": backend,
    }
    if median is not None:
        record |= {"latency_ms": {"median": median}, "fps": 1000 / median}
    return record | fields
