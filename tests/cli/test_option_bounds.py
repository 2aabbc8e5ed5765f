"""Every numeric option of every command is finite, positive and bounded (cli/options.bounded), and a bad value or
flag is one line naming it, exit 2, before anything slow starts."""

from __future__ import annotations

import pytest

from tests.helpers import segbench

CASES = [  # (command line, the flag the line must name); each a traceback, a hang or a huge allocation before
    (["selfcheck", "--repeats", "0"], "--repeats"),
    (["selfcheck", "--min-time-s", "0"], "--min-time-s"),
    (["selfcheck", "--min-time-s", "inf"], "--min-time-s"),
    (["selfcheck", "--min-time-s", "nan"], "--min-time-s"),
    (["selfcheck", "--resolution", "0"], "--resolution"),
    (["selfcheck", "--resolution", "100000"], "--resolution"),
    (["fit", "fast-scnn", "--hardware", "rtx3060", "--timeout", "inf"], "--timeout"),
    (["fit", "fast-scnn", "--hardware", "rtx3060", "--resolution", "0"], "--resolution"),
    (["fit", "fast-scnn", "--hardware", "rtx3060", "--max-batch", "1e9"], "--max-batch"),
    (["compare", "a", "b", "--threshold", "nan"], "--threshold"),
    (["compare", "a", "b", "--fail-on-regression", "inf"], "--fail-on-regression"),
    (["report", "x", "--target-fps", "inf"], "--target-fps"),
    (["report", "x", "--min-agreement", "101"], "--min-agreement"),
    (["run", "--model", ""], "--model"),
    (["run", "--no-such-flag"], "--no-such-flag"),
    (["run", "--model", "fast-scnn", "--scenario", "capacity", "--camera-fps", "0"], "--camera-fps"),
    (["run", "--model", "fast-scnn", "--scenario", "capacity", "--camera-fps", "nan"], "--camera-fps"),
]


@pytest.mark.parametrize(("args", "flag"), CASES, ids=[" ".join(args) for args, _ in CASES])
def test_a_bad_option_is_one_line_naming_it(args: list[str], flag: str) -> None:
    """Issue 34 item 14: selfcheck validated nothing (tracebacks, an endless loop, a 30 GB allocation), `fit --timeout
    inf` escaped as a pydantic traceback, `run --model ''` was an IndexError."""
    done = segbench(*args, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and flag in line, line
