"""Reliability under faults and hostile input (issue 14): each test reproduces one defect first.

Most run the real CLI in a subprocess, as the defects were seen; cells are real spawned processes
of the fault models in `tests/fault_models.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import psutil
import pytest
import yaml

from segbench import results
from tests.conftest import FAST_TIMING, FAULT_PLUGIN

ROOT = Path(__file__).resolve().parent.parent


def segbench(*args: str, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "segbench", *args], check=False, capture_output=True, text=True, timeout=timeout, **kwargs)


def only_run_dir(out: Path) -> Path:
    [run_dir] = [path for path in out.iterdir() if path.is_dir()]
    return run_dir


def lines_of(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / results.RESULTS_FILE).read_text().splitlines()]


# ---- 1: terminal text is escaped --------------------------------------------------------------------

def test_an_error_that_looks_like_markup_is_printed_and_the_run_goes_on(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite = write_suite(models=["test-bracket-error", "test-tiny"])
    done = segbench("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr  # an error cell fails the run (its reason is the last line), and the run went on
    assert "MarkupError" not in done.stderr + done.stdout
    assert "[/data/frames/0001.png]" in done.stdout and "[enforce fail at alloc_cpu.cpp:127]" in done.stdout
    run_dir = only_run_dir(tmp_path / "out")
    assert [r["status"] for r in lines_of(run_dir)] == ["error", "ok"]
    assert results.read_meta(run_dir)["status"] == "complete"


# ---- helpers for process faults ---------------------------------------------------------------------

def gone(pid: int) -> bool:
    """Dead or a zombie (nothing reaps zombies in some containers)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition: Callable[[], bool], deadline_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "segbench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cell_processes(parent: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        children = psutil.Process(parent.pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def grandchild_model(pid_file: Path, hang: bool) -> dict[str, Any]:
    return {"name": "test-grandchild", "options": {"pid_file": str(pid_file), "hang": hang}}


# ---- 2: a cell arms its parent-death signal before any import ---------------------------------------

