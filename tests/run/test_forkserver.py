"""Warm start: cells fork from a template that imported the libraries; crashes and a dying template stay results."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from segbench.cell.request import CellRequest
from segbench.results import store as results
from segbench.run import forkserver
from segbench.run.isolation import execute_isolated
from segbench.run.runner import run_suite
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import Timing, load_suite
from tests.helpers import FAST_TIMING, FAULT_PLUGIN


def _records(suite_path: Path, out: Path) -> list[dict[str, Any]]:
    run_dir = run_suite(load_suite(suite_path), suite_path, out).run_dir
    return [json.loads(line) for line in (run_dir / results.RESULTS_FILE).read_text().splitlines()]


def _request(model: str, timeout_s: float = 240) -> CellRequest:
    cell = CellSpec(model=model, resolution=(16, 16), batch_size=1, precision="fp32", backend="eager")
    timing = Timing(**{**FAST_TIMING, "timeout_s": timeout_s})
    return CellRequest(cell, "cpu", timing, 10.0, 1, plugins=(FAULT_PLUGIN,))


def _live_template() -> forkserver.Template:
    [template] = [t for t in forkserver.live_templates() if t.alive()][-1:]
    return template


def test_cells_fork_from_a_warm_template_and_record_startup(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    first, second = _records(write_suite(models=["test-tiny"], batch_sizes=[1, 2]), tmp_path / "results")
    for record in (first, second):
        assert record["status"] == "ok", record.get("traceback") or record["error"]
        assert record["startup"]["mode"] == "forkserver"
        assert 0 <= record["startup_s"] <= record["wall_s"]
    # One template served both cells, and each cell had a process of its own.
    assert first["startup"]["template_pid"] == second["startup"]["template_pid"]
    assert first["startup"]["template_import_s"] > 0


def test_spawn_is_the_fallback_when_warm_start_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(forkserver.WARM_START_ENV, "0")
    outcome = execute_isolated(_request("test-tiny"), 240)
    assert outcome["status"] == "ok", outcome.get("traceback") or outcome["error"]
    assert outcome["startup"] == {"mode": "spawn"} and outcome["startup_s"] > 0


def test_template_imports_what_the_cell_needs_and_never_cuda() -> None:
    segformer = forkserver.cell_imports(
        CellSpec(model="segformer-b0", resolution=(64, 64), batch_size=1, precision="int8", backend="onnxruntime")
    )
    fast_scnn = forkserver.cell_imports(
        CellSpec(model="fast-scnn", resolution=(64, 64), batch_size=1, precision="fp32", backend="eager")
    )
    assert "transformers.models.segformer.modeling_segformer" in segformer and "onnxruntime" in segformer
    assert any(name.startswith("torchao") for name in segformer)
    assert fast_scnn == forkserver.BASE_IMPORTS  # nothing a Fast-SCNN cell would not import itself
    openvino = forkserver.cell_imports(
        CellSpec(model="fast-scnn", resolution=(64, 64), batch_size=1, precision="fp32", backend="openvino")
    )
    assert not any(name.split(".")[0] == "openvino" for name in openvino)  # its import starts a thread that forks
    template, _ = forkserver.template_for(fast_scnn)
    info = template.wait_ready()
    assert info["cuda_fork_problem"] is None and info["failed_imports"] == {}
    assert info["python_threads"] == 1  # nothing running beside the thread that forks
    # The imported heap is frozen: a cell's gc.collect() skips it instead of walking (and copying) it.
    assert info["frozen_objects"] > 10_000


def test_a_cuda_cell_never_forks_from_a_template_whose_imports_touched_cuda() -> None:
    # Found on an H200: transformers' import (through torchao) asked CUDA for the current device in the template,
    # and every SegFormer and Mask2Former cell forked from it failed with "Cannot re-initialize CUDA".
    poisoned = forkserver.BASE_IMPORTS + ("tests.cuda_fork_poisoner",)
    template, _ = forkserver.template_for(poisoned)
    assert template.wait_ready()["cuda_fork_problem"] == "asked the CUDA driver for devices while importing"

    cpu_cell = forkserver.ForkedProcess(print, (), poisoned)
    chosen, _, _, fallback = cpu_cell._ready_template()
    assert chosen is template and fallback is None  # a CPU cell never needs CUDA, so it keeps the warm imports

    cuda_cell = forkserver.ForkedProcess(print, (), poisoned, needs_cuda=True)
    chosen, info, _, fallback = cuda_cell._ready_template()
    assert chosen.imports == forkserver.BASE_IMPORTS and info["cuda_fork_problem"] is None
    assert fallback is not None and "tests.cuda_fork_poisoner" in fallback and "base template" in fallback


def test_a_crashed_forked_process_is_a_recorded_status() -> None:
    outcome = execute_isolated(_request("test-segfault"), 240)
    assert outcome["startup"]["mode"] == "forkserver"
    assert outcome["status"] == "error" and "SIGSEGV" in outcome["error"]
    assert execute_isolated(_request("test-tiny"), 240)["status"] == "ok"  # the template lives on


def _kill_template_once_it_forks(template_pid: int, earlier: set[int], killed: threading.Event) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if {child.pid for child in psutil.Process(template_pid).children()} - earlier:
            os.kill(template_pid, signal.SIGKILL)
            killed.set()
            return
        time.sleep(0.05)


def test_the_template_dying_under_a_cell_is_reported_not_waited_on() -> None:
    assert execute_isolated(_request("test-tiny"), 240)["status"] == "ok"  # a template for these imports is up
    template = _live_template()
    killed = threading.Event()
    earlier = {child.pid for child in psutil.Process(template.pid).children()}  # templates derived from it
    watcher = threading.Thread(target=_kill_template_once_it_forks, args=(template.pid, earlier, killed))
    watcher.start()
    started = time.monotonic()
    outcome = execute_isolated(_request("test-hang", timeout_s=200), 200)  # the cell sleeps for an hour
    watcher.join()
    assert killed.is_set()
    assert outcome["status"] == "error" and "forkserver" in outcome["error"] and "SIGKILL" in outcome["error"], outcome
    assert time.monotonic() - started < 100  # noticed at once, not at the cell's timeout
    assert execute_isolated(_request("test-tiny"), 240)["status"] == "ok"  # a fresh template serves the next cell


def test_a_template_that_died_between_cells_is_replaced_and_the_record_says_so() -> None:
    assert execute_isolated(_request("test-tiny"), 240)["status"] == "ok"
    template = _live_template()
    os.kill(template.pid, signal.SIGKILL)
    template.process.join(timeout=30)
    outcome = execute_isolated(_request("test-tiny"), 240)
    assert outcome["status"] == "ok", outcome.get("error")
    assert outcome["startup"]["template_pid"] != template.pid
    assert (
        "died between cells" in outcome["startup"]["template_replaced"]
        and "SIGKILL" in outcome["startup"]["template_replaced"]
    )


def test_a_prestarted_template_still_importing_is_killed_at_once_when_the_run_stops_early() -> None:
    # `segbench run` prestarts the base template before checking the suite; a bad suite then exits in its one
    # line, without waiting out the template's imports (close() would wait 5 s for a template that cannot answer).
    forkserver.close_templates()
    forkserver.prestart()
    [template] = forkserver.live_templates()
    assert template.imports == forkserver.BASE_IMPORTS and template.info is None
    forkserver.close_templates()
    assert template.process.exitcode == -signal.SIGKILL
    assert forkserver.live_templates() == []


def test_what_a_template_writes_while_importing_is_kept_for_the_runs_log() -> None:
    # A template outlives the block that captures the runner's chatter, so it writes into a file of its own.
    template, _ = forkserver.template_for(forkserver.BASE_IMPORTS + ("tests.chatty_at_import",))
    assert template.wait_ready()["failed_imports"] == {}
    assert "W1126 chatter from an import" in forkserver.template_output()


def test_a_template_with_more_imports_is_forked_from_the_base_and_ends_with_it() -> None:
    # A quantization suite needs one import set per precision and backend; each forks from the base template and
    # imports only what the base lacks, instead of importing torch again in a fresh process.
    base, _ = forkserver.template_for(forkserver.BASE_IMPORTS)
    base.wait_ready()
    imports = forkserver.BASE_IMPORTS + ("wave",)  # a module the base has not imported (from its sys.path)
    derived, _ = forkserver.template_for(imports)
    info = derived.wait_ready()
    assert info["derived_from"] == base.pid and psutil.Process(derived.pid).ppid() == base.pid
    assert info["failed_imports"] == {} and info["cuda_fork_problem"] is None

    os.kill(base.pid, signal.SIGKILL)  # the base's death takes what it forked along, and is noticed
    derived.process.join(timeout=30)
    assert not derived.alive()
    again, replaced = forkserver.template_for(imports)
    assert replaced is not None and "died between cells" in replaced and "base template" in replaced
    fresh_base = forkserver.template_for(forkserver.BASE_IMPORTS)[0]
    assert again.wait_ready()["derived_from"] == fresh_base.pid != base.pid
