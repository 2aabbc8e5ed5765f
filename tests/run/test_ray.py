"""The Ray executor on a local Ray instance with two pretend nodes, each with a fake "card" resource."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from segbench.results import store as results
from segbench.run.executors.ray import RayExecutor
from segbench.run.runner import run_suite
from segbench.suite.matrix import expand
from segbench.suite.schema import load_suite

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'segbench[ray]'")
from ray.cluster_utils import Cluster  # noqa: E402

CARDS = ["card-a", "card-b"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two pretend nodes on this machine, one CPU each, each advertising one fake card."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"card-a": 1}, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1, resources={"card-b": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / results.RESULTS_FILE).read_text().splitlines()]


def test_cells_run_once_per_card_on_the_matching_node(
    cluster: Cluster, write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    suite_path = write_suite(hardware=CARDS, executor="ray", batch_sizes=[1, 2])
    run_dir = run_suite(
        load_suite(suite_path),
        suite_path,
        tmp_path / "ray",
        executor=RayExecutor(address=cluster.address, cpus_per_cell=1),
    ).run_dir
    records = _lines(run_dir)
    cells = expand(load_suite(suite_path))
    assert sorted(r["cell_key"] for r in records) == sorted(f"{c.cell_id}@{card}" for c in cells for card in CARDS)
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    nodes = {card: {r["node"]["node_id"] for r in records if r["hardware"] == card} for card in CARDS}
    assert all(len(ids) == 1 for ids in nodes.values()) and nodes["card-a"] != nodes["card-b"]

    local_suite = write_suite("local.yaml", batch_sizes=[1, 2])
    local = _lines(run_suite(load_suite(local_suite), local_suite, tmp_path / "local").run_dir)
    shared = set(local[0]) - {"cell_key", "hardware", "node", "attempt"}
    assert all(shared <= set(record) for record in records)  # the same record shape as a local run


def _worker_mid_cell() -> psutil.Process | None:
    """The Ray worker running a cell, once its cell's own process is alive under it (spawned or forked from the
    warm-start template): mid-cell for certain, never before the task runs its cell nor after the cell returned."""
    for process in psutil.process_iter(["pid", "cmdline"]):
        if "_run_on_worker" not in " ".join(process.info["cmdline"] or []):
            continue
        try:
            if process.children(recursive=True):
                return process
        except psutil.NoSuchProcess:
            continue
    return None


def _kill_worker_mid_cell(deadline_s: float, killed: list[int]) -> None:
    """Waits for a worker observably mid-cell and kills it once; `killed` tells the test whether it happened (a thread's
    exception would be lost)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        worker = _worker_mid_cell()
        if worker is not None:
            try:
                worker.kill()
            except psutil.NoSuchProcess:  # it ended between the look and the kill: look again
                continue
            killed.append(worker.pid)
            return
        time.sleep(0.05)


