"""The Ray executor: cells as Ray tasks across a cluster, each still in its own fresh process.

Each task asks for one GPU (or `cpus_per_cell` CPUs on a CPU cluster) and, when the suite targets
several cards, one unit of a custom resource named after the card, so a cell runs on a node with
that card. Ray counts logical CPUs: a cell with `threads: N` asks for N physical cores' worth of the
nodes that may run it (each node's SMT ratio, probed once per node), and on the worker it claims N
distinct physical cores and pins its threads to them (cpus.claim_cores). On the worker the task
calls the same `execute_repeated` as the local executor, so the spawned child, the hard timeout and
the status mapping are identical. The driver appends each record as its task ends. A task whose
worker or node dies is recorded as `error: node lost` and retried once, on another node with the
same card when there is one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from segbench.cell.request import CellRequest
from segbench.device import is_gpu
from segbench.errors import SegbenchError
from segbench.run.executors.base import Job, JobFinished, JobStarted
from segbench.run.interruption import STOP_SIGNALS
from segbench.run.repeats import execute_repeated
from segbench.system.cpus import claim_cores, logical_per_core, release_cores, threads_for_cpus
from segbench.system.env import fingerprint

LOG_TAIL_CHARS = 100_000
# Each worker runs its cells through the same warm template (segbench.run.forkserver) as a local run; these
# settings of the driver's travel with every task.
FORWARDED_ENV = ("SEGBENCH_CACHE_DIR", "SEGBENCH_NO_CACHE", "SEGBENCH_WARM_START")
PROBE_TIMEOUT_S = 120.0  # a node's topology probe: a worker may need to start first
INSTALL_HINT = "--executor ray needs Ray: pip install 'segbench[ray]'"
CONNECT_TIMEOUT_S = 10.0  # a cluster's head answers a TCP connect at once; ray.init alone waits ~14 min in silence


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A `host:port` (or `ray://host:port`) address must accept a TCP connection within timeout_s, else one line.

    `auto` and `local` are Ray's own lookups and pass through.
    """
    host, separator, port = address.removeprefix("ray://").rpartition(":")
    if not separator or not port.isdigit():
        if address in ("auto", "local"):
            return
        raise SegbenchError(f"--address: {address!r} is not host:port (e.g. 10.0.0.5:6379), auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SegbenchError(
            f"--address {address}: no Ray cluster answers there ({exc.strerror or type(exc).__name__} within "
            f"{timeout_s:g} s); check the address, or start one with `ray start --head`"
        ) from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SegbenchError(INSTALL_HINT) from None
    return ray


def _assigned_cpus(ray: Any) -> float:
    return float(ray.get_runtime_context().get_assigned_resources().get("CPU") or 1.0)


