"""Messages that point the right way (issue 34 item 13): each mistake or failure gets the one line that names it."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from segbench.errors import SegbenchError
from segbench.results import store as results
from segbench.run.executors.ray import check_reachable
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite
from tests.helpers import FIXTURES, segbench


class RefusingExecutor:
    """An executor whose cluster refuses the connection: an OSError that has nothing to do with the disk."""

    def run(self, jobs: list[Any], started: Any, finished: Any) -> None:
        raise ConnectionRefusedError(111, "Connection refused")


def test_an_executor_oserror_is_not_called_a_disk_write_failure(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    """Any OSError from the executor (a refused Ray connection, torch's fd sharing) was reported as 'cannot write …
    free space or fix permissions'."""
    suite = load_suite(write_suite())
    with pytest.raises(SegbenchError) as error:
        run_suite(suite, None, tmp_path / "out", executor=RefusingExecutor(), executor_name="ray")  # type: ignore[arg-type]
    message = str(error.value)
    assert "ray executor failed: ConnectionRefusedError: Connection refused" in message, message
    assert "cannot write" not in message and "free space" not in message and "--resume" in message
    [run_dir] = list((tmp_path / "out").iterdir())
    meta = results.read_meta(run_dir)
    assert meta["status"] == "failed" and "ConnectionRefusedError" in meta["stop_reason"]


def test_a_bad_address_is_refused_quickly_in_one_line() -> None:
    """A bad --address waited almost 14 minutes in silence before a wrong message."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed once the block ends: nothing listens there
    started = time.monotonic()
    with pytest.raises(SegbenchError, match=f"--address 127.0.0.1:{port}: no Ray cluster answers there"):
        check_reachable(f"127.0.0.1:{port}", timeout_s=5)
    assert time.monotonic() - started < 6
    with pytest.raises(SegbenchError, match="is not host:port"):
        check_reachable("nonsense")


def test_address_without_the_ray_executor_is_refused(write_suite: Callable[..., Path]) -> None:
    """`--address` without `--executor ray` was silently ignored."""
    done = segbench("run", str(write_suite()), "--address", "10.0.0.5:6379", "--dry-run")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "--address" in line and "--executor ray" in line, line


def test_a_too_long_suite_name_names_the_field(write_suite: Callable[..., Path]) -> None:
    """A too-long suite name said 'choose a writable --out'."""
    done = segbench("run", str(write_suite(name="n" * 300)), "--dry-run")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "name" in line and "120" in line and "--out" not in line, line


def test_a_future_schema_results_line_names_the_file_and_the_line(tmp_path: Path) -> None:
    """A future-schema results line named neither the file nor the line."""
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "h100-rtx3060", run_dir)
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    second = json.loads(lines[1]) | {"schema_version": 99}
    (run_dir / "results.jsonl").write_text("\n".join([lines[0], json.dumps(second), *lines[2:]]) + "\n")
    done = segbench("report", str(run_dir), "-o", str(tmp_path / "r.md"), "--format", "md")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"{run_dir / 'results.jsonl'}: line 2: " in line and "schema_version 99" in line, line


def test_two_runs_creating_their_folders_at_once_never_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A race between two runs creating their folders said 'File exists; choose a writable --out': the other run
    made the folder between this one's check and its mkdir (simulated: every check sees no folder)."""
    first = results.new_run_dir(tmp_path, "race")
    monkeypatch.setattr(Path, "exists", lambda self: False)
    second = results.new_run_dir(tmp_path, "race")
    assert second != first and second.is_dir() and second.name.startswith("race-")
