"""The CPUs a cell may use (affinity, cgroup quota) and the machine's load around a cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segbench.system import cpus

PINNED_CELL = """
import json, sys
from segbench.cell.request import CellRequest
from segbench.cell.passes import run_cell
from segbench.suite.matrix import CellSpec
from segbench.models.registry import load_plugin
from segbench.suite.schema import Timing
load_plugin(sys.argv[1])
timing = Timing(warmup_iters=1, min_iters=2, max_iters=3, min_time_s=0.0, max_time_s=1.0, memory_iters=1)
outcome = run_cell(CellRequest(CellSpec("test-tiny", (16, 16), 1, "fp32", "eager"), "cpu", timing, 10.0, None, \
(sys.argv[1],)))
print(json.dumps({"status": outcome["status"], "threads": outcome["threads"], "error": outcome.get("error")}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_a_cell_pinned_to_one_cpu_uses_one_thread_by_default() -> None:
    from tests.helpers import FAULT_PLUGIN

    out = subprocess.run(
        [sys.executable, "-c", PINNED_CELL, FAULT_PLUGIN],
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    outcome = json.loads(out.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "ok", outcome["error"] or out.stderr[-2000:]
    assert outcome["threads"] == 1


def test_cgroup_quota_caps_the_default(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: at most one thread
    assert cpus.cgroup_quota(tmp_path) == 0.5
    assert cpus.usable_cpus(tmp_path) == 1
    assert cpus.default_threads(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus.cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota_is_read(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.cgroup_quota(tmp_path) == 1.5


def test_smt_siblings_count_once(tmp_path: Path) -> None:
    for cpu, core in ((0, 0), (1, 0), (2, 1), (3, 1)):
        base = tmp_path / f"cpu{cpu}" / "topology"
        base.mkdir(parents=True)
        (base / "physical_package_id").write_text("0\n")
        (base / "core_id").write_text(f"{core}\n")
    assert cpus.physical_cores_of({0, 1, 2, 3}, tmp_path) == 2
    assert cpus.physical_cores_of({0, 2}, tmp_path) == 2
    assert cpus.physical_cores_of({0, 1}, tmp_path) == 1


def _burn(seconds: float) -> None:
    import time

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_busy_neighbour_flags_the_window_contended() -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    neighbours = [context.Process(target=_burn, args=(3.0,)) for _ in range(2)]
    for process in neighbours:
        process.start()
    try:
        # One thread of ours on a machine we pretend has one CPU: the neighbours leave nothing to spare.
        with cpus.ContentionWindow(threads=1, machine_cpus=1) as window:
            _burn(1.0)
    finally:
        for process in neighbours:
            process.join()
    assert window.others_cpus is not None and window.others_cpus > 1.0
    assert window.reason is not None and window.reason.startswith("other processes used")
    record = window.to_dict()
    assert record["before"]["load_1m"] is not None and record["after"] is not None


def test_a_quiet_window_with_cpus_to_spare_is_not_contended() -> None:
    with cpus.ContentionWindow(threads=1, machine_cpus=1000) as window:
        _burn(0.2)
    assert window.reason is None and window.to_dict()["others_cpus"] is not None


def _smt_topology(root: Path, cores: int) -> set[int]:
    """A pretend 2-way SMT machine: logical CPUs 2k and 2k+1 are siblings on core k."""
    for cpu in range(2 * cores):
        base = root / f"cpu{cpu}" / "topology"
        base.mkdir(parents=True)
        (base / "physical_package_id").write_text("0\n")
        (base / "core_id").write_text(f"{cpu // 2}\n")
    return set(range(2 * cores))


def test_tasks_side_by_side_claim_distinct_physical_cores_never_siblings(tmp_path: Path) -> None:
    allowed, claims = _smt_topology(tmp_path / "topology", 4), tmp_path / "claims.json"
    assert cpus.logical_per_core(allowed, tmp_path / "topology") == 2.0

    def claim(threads: int) -> cpus.CoreClaim:
        return cpus.claim_cores(threads, allowed, claims, tmp_path / "topology")

    first, second = claim(2), claim(2)
    assert first.cpus == (0, 2) and second.cpus == (4, 6)  # one logical CPU on each of two cores per task
    third = claim(1)
    assert third.cpus is None and "0 of 4 physical cores free" in (third.reason or "")
    cpus.release_cores(first, claims)
    assert claim(1).cpus == (0,)

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)  # a task that died holding cores no longer holds them
    claims.write_text(json.dumps([{"pid": dead_pid, "token": "gone", "cpus": sorted(allowed)}]))
    assert claim(4).cpus == (0, 2, 4, 6)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_pin_to_sets_the_process_affinity() -> None:
    before = os.sched_getaffinity(0)
    try:
        assert cpus.pin_to((min(before),)) == [min(before)] and os.sched_getaffinity(0) == {min(before)}
        assert cpus.pin_to(None) is None
    finally:
        os.sched_setaffinity(0, before)
