"""Keep third-party chatter off the terminal: libraries' warnings and log lines go to a log file instead.

torch, torchao, transformers and ultralytics write warnings to stderr while they import and build
(torchao's `W1125 … _pytree` lines, for instance). Cells already send theirs to the cell's log; these
helpers do the same for what the parent process runs (suite checks, `predict`), at the file-descriptor
level, so C++ and Python output alike are caught. `--verbose` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from segbench.errors import SegbenchError


@dataclass
class Captured:
    """What libraries wrote to stderr while captured (filled when the block ends)."""

    text: str = ""
    lines: list[str] = field(default_factory=list)

    def write_to(self, path: os.PathLike[str] | str) -> None:
        """Append the captured text to a log file (nothing when there is none)."""
        if self.text:  # never through a link planted where the log goes (O_NOFOLLOW)
            handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            with os.fdopen(handle, "a", encoding="utf-8") as log:
                log.write(self.text)


def _warning_to_stderr(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def library_output(verbose: bool = False) -> Iterator[Captured]:
    """Within the block, fd 2 (stderr) and Python warnings go to a temporary file.

    `verbose` leaves them on the terminal instead.
    """
    captured = Captured()
    if verbose:
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.simplefilter("default")  # shown once each, into the sink
        warnings.showwarning = _warning_to_stderr  # even where a test runner records warnings itself
        os.dup2(sink.fileno(), 2)
        # sys.stderr may not write through fd 2 (a test runner's capture): point it at the sink too.
        stream = open(2, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        crashed = False
        try:
            with contextlib.redirect_stderr(stream):
                yield captured
        except SegbenchError:
            raise  # the user's mistake: its one line is all the terminal needs
        except BaseException:
            crashed = True  # a crash or Ctrl-C: what libraries said may explain it, so it is shown
            raise
        finally:
            stream.close()  # flushes; fd 2 stays open (closefd=False)
            sys.stderr.flush()
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")
            captured.lines = [line for line in captured.text.splitlines() if line.strip()]
            if crashed and captured.text:
                sys.stderr.write(captured.text)
                sys.stderr.flush()
