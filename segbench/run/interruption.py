"""Stopping a run on request: Ctrl-C (SIGINT), SIGTERM and SIGHUP (a closed ssh session) end the cell in flight
at once, in whatever phase the run is (the ceiling measurement included), the run's meta.json says `interrupted`
with the cells done, and the user gets the exact command that resumes.

Like pytest and MLPerf LoadGen, an interruption is a clean, reported stop, never a traceback; a
second Ctrl-C during the (sub-second) bookkeeping is ignored rather than breaking it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from segbench.errors import SegbenchError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A signal the caller ignores stays ignored: the shell's `&` ignores SIGINT, `nohup` SIGHUP.
RESPECT_IGNORED = (signal.SIGINT, signal.SIGHUP)
_EXITS_AFTER_A_STOP = False  # set by `exit_after_a_stop`
_STOPPED = False  # a run of this process stopped on a signal while it exits after a stop: signals stay ignored


class StopRequested(KeyboardInterrupt):
    """SIGTERM raised where Ctrl-C would be, so every handler of KeyboardInterrupt handles both."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


def signal_name_of(exc: KeyboardInterrupt) -> str:
    return exc.signal_name if isinstance(exc, StopRequested) else "SIGINT"


class RunInterrupted(SegbenchError):
    """The run stopped on a signal; exit code 128 + the signal's number, as a shell reports it."""

    def __init__(self, run_dir: Path, signal_name: str, cells_done: int, cells_total: int):
        self.run_dir, self.signal_name = run_dir, signal_name
        self.cells_done, self.cells_total = cells_done, cells_total
        self.exit_code = 128 + int(getattr(signal, signal_name, signal.SIGINT))
        how = "Ctrl-C (SIGINT)" if signal_name == "SIGINT" else signal_name
        super().__init__(
            f"interrupted by {how} after {cells_done} of {cells_total} cell(s); the cell in flight was stopped and "
            f"{run_dir}/meta.json says interrupted"
        )


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested(signal.Signals(signum).name)


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While a run goes on, SIGTERM and SIGHUP raise like Ctrl-C does (one the caller ignored stays ignored)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    install_stop_handlers()
    try:
        yield
    finally:
        if not _STOPPED:  # after a stop the CLI only exits: a second Ctrl-C must not land in its cleanup
            for number, handler in previous.items():
                signal.signal(number, handler)


def install_stop_handlers() -> None:
    """Make every stop signal raise StopRequested here; also called after a library (Ray) installed its own."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in STOP_SIGNALS:
        if number in RESPECT_IGNORED and signal.getsignal(number) is signal.SIG_IGN:
            continue
        signal.signal(number, _raise_stop)


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Ignore further stop signals while the run records how it stopped."""
    global _STOPPED
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    try:
        yield
    finally:
        if _EXITS_AFTER_A_STOP:
            _STOPPED = True
        else:
            for number, handler in previous.items():
                signal.signal(number, handler)


def exit_after_a_stop() -> None:
    """This process only prints and exits once a run has stopped on a signal (the CLI, not a library caller).

    Then stop signals stay ignored from the stop on: a second Ctrl-C that comes after the bookkeeping (a user
    pressing twice) would only turn the exit into a traceback from whatever cleanup it landed in.
    """
    global _EXITS_AFTER_A_STOP
    _EXITS_AFTER_A_STOP = True
