"""Cell isolation: every cell runs in a fresh spawned process with a hard timeout.

The parent blocks on the child's pipe (`poll(timeout)`), never spinning a core the model needs.
A cell that hangs is killed at its timeout; one that crashes or dies by a signal becomes an
`error` outcome; everything else the child reports itself (see `segbench.cell.run_cell`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from segbench import forkserver
from segbench.cell import CellRequest, run_cell

PR_SET_PDEATHSIG = 1


# ---- the child ------------------------------------------------------------------------------------

def die_with_parent() -> None:
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
    die_with_parent()
    _redirect_output(log_path)
    outcome = run_cell(CellRequest.from_dict(request))
    connection.send(outcome)
    connection.close()


def _signal_name(exit_code: int) -> str:
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


def _death_outcome(exit_code: int | None, failure: str | None = None) -> dict[str, Any]:
    if failure is not None:  # the forkserver died under the cell (its process went with it)
        return {"status": "error", "error": f"cell process lost: {failure}"}
    if exit_code is not None and exit_code < 0:
        name = _signal_name(exit_code)
        hint = " (the kernel's out-of-memory killer sends SIGKILL when host memory runs out)" if name == "SIGKILL" else ""
        return {"status": "error", "error": f"cell process killed by {name}{hint}"}
    return {"status": "error", "error": f"cell process exited with code {exit_code} before reporting"}


def _start_cell_process(request: CellRequest, sender: Connection, log_path: Path | None) -> tuple[Any, dict[str, Any]]:
    """A fresh process for the cell: forked from a warm template, or spawned when warm start is off or fails."""
    args = (replace(request, launched_at=time.time()).to_dict(), sender, str(log_path) if log_path else None)
    failure = None
    if forkserver.warm_start_enabled():
        process = forkserver.ForkedProcess(_child_main, args, forkserver.cell_imports(request.cell))
        try:
            process.start()
            return process, process.startup
        except forkserver.TemplateDied as died:
            failure = str(died)
    args = (replace(request, launched_at=time.time()).to_dict(), *args[1:])
    spawned = multiprocessing.get_context("spawn").Process(target=_child_main, args=args, name="segbench-cell")
    spawned.start()
    return spawned, {"mode": "spawn"} | ({"forkserver_failed": failure} if failure else {})


def execute_isolated(request: CellRequest, timeout_s: float, log_path: Path | None = None) -> dict[str, Any]:
    """Run one cell in a fresh process (forked from a warm template); always returns an outcome dict with a status."""
    receiver, sender = multiprocessing.get_context("spawn").Pipe(duplex=False)
    process, startup = _start_cell_process(request, sender, log_path)
    sender.close()  # so EOF reaches us if the child dies
    try:
        return {**_await_outcome(process, receiver, timeout_s), "startup": startup}
    finally:
        receiver.close()


def _await_outcome(process: Any, receiver: Connection, timeout_s: float) -> dict[str, Any]:
    if not receiver.poll(timeout_s):
        process.kill()
        process.join()
        return {"status": "timeout", "error": f"cell did not finish within timeout_s={timeout_s:g} s; killed"}
    try:
        outcome = receiver.recv()
    except EOFError:
        process.join()
        return _death_outcome(process.exitcode, getattr(process, "failure", None))
    process.join(timeout=30)
    if process.is_alive():
        process.kill()
        process.join()
    return outcome
