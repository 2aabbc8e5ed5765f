"""Every phase of a run obeys the same stop rules: meta.json is written before anything slow, and Ctrl-C, SIGTERM or
SIGHUP in the ceiling measurement or a cell leave an `interrupted`, resumable run, one line and the resume command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from segbench.results import store as results
from segbench.run import interruption

STOPS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _as_from_a_terminal() -> None:
    """The CLI starts with every stop signal at its default and unblocked, whatever the test process has set."""
    for number in STOPS:
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)


def start_cli(*args: str) -> subprocess.Popen[str]:
    """In a session of its own: killpg then reaches it and its children, as a terminal's Ctrl-C does."""
    return subprocess.Popen(
        [sys.executable, "-m", "segbench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
        start_new_session=True,
    )


def wait_until(condition: Callable[[], bool], deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def meta_of(out: Path) -> dict[str, Any] | None:
    for path in out.glob("*/meta.json"):
        try:
            return json.loads(path.read_text())
        except ValueError:  # replaced while read
            return None
    return None


def stop(process: subprocess.Popen[str], number: signal.Signals, whole_group: bool) -> tuple[str, float]:
    started = time.monotonic()
    try:
        os.killpg(process.pid, number) if whole_group else os.kill(process.pid, number)
        _, stderr = process.communicate(timeout=60)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return stderr, time.monotonic() - started


def test_ctrl_c_during_the_ceiling_measurement_is_a_clean_resumable_stop(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    """Issue 34 item 4: Ctrl-C in the ceiling measurement (on by default, seconds after start) printed the ceiling
    child's traceback, waited up to 18 s, and left no meta.json and no resume line."""
    suite = write_suite(roofline={"measure_ceiling": True, "ceiling_seconds": 60})
    out = tmp_path / "out"
    process = start_cli("run", str(suite), "--out", str(out))
    assert wait_until(lambda: (meta_of(out) or {}).get("fingerprint") is not None, 120), "meta.json never written"
    time.sleep(2)  # the ceiling child is importing torch or timing GEMMs
    stderr, took = stop(process, signal.SIGINT, whole_group=True)
    assert process.returncode == 130, stderr
    assert took < 10, f"stopping took {took:.1f} s"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    [run_dir] = list(out.iterdir())
    assert f"--resume {run_dir}" in stderr, stderr
    meta = results.read_meta(run_dir)
    assert meta["status"] == "interrupted" and meta["cells_done"] == 0 and meta["ceiling"] is None


def test_sighup_stops_the_run_like_sigterm(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """Issue 34 item 4: SIGHUP (a closed ssh session) left meta `running` and no resume line."""
    suite = write_suite(models=["test-tiny", "test-hang"])
    out = tmp_path / "out"
    process = start_cli("run", str(suite), "--out", str(out))
    assert wait_until(lambda: any(out.glob("*/results.jsonl")), 180), "the first cell never finished"
    time.sleep(0.5)
    stderr, took = stop(process, signal.SIGHUP, whole_group=False)
    assert process.returncode == 129 and "interrupted by SIGHUP" in stderr and "--resume" in stderr, stderr
    assert took < 15
    [run_dir] = list(out.iterdir())
    assert results.read_meta(run_dir)["status"] == "interrupted"


class FakeRay:
    """ray.init as Ray's does it in a driver: it installs its own SIGTERM handler."""

    def __init__(self) -> None:
        self.initialized = False

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **options: Any) -> None:
        self.initialized = True
        signal.signal(signal.SIGTERM, lambda *_: os.abort())


def test_ray_init_does_not_take_over_the_run_s_stop_handlers() -> None:
    """Issue 34 item 4: under --executor ray, Ray's handler took SIGTERM (SIGABRT, a crash dump, meta failed)."""
    from segbench.run.executors.ray import RayExecutor

    executor = object.__new__(RayExecutor)
    executor.ray, executor.address = FakeRay(), None
    with interruption.stop_signals_raise():
        ours = signal.getsignal(signal.SIGTERM)
        executor._connect()
        assert executor.ray.initialized and signal.getsignal(signal.SIGTERM) is ours


def test_no_ceiling_child_outlives_a_stop(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """Issue 34 item 4: SIGTERM to segbench alone (not its group) during the ceiling: the child is killed at once and
    the run is recorded as interrupted before any ceiling (before, meta.json did not exist yet)."""
    suite = write_suite(roofline={"measure_ceiling": True, "ceiling_seconds": 60})
    out = tmp_path / "out"
    process = start_cli("run", str(suite), "--out", str(out))
    assert wait_until(lambda: (meta_of(out) or {}).get("fingerprint") is not None, 120)
    assert wait_until(lambda: bool(psutil.Process(process.pid).children()), 30)
    children = psutil.Process(process.pid).children(recursive=True)
    stderr, took = stop(process, signal.SIGTERM, whole_group=False)
    assert process.returncode == 143 and took < 10, stderr
    assert wait_until(lambda: not any(child.is_running() and child.status() != "zombie" for child in children), 10)
    [run_dir] = list(out.iterdir())
    meta = results.read_meta(run_dir)
    assert meta["status"] == "interrupted" and meta["ceiling"] is None
