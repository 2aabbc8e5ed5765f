"""Process primitives: death with the parent, a process group killed whole, and work run in a throwaway fork.

The cell launcher (`segbench.run.isolation`), the warm templates (`segbench.run.forkserver`), the ONNX export
(`segbench.backends.onnxruntime`) and the roofline probe (`segbench.hardware.roofline`) share them. No torch at
the top: a template or a spawned child arms these before importing anything heavy.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KILL_ROUNDS = 20  # a descendant forking while its tree is killed leaves orphans for the next round


STOP_GRACE_S = 5.0  # how long a killed cell's process gets to be reaped


def die_with_parent(check_parent: bool = True) -> None:
    """Ask Linux to kill this child if the parent dies, so a killed run leaves no orphan measuring on.

    A parent that died before this call will never send the signal, so a spawned child whose
    parent is already gone exits here (a forked cell checks its own parent: see arm_cell_process).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass
    parent = multiprocessing.parent_process() if check_parent else None
    if parent is not None and parent.pid != os.getppid():
        os._exit(1)


def become_subreaper() -> None:
    """Orphans of anything this process starts are re-parented to it, not to init: a daemon that double-forks or
    calls setsid (leaving the process group) stays among this process's descendants, where kill_descendants finds
    it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
        except OSError:
            pass


def kill_descendants(pid: int | None = None) -> None:
    """SIGKILL every living descendant of `pid` (default: this process), whatever its session or group, until none
    is left. Zombies are left to their parents: they run nothing."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    for _ in range(KILL_ROUNDS):
        try:
            living = [p for p in root.children(recursive=True) if _running(p)]
        except psutil.Error:  # the root itself ended: its orphans went to a subreaper above it
            return
        if not living:
            return
        for process in living:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(living, timeout=0.5)


def _running(process: Any) -> bool:
    import psutil

    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def signal_name(exit_code: int) -> str:
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


def own_process_group(pid: int | None) -> None:
    """Also set from the parent: a kill that comes before the child's own setpgid still finds the group."""
    if pid is None:
        return
    try:
        os.setpgid(pid, pid)
    except OSError:  # the child set it already (or exec'd): either way the group is its own
        pass


def kill_cell_group(process: Any) -> None:
    """SIGKILL what the cell started (its descendants, in its group or detached from it: the cell is their subreaper)
    and the cell's process group, then reap the child."""
    if process.pid is not None:
        if process.is_alive():
            kill_descendants(process.pid)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if process.is_alive():
        process.kill()
    process.join(timeout=STOP_GRACE_S)


class ChildProcessDied(RuntimeError):
    """A forked preparation step ended without reporting (crashed, killed)."""


def _report_from_child(write_fd: int, function: Any) -> None:
    import pickle
    import traceback

    try:
        try:
            payload: tuple[str, Any] = ("ok", function())
        except BaseException as exc:  # noqa: BLE001 (the parent re-raises it)
            payload = ("error", exc, traceback.format_exc(limit=20))
        try:
            data = pickle.dumps(payload)
        except Exception as exc:  # noqa: BLE001 (an exception that cannot be pickled comes back as text)
            data = pickle.dumps(("error", RuntimeError(f"{type(payload[1]).__name__}: {payload[1]} ({exc})"), ""))
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(data)
    finally:
        os._exit(0)  # never the parent's atexit handlers, finalizers or buffered output


def call_in_fork(function: Any) -> Any:
    """Run `function()` in a forked copy of this process and return its (picklable) result, or raise its error.

    For preparation whose leftovers must not stay in the measuring process (an ONNX export keeps
    ~100 MiB of graphs and caches alive): the fork sees the model as it is here and its memory goes
    with it. CPU-only callers: a forked child cannot use a CUDA context its parent created. The fork
    runs torch single-threaded (an OpenMP pool does not survive fork), dies with its parent, and is
    in the cell's process group, so the cell's timeout reaches it.
    """
    import pickle

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        die_with_parent(check_parent=False)
        import torch

        torch.set_num_threads(1)
        _report_from_child(write_fd, function)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        ended = exit_text(os.waitstatus_to_exitcode(status))
        raise ChildProcessDied(f"the preparation process ended without reporting ({ended})")
    payload = pickle.loads(data)
    if payload[0] == "ok":
        return payload[1]
    error: BaseException = payload[1]
    if payload[2]:
        error.add_note(f"in the preparation process {pid}:\n{payload[2]}")
    raise error


def exit_text(exit_code: int | None) -> str:
    """How a process ended, as multiprocessing reports it (negative: the signal): 'killed by SIGKILL', 'exit code 1'."""
    if exit_code is None:
        return "still running"
    if exit_code < 0:
        return f"killed by {signal_name(exit_code)}"
    return f"exit code {exit_code}"