def test_worker_killed_mid_cell_is_recorded_and_retried_once(
    cluster: Cluster, write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    timing = {
        "warmup_iters": 1,
        "min_iters": 3,
        "max_iters": 1000,
        "min_time_s": 4.0,
        "warmup_s": 0.0,
        "max_time_s": 6.0,
        "timeout_s": 120,
    }
    suite_path = write_suite(hardware=CARDS[:1], executor="ray", timing=timing)
    import threading

    killed: list[int] = []
    # The deadline only bounds a broken run: the killer waits for the cell's process, however late a loaded machine
    # starts it, and the cell measures for at least min_time_s after that.
    killer = threading.Thread(target=_kill_worker_mid_cell, args=(600, killed), daemon=True)
    killer.start()
    run_dir = run_suite(
        load_suite(suite_path),
        suite_path,
        tmp_path / "ray",
        executor=RayExecutor(address=cluster.address, cpus_per_cell=1),
    ).run_dir
    killer.join(timeout=5)
    lines = _lines(run_dir)
    assert len(killed) == 1, f"no Ray worker was seen mid-cell; the run recorded {[r['status'] for r in lines]}"
    first, second = lines
    assert first["status"] == "error" and first["error"].startswith("node lost")
    assert second["status"] == "ok" and second["attempt"] == 2
    assert len(results.read_records(run_dir)) == 1  # the retry's record is the cell's result


def test_resume_after_the_driver_is_killed(cluster: Cluster, write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite_path = write_suite(
        hardware=CARDS,
        executor="ray",
        ray={"cpus_per_cell": 1},
        models=[{"name": "test-tiny", "options": {"sleep_ms": 20}}],
        batch_sizes=[1, 2, 3],
    )
    out = tmp_path / "ray"
    driver = subprocess.Popen(
        [sys.executable, "-m", "segbench", "run", str(suite_path), "--out", str(out), "--address", cluster.address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # A wait, not an assertion: it ends at the first record; a busy machine (xdist workers beside a Ray
        # cluster on 2 cores) took over 120 s to write it.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            files = list(out.glob("*/results.jsonl"))
            if files and files[0].read_text().count("\n") >= 1:
                break
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=30)
    [results_file] = out.glob("*/results.jsonl")
    run_dir = results_file.parent
    before = {results.record_key(r) for r in results.read_records(run_dir)}
    assert 1 <= len(before) < 6
    run_suite(
        load_suite(suite_path),
        suite_path,
        out,
        resume=run_dir,
        executor=RayExecutor(address=cluster.address, cpus_per_cell=1),
    )
    keys = [results.record_key(r) for r in _lines(run_dir)]
    expected = {f"{c.cell_id}@{card}" for c in expand(load_suite(suite_path)) for card in CARDS}
    assert set(keys) == expected and len(keys) == len(expected)  # nothing lost, nothing repeated


def test_cells_ask_for_their_threads_in_physical_cores_of_the_node_that_runs_them(
    write_suite: Callable[..., Path],
) -> None:
    from types import SimpleNamespace

    from segbench.cell.request import CellRequest
    from segbench.run.executors.base import Job

    suite = load_suite(write_suite(threads=2))
    job = Job(CellRequest(expand(suite)[0], "cpu", suite.timing, 10.0, suite.threads), 60, Path("x.log"))
    executor = RayExecutor.__new__(RayExecutor)
    executor.cpus_per_cell = None
    nodes = [{"NodeID": "smt", "Alive": True, "Resources": {"CPU": 16.0}}]
    executor.ray = SimpleNamespace(nodes=lambda: nodes)
    executor._per_core = {"smt": 2.0}  # as the node's own probe reports a 2-way SMT machine
    assert executor._cpus_for(job) == 4.0  # 2 threads: 2 physical cores = 4 logical CPUs, never 2 siblings
    executor._per_core = {"smt": 1.0}
    assert executor._cpus_for(job) == 2.0
    executor.cpus_per_cell = 0.5
    assert executor._cpus_for(job) == 0.5


def test_cpus_for_threads_gives_enough_physical_cores_on_every_node_able_to_hold_the_request() -> None:
    from segbench.run.executors.ray import cpus_for_threads

    assert cpus_for_threads(4, [(16.0, 2.0), (32.0, 2.0)]) == 8.0
    # an 8-CPU node without SMT needs 4, a 6-CPU SMT node 8 (it cannot hold them): asking 7 keeps the cell off
    # the SMT node, where 4 or 6 logical CPUs would be only 2 or 3 cores
    assert cpus_for_threads(4, [(8.0, 1.0), (6.0, 2.0)]) == 7.0
    assert cpus_for_threads(2, [(8.0, 1.0), (8.0, 2.0)]) == 4.0  # fits both: the SMT node's need
    assert cpus_for_threads(4, [(2.0, 1.0), (3.0, 2.0)]) == 3.0  # no node has 4 cores: the largest node, unpinned


def test_without_threads_a_cell_asks_for_the_smallest_eligible_node_not_the_driver(
    write_suite: Callable[..., Path],
) -> None:
    from types import SimpleNamespace

    from segbench.cell.request import CellRequest
    from segbench.run.executors.base import Job

    suite = load_suite(write_suite())
    request = CellRequest(expand(suite)[0], "cpu", suite.timing, 10.0, None)
    executor = RayExecutor.__new__(RayExecutor)
    executor.cpus_per_cell = None
    nodes = [
        {"NodeID": "a", "Alive": True, "Resources": {"CPU": 64.0, "card-a": 1}},
        {"NodeID": "b", "Alive": True, "Resources": {"CPU": 4.0, "card-b": 1}},
        {"NodeID": "c", "Alive": False, "Resources": {"CPU": 1.0, "card-a": 1}},
    ]
    executor.ray = SimpleNamespace(nodes=lambda: nodes)
    assert executor._cpus_for(Job(request, 60, Path("x.log"))) == 4.0  # feasible on the 4-CPU worker
    assert (
        executor._cpus_for(Job(request, 60, Path("x.log"), hardware="card-a")) == 64.0
    )  # only live card-a nodes count


def test_threads_follow_the_cpus_a_scheduler_gave_counting_smt_siblings_once(tmp_path: Path) -> None:
    from segbench.system import cpus

    allowed = sorted(cpus.affinity())
    for index, cpu in enumerate(allowed):  # pretend 2-way SMT: CPUs paired on one core each
        base = tmp_path / f"cpu{cpu}" / "topology"
        base.mkdir(parents=True)
        (base / "physical_package_id").write_text("0\n")
        (base / "core_id").write_text(f"{index // 2}\n")
    assert cpus.threads_for_cpus(2.0, tmp_path) == 1
    assert cpus.threads_for_cpus(1.0, tmp_path) == 1


def test_roofline_uses_the_ceiling_of_the_node_the_cell_ran_on() -> None:
    from segbench.run.runner import ceiling_for

    meta = {
        "ceiling": {"matmul": {"fp32": {"gflops": 50.0}}},
        "node_ceilings": {"n1": {"matmul": {"fp32": {"gflops": 200.0}}}},
    }
    assert ceiling_for({"node": {"node_id": "n1"}}, meta)["matmul"]["fp32"]["gflops"] == 200.0
    assert ceiling_for({"node": {"node_id": "n2"}}, meta) is None  # never the driver's ceiling for another machine
    assert ceiling_for({}, meta)["matmul"]["fp32"]["gflops"] == 50.0


def test_a_ray_run_without_threads_fits_one_cpu_nodes_and_measures_each_node(
    cluster: Cluster, write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    suite_path = write_suite(hardware=CARDS, executor="ray", roofline={"measure_ceiling": True, "ceiling_seconds": 0.5})
    run_dir = run_suite(
        load_suite(suite_path), suite_path, tmp_path / "ray", executor=RayExecutor(address=cluster.address)
    ).run_dir
    records = _lines(run_dir)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    assert all(r["threads"] == 1 and r["node"]["assigned_cpus"] == 1.0 for r in records)
    for record in records:  # the cell's threads were pinned, in the cell's own process, to the core it claimed
        pinned = record["node"]["pinned_cpus"]
        assert pinned is not None and len(pinned) == 1, record["node"].get("not_pinned")
        assert record["cpu_affinity"] == pinned
    meta = results.read_meta(run_dir)
    assert {r["node"]["node_id"] for r in records} <= set(meta["node_ceilings"])
    for record in records:
        node_rate = meta["node_ceilings"][record["node"]["node_id"]]["matmul"]["fp32"]["gflops"]
        assert record["roofline"]["percent_of_ceiling"] == pytest.approx(
            100 * record["roofline"]["achieved_tflops"] * 1000 / node_rate
        )


def test_without_ray_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from segbench.errors import SegbenchError
    from segbench.run.executors import ray as ray_executor

    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(SegbenchError, match=r"pip install 'segbench\[ray\]'"):
        ray_executor.RayExecutor()