def _run_on_worker(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Runs inside a Ray worker: the same isolation as a local run, plus where it ran.

    With no `threads:` in the suite, the cell's threads are sized on this node from the CPUs Ray
    gave the task (one per physical core's worth), never from the driver's machine. Ray reserves
    CPUs as a count and pins nothing, so the cell claims that many distinct physical cores on this
    node (no other cell holds them) and pins its threads there; the record says which, or why not.
    """
    import ray

    cell_request = CellRequest.from_dict(request)
    assigned = _assigned_cpus(ray)
    if cell_request.threads is None:
        cell_request = dataclasses.replace(cell_request, threads=threads_for_cpus(assigned))
    claim = claim_cores(cell_request.threads or 1)
    cell_request = dataclasses.replace(cell_request, cpu_set=claim.cpus)
    try:
        outcome, log = _execute_here(cell_request, timeout_s)
    finally:
        release_cores(claim)
    context = ray.get_runtime_context()
    outcome["node"] = {
        "node_id": context.get_node_id(),
        "hostname": socket.gethostname(),
        "fingerprint": fingerprint(),
        "assigned_cpus": assigned,
        "pinned_cpus": list(claim.cpus) if claim.cpus else None,
        **({"not_pinned": claim.reason} if claim.reason else {}),
    }
    outcome["_log"] = log
    return outcome


def _execute_here(cell_request: Any, timeout_s: float) -> tuple[dict[str, Any], str]:
    from segbench.results.store import utc_now  # lazy: imports pandas

    with tempfile.TemporaryDirectory() as folder:
        log_path = Path(folder) / "cell.log"
        began_at, clock = utc_now(), time.perf_counter()
        outcome = execute_repeated(cell_request, timeout_s, log_path)
        outcome.update(started_at=began_at, wall_s=round(time.perf_counter() - clock, 3))
        log = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log_path.is_file() else ""
    return outcome, log


def _ceiling_on_node(device: str, precisions: list[str], seconds: float, threads: int | None) -> dict[str, Any]:
    """Runs on one node, alone there: that node's matmul ceiling, with the threads a cell on it would use."""
    import ray

    from segbench.hardware.roofline import measure_ceiling_isolated  # lazy: imports torch

    return measure_ceiling_isolated(
        device, precisions, seconds=seconds, threads=threads or threads_for_cpus(_assigned_cpus(ray))
    )


def _logical_per_core_here() -> float:
    return logical_per_core()


def cpus_for_threads(threads: int, nodes: list[tuple[float, float]]) -> float:
    """Logical CPUs to ask Ray for so that a cell's `threads` threads get as many physical cores on whichever
    node runs it.

    `nodes` holds each eligible node's (CPUs, logical CPUs per physical core). A node with 2-way SMT needs 2 ×
    threads; Ray places the task on any node with enough CPUs, so the request is the smallest count R at
    which every node able to hold R gets enough from R (a non-SMT node may then hold more than the cell
    needs, never fewer). When no node has `threads` physical cores, the largest node's CPUs: the cell runs,
    and its record says it was not pinned.
    """
    needs = [(cpus, float(math.ceil(threads * per_core))) for cpus, per_core in nodes]
    for request in sorted({need for _, need in needs} | {cpus + 1 for cpus, _ in needs}):
        hosts = [need for cpus, need in needs if cpus >= request]
        if hosts and all(need <= request for need in hosts):
            return request
    return max((cpus for cpus, _ in needs), default=float(threads))


def _restore(handlers: dict[int, Any]) -> None:
    if threading.current_thread() is threading.main_thread():
        for number, handler in handlers.items():
            if handler is not None:
                signal.signal(number, handler)


class RayExecutor:
    def __init__(self, address: str | None = None, cpus_per_cell: float | None = None, retries_on_node_loss: int = 1):
        self.ray = _import_ray()
        self.address = address
        self.cpus_per_cell = cpus_per_cell
        self.retries_on_node_loss = retries_on_node_loss
        self._per_core: dict[str, float] = {}  # node id -> logical CPUs per physical core, asked once per node

    def _connect(self) -> None:
        if not self.ray.is_initialized():
            if self.address is not None:
                check_reachable(self.address)
            # ray.init installs its own SIGTERM handler (SIGABRT and a crash dump): the run's stop rules, set before,
            # are put back, so a stop during a Ray run is recorded and resumable like a local one.
            handlers = {number: signal.getsignal(number) for number in STOP_SIGNALS}
            try:
                # No address: start a local instance (its lifetime is the driver's).
                self.ray.init(
                    address=self.address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True
                )
            finally:
                _restore(handlers)

    def _alive_nodes_with(self, resource: str | None) -> list[str]:
        return [
            node["NodeID"]
            for node in self.ray.nodes()
            if node.get("Alive") and (resource is None or node["Resources"].get(resource, 0) > 0)
        ]

    def _submit(self, job: Job, avoid_node: str | None = None) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        on_gpu = is_gpu(job.request.device)
        options: dict[str, Any] = {"num_gpus": 1 if on_gpu else 0, "num_cpus": self._cpus_for(job), "max_retries": 0}
        if on_gpu:
            # Inside the task, the GPU Ray assigned is always cuda:0 (Ray sets CUDA_VISIBLE_DEVICES).
            job = dataclasses.replace(job, request=dataclasses.replace(job.request, device="cuda:0"))
        if job.hardware:
            options["resources"] = {job.hardware: 1}
        forwarded = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        if forwarded:  # --cache-dir / --no-cache / warm start reach workers started before this driver set them
            options["runtime_env"] = {"env_vars": forwarded}
        if avoid_node is not None:
            others = [node for node in self._alive_nodes_with(job.hardware) if node != avoid_node]
            if others:
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(others[0], soft=True)
        task = self.ray.remote(_run_on_worker).options(**options)
        return task.remote(job.request.to_dict(), job.timeout_s)

    def _eligible_nodes(self, job: Job) -> list[dict[str, Any]]:
        """Alive nodes that could run the job: with its card, with a GPU for a CUDA cell, with CPUs."""
        on_gpu = is_gpu(job.request.device)
        return [
            node
            for node in self.ray.nodes()
            if node.get("Alive")
            and (job.hardware is None or node["Resources"].get(job.hardware, 0) > 0)
            and (not on_gpu or node["Resources"].get("GPU", 0) > 0)
            and float(node["Resources"].get("CPU", 0)) > 0
        ]

    def _logical_per_core(self, node_ids: list[str]) -> dict[str, float]:
        """Each node's logical CPUs per physical core, asked once of the node itself (Ray's node table has no
        topology); a node that does not answer counts as without SMT."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        unknown = [node_id for node_id in node_ids if node_id not in self._per_core]
        if not unknown:
            return {node_id: self._per_core[node_id] for node_id in node_ids}
        probe = self.ray.remote(_logical_per_core_here)
        asked = {
            node_id: probe.options(
                num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
            ).remote()
            for node_id in unknown
        }
        for node_id, reference in asked.items():
            try:
                self._per_core[node_id] = float(self.ray.get(reference, timeout=PROBE_TIMEOUT_S))
            except (self.ray.exceptions.RayError, TimeoutError):
                self._per_core[node_id] = 1.0
        return {node_id: self._per_core[node_id] for node_id in node_ids}

    def _cpus_for(self, job: Job) -> float:
        """Explicit, or N threads' worth of physical cores, or else the smallest eligible node's CPUs.

        Ray counts logical CPUs, so a cell with `threads: N` asks for N × the node's logical CPUs per
        physical core (see cpus_for_threads). Without `threads:` the request must fit every node that
        could run the cell (a driver-sized request is infeasible on a smaller worker); the worker then
        uses one thread per physical core of what it was given, so cells placed side by side on a bigger
        node never share a core.
        """
        if self.cpus_per_cell is not None:
            return self.cpus_per_cell
        nodes = self._eligible_nodes(job)
        if job.request.threads:
            per_core = self._logical_per_core([node["NodeID"] for node in nodes])
            sizes = [(float(node["Resources"]["CPU"]), per_core[node["NodeID"]]) for node in nodes]
            return cpus_for_threads(job.request.threads, sizes)
        sizes = [float(node["Resources"]["CPU"]) for node in nodes]
        return min(sizes) if sizes else 1.0

    def measure_ceilings(
        self, device: str, precisions: list[str], seconds: float, threads: int | None
    ) -> dict[str, Any]:
        """Each alive node's measured ceiling, keyed by node id: one task per node holding all of its CPUs (and a
        GPU)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._connect()
        on_gpu = is_gpu(device)
        tasks = {}
        for node in self.ray.nodes():
            resources = node.get("Resources") or {}
            if not node.get("Alive") or (on_gpu and not resources.get("GPU")):
                continue
            options = {
                "num_cpus": float(resources.get("CPU", 1) or 1),
                "num_gpus": 1 if on_gpu else 0,
                "max_retries": 0,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            }
            task = self.ray.remote(_ceiling_on_node).options(**options)
            tasks[node["NodeID"]] = task.remote("cuda:0" if on_gpu else device, precisions, seconds, threads)
        ceilings = {}
        for node_id, reference in tasks.items():
            try:
                ceilings[node_id] = self.ray.get(reference)
            except self.ray.exceptions.RayError as error:
                ceilings[node_id] = {"error": f"ray: {type(error).__name__}"}
        return ceilings

    def _node_of(self, error: Exception) -> str | None:
        return getattr(error, "node_id", None)

    def run(self, jobs: list[Job], started: JobStarted, finished: JobFinished) -> None:
        self._connect()
        pending: dict[Any, tuple[Job, int]] = {}
        for job in jobs:
            started(job)
            pending[self._submit(job)] = (job, 0)
        lost = (
            self.ray.exceptions.WorkerCrashedError,
            self.ray.exceptions.NodeDiedError,
            self.ray.exceptions.ActorDiedError,
            self.ray.exceptions.LocalRayletDiedError,
        )
        while pending:
            [ready], _ = self.ray.wait(list(pending), num_returns=1)
            job, attempt = pending.pop(ready)
            try:
                outcome = self.ray.get(ready)
            except lost as error:
                finished(
                    job,
                    {
                        "status": "error",
                        "error": f"node lost ({type(error).__name__}); "
                        + ("retrying on another node" if attempt < self.retries_on_node_loss else "no retries left"),
                        "attempt": attempt + 1,
                    },
                )
                if attempt < self.retries_on_node_loss:
                    pending[self._submit(job, avoid_node=self._node_of(error))] = (job, attempt + 1)
                continue
            except self.ray.exceptions.RayError as error:
                finished(
                    job,
                    {
                        "status": "error",
                        "error": (
                            f"ray: {type(error).__name__}: "
                            f"{str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
                        ),
                        "attempt": attempt + 1,
                    },
                )
                continue
            job.log_path.write_text(outcome.pop("_log", ""))
            finished(job, {**outcome, "attempt": attempt + 1})
