"""The results store: one folder per run with the suite, meta.json and results.jsonl (one line per cell).

Lines are appended and fsync'd as each cell ends, so a run killed at any moment loses at most the
cell in flight. Every line carries `schema_version`; the loader upgrades older lines.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from segbench.errors import ResultsError

SCHEMA_VERSION = 1
RESULTS_FILE = "results.jsonl"
META_FILE = "meta.json"
SUITE_FILE = "suite.yaml"
FINAL_STATUSES = ("ok", "oom", "timeout", "error", "unsupported")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_dir(parent: Path, suite_name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe_name = "".join(c if c.isalnum() or c in "-_." else "-" for c in suite_name)
    run_dir = parent / f"{safe_name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = parent / f"{safe_name}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a crash mid-write leaves the old file, never half a file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def copy_suite(suite_path: Path, run_dir: Path) -> None:
    shutil.copyfile(suite_path, run_dir / SUITE_FILE)


def drop_torn_tail(run_dir: Path) -> None:
    """Cut a half-written last line (left by a run killed mid-write) so appends start on a clean line."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    line = json.dumps({"schema_version": SCHEMA_VERSION, **record}, default=str, allow_nan=True)
    with open(run_dir / RESULTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored line to the current schema (version 1 is the first; future versions add steps here)."""
    version = record.get("schema_version", 1)
    if version > SCHEMA_VERSION:
        raise ResultsError(f"results line has schema_version {version}, newer than this segbench ({SCHEMA_VERSION}); upgrade segbench")
    return record


def read_records(run_dir: Path | str, latest_only: bool = True) -> list[dict[str, Any]]:
    """Records of a run; with latest_only, one per cell_id (a rerun after --retry-failed replaces the old line).

    A torn last line (the run was killed while writing it) is skipped; a bad line elsewhere is an error.
    """
    path = Path(run_dir) / RESULTS_FILE
    if not Path(run_dir).is_dir():
        raise ResultsError(f"{run_dir}: not a run directory (expected a folder made by `segbench run`)")
    if not path.is_file():
        raise ResultsError(f"{path}: no results file; is this a run directory made by `segbench run`?")
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "cell_id" not in record:
                raise ValueError("not a cell record")
        except ValueError as exc:
            if number == len(lines):
                continue  # torn final write: the cell in flight is lost, nothing else
            raise ResultsError(f"{path}: line {number}: corrupt record ({exc}); delete or repair that line") from None
        records.append(upgrade(record))
    if not latest_only:
        return records
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest.pop(record_key(record), None)
        latest[record_key(record)] = record
    return list(latest.values())


def record_key(record: dict[str, Any]) -> str:
    """A cell's identity in a run: its id, qualified by the card when one run spans several cards."""
    return record.get("cell_key") or record["cell_id"]


def read_meta(run_dir: Path | str) -> dict[str, Any]:
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise ResultsError(f"{path}: missing; is this a run directory made by `segbench run`?")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ResultsError(f"{path}: corrupt JSON ({exc})") from None


def finished_cell_ids(run_dir: Path, retry_failed: bool = False) -> set[str]:
    """Cells a resume skips: all recorded ones, or only the `ok` ones with --retry-failed."""
    if not (run_dir / RESULTS_FILE).is_file():
        return set()
    return {record_key(r) for r in read_records(run_dir) if not retry_failed or r.get("status") == "ok"}


_BULKY_COLUMNS = ("samples_ms", "stage_samples_ms", "traceback")


def to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Flatten records into columns like `latency_ms.median`; raw samples stay as list columns."""
    records = list(records)
    if not records:
        return pd.DataFrame()
    flat = pd.json_normalize([{k: v for k, v in r.items() if k not in _BULKY_COLUMNS} for r in records], sep=".")
    for column in ("samples_ms",):
        flat[column] = [r.get(column) for r in records]
    return flat


def load(run_dir: Path | str) -> pd.DataFrame:
    """A run's results as a pandas DataFrame, one row per cell (latest attempt)."""
    return to_frame(read_records(run_dir))
