"""One writer per run folder: an exclusive lock held while a run or a resume writes to it.

Two concurrent `--resume` of one folder would each run every cell at once (disturbing both
timings and duplicating lines). The lock is an `flock` on `<run>/.lock`, released by the kernel
when its holder exits in any way (SIGKILL included), so a stale lock never blocks a resume.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from segbench.errors import SegbenchError
from segbench.results.store import LOCK_FILE, open_no_follow


@contextmanager
def hold_run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock, or refuse in one line naming the process that holds it."""
    try:  # never through a link: a `.lock` pointing elsewhere would have that file truncated
        handle = os.fdopen(open_no_follow(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT), "r+", encoding="utf-8")
    except OSError as exc:
        raise SegbenchError(
            f"{run_dir}: cannot open its lock file ({exc.strerror or exc}); check the folder's permissions"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another segbench process"
            raise SegbenchError(
                f"{run_dir}: in use by {holder}; wait for it to end or stop it (two writers would run every cell twice)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            f"segbench pid {os.getpid()} on {socket.gethostname()} since "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
        )
        handle.flush()
        yield