def test_a_parent_killed_while_the_cell_starts_leaves_no_orphan(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    process = start_cli("run", str(write_suite(models=["test-hang"])), "--out", str(tmp_path / "out"))
    try:
        assert wait_until(lambda: bool(cell_processes(process)), 120, 0.01), "no cell process started"
        [cell] = cell_processes(process)
        os.kill(process.pid, signal.SIGKILL)  # within milliseconds of the cell's start, long before torch is imported
        process.wait(timeout=30)
        assert wait_until(lambda: gone(cell.pid), 20), "the cell outlived its killed parent"
    finally:
        kill_quietly(process.pid)
        for child in psutil.Process().children(recursive=True):
            kill_quietly(child.pid)


# ---- 7: a timeout (and a cell's end) kills what the cell started -----------------------------------------

def test_processes_a_cell_starts_die_with_it_on_timeout_and_at_its_end(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    hanging, finishing = tmp_path / "hanging.pid", tmp_path / "finishing.pid"
    timing = {**FAST_TIMING, "timeout_s": 20}
    suite = write_suite(models=[grandchild_model(hanging, hang=True), grandchild_model(finishing, hang=False)], timing=timing)
    done = segbench("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in lines_of(only_run_dir(tmp_path / "out"))] == ["timeout", "ok"]
    pids = [int(path.read_text()) for path in (hanging, finishing)]
    try:
        assert wait_until(lambda: all(gone(pid) for pid in pids), 10), "a process started by a cell outlived the cell"
    finally:
        for pid in pids:
            kill_quietly(pid)


# ---- 6: Ctrl-C and SIGTERM stop the cell in flight and leave a resumable, reported run -----------------

def _interrupt_during_hanging_cell(write_suite: Callable[..., Path], tmp_path: Path, signals: list[signal.Signals]) -> tuple[subprocess.Popen[str], str, Path, Path, int]:
    pid_file = tmp_path / "grandchild.pid"
    suite = write_suite(models=["test-tiny", grandchild_model(pid_file, hang=True), {"name": "test-tiny", "options": {"sleep_ms": 1}}])
    process = start_cli("run", str(suite), "--out", str(tmp_path / "out"))
    try:
        assert wait_until(pid_file.is_file, 180, 0.1), "the hanging cell never started"
        started = time.monotonic()
        for number in signals:
            os.kill(process.pid, number)
            time.sleep(0.05)
        _, stderr = process.communicate(timeout=60)
        assert time.monotonic() - started < 15, "stopping waited for the cell instead of stopping it"
    finally:
        kill_quietly(process.pid)
    return process, stderr, suite, only_run_dir(tmp_path / "out"), int(pid_file.read_text())


def test_ctrl_c_stops_the_cell_marks_meta_and_prints_the_resume_command(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    process, stderr, suite, run_dir, grandchild = _interrupt_during_hanging_cell(write_suite, tmp_path, [signal.SIGINT, signal.SIGINT])
    try:
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
        assert f"resume with: segbench run {suite} --resume {run_dir}" in stderr
        assert "after 1 of 3 cell(s)" in stderr
        meta = results.read_meta(run_dir)
        assert meta["status"] == "interrupted" and meta["cells_done"] == 1 and meta["cells_total"] == 3
        assert wait_until(lambda: gone(grandchild), 10)
    finally:
        kill_quietly(grandchild)
    report = segbench("report", str(run_dir), "-o", str(tmp_path / "r.html"))
    assert report.returncode == 0 and "interrupted after 1 of 3" in report.stdout, report.stderr
    assert "1 of 3 cells finished" in (tmp_path / "r.html").read_text()
    compared = segbench("compare", str(run_dir), str(run_dir))
    assert compared.returncode == 0 and "interrupted after 1 of 3" in compared.stdout, compared.stderr


def test_sigterm_stops_the_run_like_ctrl_c(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    process, stderr, _, run_dir, grandchild = _interrupt_during_hanging_cell(write_suite, tmp_path, [signal.SIGTERM])
    kill_quietly(grandchild)
    assert process.returncode == 143 and "interrupted by SIGTERM" in stderr and "--resume" in stderr
    assert results.read_meta(run_dir)["status"] == "interrupted"


# ---- 3: one writer per run folder ---------------------------------------------------------------------

def test_a_second_writer_of_a_run_folder_is_refused_naming_the_holder(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    suite = write_suite(models=[grandchild_model(pid_file, hang=True)])
    first = start_cli("run", str(suite), "--out", str(tmp_path / "out"))
    try:
        assert wait_until(pid_file.is_file, 180, 0.1)
        run_dir = only_run_dir(tmp_path / "out")
        second = segbench("run", str(suite), "--resume", str(run_dir))
        assert second.returncode == 2
        [line] = second.stderr.strip().splitlines()
        assert f"in use by segbench pid {first.pid}" in line
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
        kill_quietly(int(pid_file.read_text()))
    assert not (run_dir / results.RESULTS_FILE).exists()  # the refused resume ran nothing


# ---- 9, 10, 11: the store is repaired exactly as it is read, and validated before anything changes ------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real two-cell run (suite file, run folder), copied by each test that edits it."""
    from segbench.runner import run_suite
    from segbench.suite import load_suite

    base = tmp_path_factory.mktemp("finished")
    suite = base / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "t", "device": "cpu", "plugins": [FAULT_PLUGIN], "models": ["test-tiny"], "resolutions": [16],
                                     "batch_sizes": [1, 2], "timing": FAST_TIMING, "roofline": {"measure_ceiling": False}}))
    return suite, run_suite(load_suite(suite), suite, base / "out").run_dir


def copied(run: tuple[Path, Path], tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run[1], target)
    return target


def test_resume_cuts_a_corrupt_last_line_that_ends_in_a_newline(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir = copied(finished_run, tmp_path)
    first, _ = (run_dir / results.RESULTS_FILE).read_text().splitlines()
    (run_dir / results.RESULTS_FILE).write_text(first + "\n" + '{"cell_id": "half a rec\n')  # torn, then a newline
    done = segbench("run", str(finished_run[0]), "--resume", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert len(results.read_records(run_dir)) == 2 and len((run_dir / results.RESULTS_FILE).read_text().splitlines()) == 2
    assert segbench("report", str(run_dir), "-o", str(tmp_path / "r.html")).returncode == 0


def test_a_resume_refused_for_a_corrupt_line_leaves_meta_untouched(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir = copied(finished_run, tmp_path)
    first, second = (run_dir / results.RESULTS_FILE).read_text().splitlines()
    (run_dir / results.RESULTS_FILE).write_text("{not json\n" + second + "\n")
    before = (run_dir / results.META_FILE).read_text()
    done = segbench("run", str(finished_run[0]), "--resume", str(run_dir))
    assert done.returncode == 2 and "line 1: corrupt record" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert (run_dir / results.META_FILE).read_text() == before


RECORD_DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "string batch": (lambda r: r.update(batch_size="2"), "batch_size"),
    "list cell_id": (lambda r: r.update(cell_id=["a"]), "cell_id"),
    "string fps": (lambda r: r.update(fps="fast"), "fps"),
    "string latency": (lambda r: r.update(latency_ms="12 ms"), "latency_ms"),
    "string median": (lambda r: r["latency_ms"].update(median="12"), "latency_ms.median"),
    "missing model": (lambda r: r.pop("model"), "model"),
    "null model": (lambda r: r.update(model=None), "model"),
    "string resolution": (lambda r: r.update(resolution="16x16"), "resolution"),
    "one-sided resolution": (lambda r: r.update(resolution=[16]), "resolution"),
    "unknown status": (lambda r: r.update(status="fine"), "status"),
    "string memory": (lambda r: r.update(memory_mb={"rss_peak": "lots"}), "memory_mb.rss_peak"),
    "ok without latency": (lambda r: r.update(latency_ms=None), "latency_ms"),
}


@pytest.mark.parametrize("damage", list(RECORD_DAMAGE))
def test_a_wrongly_typed_record_is_one_line_naming_file_line_and_field(finished_run: tuple[Path, Path], tmp_path: Path, damage: str) -> None:
    from typer.testing import CliRunner

    from segbench.cli import app

    run_dir = copied(finished_run, tmp_path)
    records = lines_of(run_dir)
    change, field = RECORD_DAMAGE[damage]
    change(records[0])
    (run_dir / results.RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    done = CliRunner().invoke(app, ["report", str(run_dir), "-o", str(tmp_path / "r.html")])
    assert done.exit_code == 2 and "Traceback" not in done.output, done.output
    [line] = done.stderr.strip().splitlines()
    assert "results.jsonl: line 1: invalid record: " in line and field in line


def test_invalid_utf8_inside_the_results_is_one_line(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir = copied(finished_run, tmp_path)
    first, second = (run_dir / results.RESULTS_FILE).read_bytes().splitlines()
    (run_dir / results.RESULTS_FILE).write_bytes(first[:-3] + b'\xff"}\n' + second + b"\n")
    done = segbench("report", str(run_dir), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 2 and "line 1: corrupt record" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("meta", [[1, 2], "a string", {"suite": "t", "device": "cpu", "fingerprint": "cpu"}, {"device": "cpu"}])
def test_a_wrongly_typed_meta_is_one_line_in_report_and_resume(finished_run: tuple[Path, Path], tmp_path: Path, meta: Any) -> None:
    run_dir = copied(finished_run, tmp_path)
    (run_dir / results.META_FILE).write_text(json.dumps(meta))
    for done in (segbench("report", str(run_dir), "-o", str(tmp_path / "r.html")), segbench("run", str(finished_run[0]), "--resume", str(run_dir))):
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert "meta.json" in line
