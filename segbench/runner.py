"""Runs a suite: every cell in a fresh spawned child with a hard timeout, results appended as they end.

The parent blocks on the child's pipe (`poll(timeout)`), never spinning a core the model needs.
A cell that hangs is killed at its timeout; one that crashes or dies by a signal becomes an
`error` record; out-of-memory becomes `oom`. The run always goes on to the next cell.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from segbench import results
from segbench.cell import CellRequest, run_cell
from segbench.env import fingerprint, resolve_device
from segbench.errors import SegbenchError
from segbench.matrix import CellSpec, expand
from segbench.models.registry import get_card
from segbench.suite import Suite

PR_SET_PDEATHSIG = 1
LOG_DIR = "logs"


class RunObserver(Protocol):
    def run_started(self, run_dir: Path, cells: list[CellSpec], skipped: int) -> None: ...
    def cell_started(self, cell: CellSpec, index: int) -> None: ...
    def cell_finished(self, cell: CellSpec, record: dict[str, Any]) -> None: ...


class SilentObserver:
    def run_started(self, run_dir: Path, cells: list[CellSpec], skipped: int) -> None: ...
    def cell_started(self, cell: CellSpec, index: int) -> None: ...
    def cell_finished(self, cell: CellSpec, record: dict[str, Any]) -> None: ...


@dataclass
class RunResult:
    run_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


# ---- the child ------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Ask Linux to kill this child if the parent dies, so a killed run leaves no orphan measuring on."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass


def _redirect_output(log_path: str | None) -> None:
    """Libraries print while building models; that goes to the cell's log, not over the progress bar."""
    if log_path is None:
        return
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def _child_main(request: dict[str, Any], connection: Connection, log_path: str | None) -> None:
    _die_with_parent()
    _redirect_output(log_path)
    outcome = run_cell(CellRequest.from_dict(request))
    connection.send(outcome)
    connection.close()


# ---- the parent -----------------------------------------------------------------------------------

def _signal_name(exit_code: int) -> str:
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


def _death_outcome(exit_code: int | None) -> dict[str, Any]:
    if exit_code is not None and exit_code < 0:
        name = _signal_name(exit_code)
        hint = " (the kernel's out-of-memory killer sends SIGKILL when host memory runs out)" if name == "SIGKILL" else ""
        return {"status": "error", "error": f"cell process killed by {name}{hint}"}
    return {"status": "error", "error": f"cell process exited with code {exit_code} before reporting"}


def execute_isolated(request: CellRequest, timeout_s: float, log_path: Path | None = None) -> dict[str, Any]:
    """Run one cell in a fresh spawned process; always returns an outcome dict with a status."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(request.to_dict(), sender, str(log_path) if log_path else None), name="segbench-cell")
    process.start()
    sender.close()  # so EOF reaches us if the child dies
    try:
        if not receiver.poll(timeout_s):
            process.kill()
            process.join()
            return {"status": "timeout", "error": f"cell did not finish within timeout_s={timeout_s:g} s; killed"}
        try:
            outcome = receiver.recv()
        except EOFError:
            process.join()
            return _death_outcome(process.exitcode)
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
        return outcome
    finally:
        receiver.close()


def _base_record(cell: CellSpec, device: str) -> dict[str, Any]:
    card = get_card(cell.model)
    return {
        "cell_id": cell.cell_id,
        "status": None,
        "model": cell.model,
        "family": card.family,
        "source": card.source,
        "resolution": list(cell.resolution),
        "batch_size": cell.batch_size,
        "precision": cell.precision,
        "backend": cell.backend,
        "scenario": cell.scenario,
        "device": device,
        "weights": cell.weights,
        "options": cell.options,
        "latency_ms": None,
        "fps": None,
        "memory_mb": None,
        "error": None,
    }


def _check_resume(run_dir: Path, suite: Suite, device: str) -> None:
    meta = results.read_meta(run_dir)
    if meta.get("suite") != suite.name:
        raise SegbenchError(f"--resume {run_dir}: that run is of suite '{meta.get('suite')}', not '{suite.name}'; resume with the same suite")
    if meta.get("device") != device:
        raise SegbenchError(f"--resume {run_dir}: that run measured on '{meta.get('device')}', not '{device}'; pass --device {meta.get('device')}")


def _start_run(suite: Suite, suite_path: Path, out_dir: Path, device: str, resume: Path | None) -> tuple[Path, dict[str, Any]]:
    if resume is not None:
        _check_resume(resume, suite, device)
        results.drop_torn_tail(resume)
        meta = results.read_meta(resume)
        meta.setdefault("resumed_at", []).append(results.utc_now())
        meta.update(status="running", end_time=None)
        results.write_json(resume / results.META_FILE, meta)
        return resume, meta
    run_dir = results.new_run_dir(out_dir, suite.name)
    results.copy_suite(suite_path, run_dir)
    meta = {
        "schema_version": results.SCHEMA_VERSION,
        "suite": suite.name,
        "description": suite.description,
        "suite_file": str(suite_path),
        "device": device,
        "hardware_target": suite.hardware,
        "start_time": results.utc_now(),
        "end_time": None,
        "status": "running",
        "fingerprint": fingerprint(),
    }
    results.write_json(run_dir / results.META_FILE, meta)
    return run_dir, meta


def run_suite(
    suite: Suite,
    suite_path: Path,
    out_dir: Path = Path("results"),
    device_override: str | None = None,
    resume: Path | None = None,
    retry_failed: bool = False,
    observer: RunObserver | None = None,
) -> RunResult:
    """Expand the suite and run every cell not yet finished, each isolated; returns the run folder and its records."""
    observer = observer or SilentObserver()
    try:
        device = resolve_device(device_override or suite.device)
    except SegbenchError as exc:
        field = "--device" if device_override else "device"
        raise SegbenchError(f"{suite_path}: {field}: {exc}") from None
    cells = expand(suite)
    run_dir, meta = _start_run(suite, suite_path, out_dir, device, resume)
    done = results.finished_cell_ids(run_dir, retry_failed) if resume else set()
    todo = [cell for cell in cells if cell.cell_id not in done]
    outcome = RunResult(run_dir=run_dir, skipped=len(cells) - len(todo))
    observer.run_started(run_dir, todo, outcome.skipped)
    (run_dir / LOG_DIR).mkdir(exist_ok=True)
    suite_dir = str(suite_path.resolve().parent)
    started = time.perf_counter()
    for index, cell in enumerate(todo):
        observer.cell_started(cell, index)
        stream = suite.stream if suite.scenario == "stream" else None
        request = CellRequest(cell, device, suite.timing, suite.memory.poll_interval_ms, suite.threads, tuple(suite.plugins), suite_dir, stream)
        record = _base_record(cell, device) | {"started_at": results.utc_now()}
        cell_started = time.perf_counter()
        record.update(execute_isolated(request, suite.timing.timeout_s, run_dir / LOG_DIR / f"{cell.cell_id}.log"))
        record["wall_s"] = round(time.perf_counter() - cell_started, 3)
        results.append_record(run_dir, record)
        outcome.records.append(record)
        observer.cell_finished(cell, record)
    meta.update(status="complete", end_time=results.utc_now(), duration_s=meta.get("duration_s", 0) + round(time.perf_counter() - started, 3))
    results.write_json(run_dir / results.META_FILE, meta)
    return outcome
