"""The results store: one folder per run with the suite, meta.json and results.jsonl (one line per cell).

Lines are appended and fsync'd as each cell ends, so a run killed at any moment loses at most the
cell in flight. Every line carries `schema_version`; the loader upgrades older lines.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from segbench import safe_yaml
from segbench.errors import ResultsError
from segbench.plain import nesting_problem
from segbench.results.schema import (
    SCHEMA_VERSION,
    first_problem,
    validate_meta,
    validate_record,
)

RESULTS_FILE = "results.jsonl"
META_FILE = "meta.json"
SUITE_FILE = "suite.yaml"
LOCK_FILE = ".lock"
LOG_DIR = "logs"
# Everything segbench writes in a run folder; none of it may be a symbolic link (see `refuse_links`).
RUN_FILES = (RESULTS_FILE, META_FILE, f"{META_FILE}.tmp", SUITE_FILE, LOCK_FILE, LOG_DIR)


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
    replace_file(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"))


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` to a fresh temporary file beside `path` (mkstemp: created, never opened through a link), fsync
    it, then rename it over `path` (a rename replaces a link itself, never the file it points at)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o644)  # what open() would have made under the usual umask
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def open_no_follow(path: Path, flags: int) -> int:
    """os.open that refuses a symbolic link at `path` (ELOOP) instead of writing wherever it points."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def refuse_links(run_dir: Path) -> None:
    """One line when anything segbench writes in the run folder (or in its logs/) is a symbolic link.

    A folder from a tarball or a CI artifact can hold a `results.jsonl` or `.lock` that points at any file the user
    can write; segbench would append to it, truncate it or rewrite it. It is refused before anything is opened.
    """
    paths = [run_dir / name for name in RUN_FILES]
    logs = run_dir / LOG_DIR
    if logs.is_dir() and not logs.is_symlink():
        try:
            paths += sorted(logs.iterdir())
        except OSError as exc:
            raise ResultsError(f"{logs}: cannot list it ({exc.strerror or exc}); fix its permissions") from None
    for path in paths:
        if path.is_symlink():
            raise ResultsError(
                f"{path}: is a symbolic link (to {os.readlink(path)}); segbench never writes through links in a run "
                "folder: replace it with a plain file or folder (a copy made with `cp -rL` has none)"
            )


def read_suite_copy(run_dir: Path | str) -> dict[str, Any]:
    """The suite a run folder keeps, as data; {} when it is missing or broken (the copy informs, never stops a read)."""
    try:
        data = safe_yaml.load_file(Path(run_dir) / SUITE_FILE)
    except (OSError, yaml.YAMLError, safe_yaml.YamlRefused):
        return {}
    return data if isinstance(data, dict) else {}


def copy_suite(suite_path: Path, run_dir: Path) -> None:
    shutil.copyfile(suite_path, run_dir / SUITE_FILE)


def refuse_run_file_as_output(output: Path, *run_dirs: Path | str) -> None:
    """One line when a report or comparison would be written over a run's own file (results.jsonl, meta.json, the
    suite copy, the lock or a log), by its path, through a link or as a hard link to it."""
    target = Path(output).resolve()
    for run_dir in run_dirs:
        folder = Path(run_dir).resolve()
        own = [folder / name for name in RUN_FILES if name != LOG_DIR]
        hit = target in own or target.is_relative_to(folder / LOG_DIR)
        if not hit and target.is_file():
            hit = any(path.is_file() and os.path.samefile(path, target) for path in own)
        if hit:
            raise ResultsError(
                f"-o {output}: that is the run's own {target.name} in {run_dir}; writing there would destroy the run: "
                "choose another file (the default is reports/<run>.<format>)"
            )


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """A line as a JSON object with a cell_id, or None when it is not one (torn, truncated, not UTF-8, too deep)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return None
    return record if isinstance(record, dict) and "cell_id" in record else None


def _read_bytes(path: Path) -> bytes:
    """A run file's bytes, or one line naming it and the OS error (unreadable, a folder, gone)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read it ({exc.strerror or exc}); fix its permissions") from None


def _content_lines(data: bytes) -> list[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line."""
    return [(number, line) for number, line in enumerate(data.split(b"\n"), start=1) if line.strip()]


def drop_torn_tail(run_dir: Path) -> None:
    """Cut the last line when it is not a record, exactly what `read_records` skips, so appends start
    after the last good record (like SQLite rolling back a torn write), with or without a newline.

    Every other line is validated first (`read_records`): a file that would be refused is never rewritten.
    """
    path = run_dir / RESULTS_FILE
    if not path.is_file() or path.is_symlink():
        return
    read_records(run_dir)
    data = _read_bytes(path)
    lines = _content_lines(data)
    if lines and _parse_line(lines[-1][1]) is None:
        data = b"".join(line + b"\n" for _, line in lines[:-1])
    elif data and not data.endswith(b"\n"):
        data += b"\n"
    else:
        return
    replace_file(path, data)


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    line = json.dumps({"schema_version": SCHEMA_VERSION, **record}, allow_nan=True)
    handle = open_no_follow(run_dir / RESULTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(line + "\n")
        stream.flush()
        os.fsync(stream.fileno())


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
    lines = _content_lines(_read_bytes(path))
    records: list[dict[str, Any]] = []
    for position, (number, raw) in enumerate(lines, start=1):
        record = _parse_line(raw)
        if record is None:
            if position == len(lines):
                continue  # torn final write: the cell in flight is lost, nothing else
            raise ResultsError(
                f"{path}: line {number}: corrupt record (not a JSON object with a cell_id, not UTF-8, or nested too "
                "deeply); delete or repair that line"
            )
        too_deep = nesting_problem(record)
        if too_deep:
            raise ResultsError(f"{path}: line {number}: invalid record: {too_deep}; fix or delete that line")
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
        meta = json.loads(_read_bytes(path).decode("utf-8"))
    except ValueError as exc:
        raise ResultsError(f"{path}: corrupt JSON ({exc})") from None
    except RecursionError:
        raise ResultsError(f"{path}: nested too deeply to be a meta.json; restore the run's meta.json") from None
    if not isinstance(meta, dict):
        raise ResultsError(
            f"{path}: expected a JSON object, found a {type(meta).__name__}; restore the run's meta.json"
        )
    too_deep = nesting_problem(meta)
    if too_deep:
        raise ResultsError(f"{path}: invalid: {too_deep}; restore the run's meta.json")
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
    """Cells a resume skips: all recorded ones, or only the `ok` (and `pruned`: --retry-pruned runs those) ones with
    --retry-failed."""
    if not (run_dir / RESULTS_FILE).is_file():
        return set()
    kept = ("ok", "pruned")
    return {record_key(r) for r in read_records(run_dir) if not retry_failed or r.get("status") in kept}


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
