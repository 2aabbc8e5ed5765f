"""The results store: one folder per run with the suite, meta.json and results.jsonl (one line per cell).

Lines are appended and fsync'd as each cell ends, so a run killed at any moment loses at most the
cell in flight. Every line carries `schema_version`; the loader upgrades older lines.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml
from pydantic import ValidationError

from segbench import safe_yaml
from segbench.errors import ResultsError
from segbench.results.schema import (
    SCHEMA_VERSION,
    first_problem,
    validate_meta,
    validate_record,
)

RESULTS_FILE = "results.jsonl"
META_FILE = "meta.json"
SUITE_FILE = "suite.yaml"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_dir(parent: Path, suite_name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe_name = "".join(c if c.isalnum() or c in "-_." else "-" for c in suite_name)
    parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(1, 10_000):
        run_dir = parent / (f"{safe_name}-{stamp}" + (f"-{suffix}" if suffix > 1 else ""))
        try:
            run_dir.mkdir()  # the mkdir itself claims the name: two runs starting at once never share a folder
        except FileExistsError:
            continue
        return run_dir
    raise FileExistsError(errno.EEXIST, "no free run folder name in 9,999 tries", str(parent))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a crash mid-write leaves the old file, never half a file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def read_suite_copy(run_dir: Path | str) -> dict[str, Any]:
    """The suite a run folder keeps, as data; {} when it is missing or broken (the copy informs, never stops a read)."""
    try:
        data = safe_yaml.load_file(Path(run_dir) / SUITE_FILE)
    except (OSError, yaml.YAMLError, safe_yaml.YamlRefused):
        return {}
    return data if isinstance(data, dict) else {}


def copy_suite(suite_path: Path, run_dir: Path) -> None:
    shutil.copyfile(suite_path, run_dir / SUITE_FILE)


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """A line as a JSON object with a cell_id, or None when it is not one (torn, truncated, not UTF-8)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return None
    return record if isinstance(record, dict) and "cell_id" in record else None


def _content_lines(data: bytes) -> list[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line."""
    return [(number, line) for number, line in enumerate(data.split(b"\n"), start=1) if line.strip()]


def drop_torn_tail(run_dir: Path) -> None:
    """Cut the last line when it is not a record, exactly what `read_records` skips, so appends start
    after the last good record (like SQLite rolling back a torn write), with or without a newline."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return
    data = path.read_bytes()
    lines = _content_lines(data)
    if lines and _parse_line(lines[-1][1]) is None:
        data = b"".join(line + b"\n" for _, line in lines[:-1])
    elif data and not data.endswith(b"\n"):
        data += b"\n"
    else:
        return
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    line = json.dumps({"schema_version": SCHEMA_VERSION, **record}, default=str, allow_nan=True)
    with open(run_dir / RESULTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def declared(precision_name: str, backend_name: str) -> dict[str, Any]:
    """What a cell's precision and backend declare: matmul class, which is the reference, what latency covers.

    A name no longer registered declares nothing: no class, not the reference, a forward-only latency.
    """
    from segbench.backends import backend_names, get_backend  # lazy: imports torch
    from segbench.precision import get_precision, precision_names  # lazy: imports torch

    precision = get_precision(precision_name) if precision_name in precision_names() else None
    backend = get_backend(backend_name) if backend_name in backend_names() else None
    reference_precision = bool(precision and precision.is_reference)
    return {
        "matmul_class": precision.matmul_class if precision else None,
        "reference_precision": reference_precision,
        "reference": reference_precision and bool(backend and backend.is_reference),
        "latency_scope": backend.latency_scope if backend else "forward",
    }


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored line to the current schema (version 1 is the first; future versions add steps here)."""
    version = record.get("schema_version", 1)
    if isinstance(version, int) and version > SCHEMA_VERSION:  # a non-integer is the validator's to report
        raise ResultsError(
            f"results line has schema_version {version}, newer than this segbench ({SCHEMA_VERSION}); upgrade segbench"
        )
    if "reference" not in record and record.get("precision") and record.get("backend"):
        record = {
            **record,
            **declared(str(record["precision"]), str(record["backend"])),
        }  # written before cells carried these
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
    lines = _content_lines(path.read_bytes())
    records: list[dict[str, Any]] = []
    for position, (number, raw) in enumerate(lines, start=1):
        record = _parse_line(raw)
        if record is None:
            if position == len(lines):
                continue  # torn final write: the cell in flight is lost, nothing else
            raise ResultsError(
                f"{path}: line {number}: corrupt record (not a JSON object with a cell_id, or not UTF-8); delete or "
                "repair that line"
            )
        try:
            record = upgrade(record)
        except ResultsError as exc:
            raise ResultsError(f"{path}: line {number}: {exc}") from None
        try:
            validate_record(record)
        except ValidationError as exc:
            raise ResultsError(
                f"{path}: line {number}: invalid record: {first_problem(exc)}; fix or delete that line"
            ) from None
        records.append(record)
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
    """meta.json, validated: a list, a string or a wrong-typed field is one line naming the field."""
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise ResultsError(f"{path}: missing; is this a run directory made by `segbench run`?")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as exc:
        raise ResultsError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ResultsError(
            f"{path}: expected a JSON object, found a {type(meta).__name__}; restore the run's meta.json"
        )
    version = meta.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: schema_version {meta['schema_version']} is newer than this segbench ({SCHEMA_VERSION}); upgrade "
            "segbench"
        )
    try:
        validate_meta(meta)
    except ValidationError as exc:
        raise ResultsError(f"{path}: invalid: {first_problem(exc)}; restore the run's meta.json") from None
    return meta


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


def load(run_dir: Path | str | list[Path] | list[str]) -> pd.DataFrame:
    """A run's results as a pandas DataFrame, one row per cell (latest attempt); given several run folders, one
    frame of all their cells with a `run` column naming each cell's folder."""
    if not isinstance(run_dir, (list, tuple)):
        return to_frame(read_records(run_dir))
    frames = [to_frame(read_records(path)).assign(run=Path(path).name) for path in run_dir]
    return pd.concat(frames, ignore_index=True) if frames else to_frame([])


def partial_run_note(run_dir: Path | str, meta: dict[str, Any]) -> str | None:
    """A sentence for reports and compare when a run did not complete; None when it did."""
    status = meta.get("status")
    if status in (None, "complete"):
        return None
    done, total = meta.get("cells_done"), meta.get("cells_total")
    counted = f" after {done} of {total} cell(s)" if done is not None and total is not None else ""
    why = {
        "interrupted": f"was interrupted{counted}",
        "failed": f"failed{counted} ({meta.get('stop_reason') or 'see its log'})",
        "running": "is still running, or was killed (meta.json says running)",
    }.get(str(status), f"has status {status}")
    return (
        f"{Path(run_dir).name} {why}: only its finished cells are shown; `segbench run … --resume {run_dir}` "
        "completes it"
    )
