"""`segbench`: every command registered on the app, in the order --help lists them."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from concurrent.futures import thread as futures_thread

from segbench.cli import artifacts, profile, report, run, tools
from segbench.cli.app import app, errors

COMMANDS = (
    run.run,
    profile.profile,
    tools.env,
    tools.models,
    tools.fit,
    tools.predict,
    tools.selfcheck,
    report.report,
    report.compare,
    artifacts.export,
    artifacts.cache_command,
)
for command in COMMANDS:
    app.command(name=command.__name__.removesuffix("_command"))(command)

STRAY_THREAD_GRACE_S = 1.0  # a thread about to finish (a flush, a last request) gets this long


def stray_threads(grace_s: float = STRAY_THREAD_GRACE_S) -> list[threading.Thread]:
    """Non-daemon threads still running once the command is done (a plugin's, a library's), after a short grace.

    Python would wait for them at exit, forever for one that never ends; thread-pool workers are left out, since
    Python stops those itself."""
    deadline = time.monotonic() + grace_s
    stray = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        if getattr(thread, "_target", None) is futures_thread._worker:
            continue
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            stray.append(thread)
    return stray


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # SystemExit("text") prints the text and exits 1, as Python does
    return 1


def main() -> None:
    try:
        app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    stray = stray_threads()
    if not stray:
        raise SystemExit(code)
    names = ", ".join(thread.name for thread in stray[:5])
    errors.print(
        f"warning: {len(stray)} thread(s) a plugin or library started are still running ({names}); segbench exits "
        "without waiting for them",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    exit_code = _exit_code(code)
    atexit._run_exitfuncs()  # what a normal exit runs (templates closed, logs flushed) but the wait for threads
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(exit_code)
