"""Cell isolation: every cell runs in a fresh spawned process with a hard timeout.

The parent blocks on the child's pipe (`poll(timeout)`), never spinning a core the model needs.
A cell that hangs is killed at its timeout; one that crashes or dies by a signal becomes an
`error` outcome; everything else the child reports itself (see `segbench.cell.passes.run_cell`).

Each cell runs in its own process group, so a timeout, an interruption or the cell's end kills
whatever the cell started too; and a spawned child asks to die with its parent before it imports
anything heavy, so a killed run leaves no orphan measuring on. This module imports no torch at
the top: a spawned child (and a forkserver template) imports it to find `_child_main` before
it can arm anything.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.device import is_gpu
from segbench.plain import NotPlain, to_plain
from segbench.run import forkserver
from segbench.system.process import (
    become_subreaper,
    die_with_parent,
    kill_cell_group,
    kill_descendants,
    own_process_group,
    signal_name,
)

if TYPE_CHECKING:
    from segbench.cell.request import CellRequest


# ---- the child ------------------------------------------------------------------------------------


def _redirect_output(log_path: str | None) -> str | None:
    """Libraries print while building models; that goes to the cell's log, not over the progress bar.

    A log that cannot be opened (its folder deleted under a running run, a link in its place) costs the log, never
    the cell: the cell runs on, and the reason comes back in its record (`log`)."""
    if log_path is None:
        return None
    try:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        return f"not written: {log_path}: {exc.strerror or exc}"
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return None


def arm_cell_process(parent_pid: int | None) -> None:
    """First thing in the child, before any heavy import: its own process group (so the runner can
    kill everything the cell starts, and a terminal's Ctrl-C reaches only the runner, which stops
    the cell itself), and death with the parent. A spawned child whose parent is already gone
    (killed before the signal was armed, so it will never send it) exits at once."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    become_subreaper()  # what the cell starts stays its descendant, however it detaches (setsid, double fork)
    die_with_parent(check_parent=False)  # a cell forked from a template has the template as its parent
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _child_main(
    request: dict[str, Any], connection: Connection, log_path: str | None, parent_pid: int | None = None
) -> None:
    arm_cell_process(parent_pid)
    from segbench.cell.passes import run_cell  # lazy: only once armed; importing torch takes seconds
    from segbench.cell.request import CellRequest  # lazy: only once armed

    log_problem = _redirect_output(log_path)
    if log_path is not None and not log_problem:  # the log names the physical device (GPU UUID) and the time it ran
        from segbench.system.env import device_identity, identity_line  # lazy: only once armed

        print(f"segbench cell {request['cell']['model']} on {identity_line(device_identity(request['device']))}")
        sys.stdout.flush()
    outcome = plain_outcome(run_cell(CellRequest.from_dict(request)))
    kill_descendants()  # before the cell ends: its orphans would otherwise go to init, out of the runner's reach
    if log_problem:
        outcome["log"] = log_problem
    connection.send(outcome)
    connection.close()


def plain_outcome(outcome: dict[str, Any]) -> dict[str, Any]:
    """The outcome as plain JSON before it leaves the cell: a tensor or numpy value a plugin returned would cross the
    pipe as a handle that dies with this process (the parent's read fails), or be stored as its text."""
    try:
        return to_plain(outcome)
    except NotPlain as exc:
        kept = {key: outcome[key] for key in ("threads", "interop_threads") if isinstance(outcome.get(key), int)}
        return {**kept, "status": "error", "error": f"the cell's outcome cannot be stored: {exc}"}


def _death_outcome(exit_code: int | None, failure: str | None = None) -> dict[str, Any]:
    if failure is not None:  # the forkserver died under the cell (its process went with it)
        return {"status": "error", "error": f"cell process lost: {failure}"}
    if exit_code is not None and exit_code < 0:
        name = signal_name(exit_code)
        hint = (
            " (the kernel's out-of-memory killer sends SIGKILL when host memory runs out)" if name == "SIGKILL" else ""
        )
        return {"status": "error", "error": f"cell process killed by {name}{hint}"}
    return {"status": "error", "error": f"cell process exited with code {exit_code} before reporting"}


def _start_cell_process(request: CellRequest, sender: Connection, log_path: Path | None) -> tuple[Any, dict[str, Any]]:
    """A fresh process for the cell: forked from a warm template, or spawned when warm start is off or fails."""
    args = (replace(request, launched_at=time.time()).to_dict(), sender, str(log_path) if log_path else None)
    failure = None
    if forkserver.warm_start_enabled():
        process = forkserver.ForkedProcess(
            _child_main, args, forkserver.cell_imports(request.cell), needs_cuda=is_gpu(request.device)
        )
        try:
            process.start()
            return process, process.startup
        except forkserver.TemplateUnusable as unusable:
            failure = str(unusable)
    args = (
        replace(request, launched_at=time.time()).to_dict(),
        *args[1:],
        os.getpid(),
    )  # spawned: this process is its parent
    spawned = multiprocessing.get_context("spawn").Process(target=_child_main, args=args, name="segbench-cell")
    spawned.start()
    own_process_group(spawned.pid)
    return spawned, {"mode": "spawn"} | ({"forkserver_failed": failure} if failure else {})


def execute_isolated(request: CellRequest, timeout_s: float, log_path: Path | None = None) -> dict[str, Any]:
    """Run one cell in a fresh process (forked from a warm template); always returns an outcome dict with a status.

    An interruption (Ctrl-C, or SIGTERM raised as KeyboardInterrupt) while waiting stops the cell's
    whole process group at once and propagates; so does any other failure of the wait.
    """
    receiver, sender = multiprocessing.get_context("spawn").Pipe(duplex=False)
    process, startup = _start_cell_process(request, sender, log_path)
    sender.close()  # so EOF reaches us if the child dies
    try:
        return {**_await_outcome(process, receiver, timeout_s), "startup": startup}
    finally:
        kill_cell_group(process)  # a cell's leftovers never outlive it, even when it ended well
        receiver.close()


def _await_outcome(process: Any, receiver: Connection, timeout_s: float) -> dict[str, Any]:
    if not receiver.poll(timeout_s):
        kill_cell_group(process)
        return {"status": "timeout", "error": f"cell did not finish within timeout_s={timeout_s:g} s; killed"}
    try:
        outcome = receiver.recv()
    except EOFError:
        process.join()
        return _death_outcome(process.exitcode, getattr(process, "failure", None))
    # What the cell sent cannot be read (a handle that died with it, a class this process lacks): the cell's error.
    except Exception as exc:  # noqa: BLE001
        kill_cell_group(process)
        process.join()
        return {"status": "error", "error": f"the cell's outcome could not be received: {type(exc).__name__}: {exc}"}
    process.join(timeout=30)
    if process.is_alive():
        process.kill()
        process.join()
    return outcome


# ---- preparation in a throwaway child ---------------------------------------------------------------
