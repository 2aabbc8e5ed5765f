"""Runs a suite: expands the matrix, hands cells to an executor, appends each record as it ends.

The run folder is created first (suite copy + meta.json), so a run killed at any moment loses at
most the cells in flight, and `--resume` continues it on any executor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from segbench import results
from segbench.cell import CellRequest
from segbench.env import fingerprint, resolve_device
from segbench.errors import SegbenchError
from segbench.executors import Executor, Job, get_executor
from segbench.matrix import CellSpec, expand
from segbench.models.registry import get_card
from segbench.suite import Suite

LOG_DIR = "logs"


class RunObserver(Protocol):
    def run_started(self, run_dir: Path, cells: list[CellSpec], skipped: int) -> None: ...
    def cell_started(self, cell: CellSpec, index: int) -> None: ...
    def cell_finished(self, cell: CellSpec, record: dict[str, Any]) -> None: ...


class SilentObserver:
    def run_started(self, run_dir: Path, cells: list[CellSpec], skipped: int) -> None: ...
    def cell_started(self, cell: CellSpec, index: int) -> None: ...
    def cell_finished(self, cell: CellSpec, record: dict[str, Any]) -> None: ...


@dataclass
class RunResult:
    run_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def _base_record(cell: CellSpec, device: str) -> dict[str, Any]:
    card = get_card(cell.model)
    return {
        "cell_id": cell.cell_id,
        "status": None,
        "model": cell.model,
        "family": card.family,
        "source": card.source,
        "resolution": list(cell.resolution),
        "batch_size": cell.batch_size,
        "precision": cell.precision,
        "backend": cell.backend,
        "scenario": cell.scenario,
        "device": device,
        "weights": cell.weights,
        "options": cell.options,
        "latency_ms": None,
        "fps": None,
        "memory_mb": None,
        "error": None,
    }


def _check_resume(run_dir: Path, suite: Suite, device: str) -> None:
    meta = results.read_meta(run_dir)
    if meta.get("suite") != suite.name:
        raise SegbenchError(f"--resume {run_dir}: that run is of suite '{meta.get('suite')}', not '{suite.name}'; resume with the same suite")
    if meta.get("device") != device:
        raise SegbenchError(f"--resume {run_dir}: that run measured on '{meta.get('device')}', not '{device}'; pass --device {meta.get('device')}")


def _ceiling(suite: Suite, device: str) -> dict[str, Any] | None:
    """The device's measured matmul and copy rates, once per run, in its own process (no CUDA context here)."""
    if not suite.roofline.measure_ceiling:
        return None
    from segbench.hardware.roofline import measure_ceiling_isolated

    return measure_ceiling_isolated(device, list(suite.precisions), seconds=suite.roofline.ceiling_seconds, threads=suite.threads)


def ran_on(record: dict[str, Any], meta: dict[str, Any]) -> str:
    """The name of the device a cell ran on, from the fingerprint of its node (Ray) or of the run."""
    fingerprint = (record.get("node") or {}).get("fingerprint") or meta.get("fingerprint") or {}
    device = str(record.get("device") or meta.get("device") or "cpu")
    if not device.startswith("cuda"):
        return str((fingerprint.get("cpu") or {}).get("model") or "a CPU")
    index = int(device.split(":")[1]) if ":" in device else 0
    gpus = [gpu for gpu in fingerprint.get("gpus") or [] if gpu.get("index") == index]
    return str(gpus[0]["name"]) if gpus else device


def peak_profile(record: dict[str, Any], meta: dict[str, Any]) -> tuple[Any, str]:
    """(profile of the card the cell ran on, its name) or (None, why there is no peak to compare with).

    Never the emulated target: a cell run on an H100 with `hardware: rtx3060` is compared with the H100's peak.
    """
    from segbench.hardware import profile_for_device

    name = ran_on(record, meta)
    if not str(record.get("device") or meta.get("device") or "cpu").startswith("cuda"):
        return None, f"ran on {name}: a CPU has no published peak here; see percent_of_ceiling"
    profile = profile_for_device(name)
    if profile is None:
        return None, f"ran on {name}, which has no hardware profile: its peak is unknown"
    return profile, name


def ceiling_for(record: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any] | None:
    """The ceiling measured where the cell ran: its node's on a cluster (never the driver's), else the run's."""
    node = record.get("node")
    if not node:
        return meta.get("ceiling")
    return (meta.get("node_ceilings") or {}).get(str(node.get("node_id")))


def _node_ceilings(suite: Suite, executor: Any, device: str, run_dir: Path, meta: dict[str, Any]) -> None:
    """On a cluster, each node's own ceiling, measured before any cell with the node to itself."""
    if not suite.roofline.measure_ceiling or not hasattr(executor, "measure_ceilings") or meta.get("node_ceilings"):
        return
    meta["node_ceilings"] = executor.measure_ceilings(device, list(suite.precisions), suite.roofline.ceiling_seconds, suite.threads)
    results.write_json(run_dir / results.META_FILE, meta)


def _derived_fields(record: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Figures computed from a finished cell and the run: roofline, and a throttle flag."""
    from segbench.hardware.roofline import roofline

    if record.get("status") != "ok":
        return {}
    gflops, fps = record.get("gflops"), record.get("fps")
    flops_per_image = gflops * 1e9 if gflops else None
    telemetry = record.get("telemetry") or {}
    profile, name_or_reason = peak_profile(record, meta)
    return {
        "roofline": roofline(flops_per_image, fps, record["precision"], profile, ceiling_for(record, meta), no_profile_reason=name_or_reason),
        "throttled": telemetry.get("throttled"),
    }


def _start_run(suite: Suite, suite_path: Path | None, out_dir: Path, device: str, resume: Path | None, suite_text: str | None = None) -> tuple[Path, dict[str, Any]]:
    if resume is not None:
        _check_resume(resume, suite, device)
        results.drop_torn_tail(resume)
        meta = results.read_meta(resume)
        meta.setdefault("resumed_at", []).append(results.utc_now())
        meta.update(status="running", end_time=None)
        results.write_json(resume / results.META_FILE, meta)
        return resume, meta
    run_dir = results.new_run_dir(out_dir, suite.name)
    if suite_text is not None or suite_path is None:  # built on the command line or overridden: keep what ran
        (run_dir / results.SUITE_FILE).write_text(suite_text or "", encoding="utf-8")
    else:
        results.copy_suite(suite_path, run_dir)
    meta = {
        "schema_version": results.SCHEMA_VERSION,
        "suite": suite.name,
        "description": suite.description,
        "suite_file": str(suite_path) if suite_path else None,  # None: built from command-line flags
        "device": device,
        "hardware_target": suite.hardware,
        "start_time": results.utc_now(),
        "end_time": None,
        "status": "running",
        "fingerprint": fingerprint(),
        "ceiling": _ceiling(suite, device),
    }
    results.write_json(run_dir / results.META_FILE, meta)
    return run_dir, meta


def _hardware_targets(suite: Suite, executor_name: str) -> list[str | None]:
    """The cards each cell runs on: one pass on this machine, or one per card listed for a Ray cluster."""
    cards = suite.hardware_targets
    if len(cards) > 1 and executor_name != "ray":
        raise SegbenchError(f"hardware: {len(cards)} cards listed ({', '.join(cards)}); several cards need --executor ray (one machine has one kind of card)")
    return list(cards) if executor_name == "ray" and cards else [None]


def _jobs(suite: Suite, suite_path: Path | None, cells: list[CellSpec], device: str, run_dir: Path, cards: list[str | None]) -> list[Job]:
    stream = suite.stream if suite.scenario == "stream" else None
    suite_dir = str(suite_path.resolve().parent if suite_path else Path.cwd())
    # One local card target is a budget to emulate; on Ray the cell runs on the real card instead.
    budget_profile = suite.hardware_targets[0] if cards == [None] and suite.hardware_targets else None
    cooldown = suite.cooldown
    timeout_s = suite.timing.timeout_s + ((cooldown.fixed_s or 0) + cooldown.timeout_s if cooldown else 0)
    jobs = []
    for cell in cells:
        request = CellRequest(
            cell, device, suite.timing, suite.memory.poll_interval_ms, suite.threads, tuple(suite.plugins), suite_dir, stream, budget_profile, cooldown,
            dataset=suite.dataset, calibration=suite.calibration,
        )
        for card in cards:
            suffix = f"@{card}" if card else ""
            jobs.append(Job(request, timeout_s, run_dir / LOG_DIR / f"{cell.cell_id}{suffix}.log", card))
    return jobs


def run_suite(
    suite: Suite,
    suite_path: Path | None,
    out_dir: Path = Path("results"),
    device_override: str | None = None,
    resume: Path | None = None,
    retry_failed: bool = False,
    observer: RunObserver | None = None,
    executor: Executor | None = None,
    executor_name: str | None = None,
    suite_text: str | None = None,
) -> RunResult:
    """Expand the suite and run every cell not yet finished, each isolated; returns the run folder and its records.

    `suite_text` is the YAML the run folder keeps instead of a copy of `suite_path` (a suite built from
    command-line flags, where `suite_path` is None, or one with `-s` overrides applied).
    """
    observer = observer or SilentObserver()
    executor_name = executor_name or suite.executor
    try:
        device = resolve_device(device_override or suite.device)
    except SegbenchError as exc:
        field_name = "--device" if device_override else "device"
        raise SegbenchError(f"{suite_path or 'command line'}: {field_name}: {exc}") from None
    cards = _hardware_targets(suite, executor_name)
    executor = executor or get_executor(executor_name, cpus_per_cell=suite.ray.cpus_per_cell)
    run_dir, meta = _start_run(suite, suite_path, out_dir, device, resume, suite_text)
    (run_dir / LOG_DIR).mkdir(exist_ok=True)
    _node_ceilings(suite, executor, device, run_dir, meta)
    done = results.finished_cell_ids(run_dir, retry_failed) if resume else set()
    jobs = [job for job in _jobs(suite, suite_path, expand(suite), device, run_dir, cards) if job.key not in done]
    outcome = RunResult(run_dir=run_dir, skipped=len(expand(suite)) * len(cards) - len(jobs))
    observer.run_started(run_dir, [job.request.cell for job in jobs], outcome.skipped)
    started = time.perf_counter()
    positions = {id(job): index for index, job in enumerate(jobs)}

    def job_started(job: Job) -> None:
        observer.cell_started(job.request.cell, positions[id(job)])

    def job_finished(job: Job, cell_outcome: dict[str, Any]) -> None:
        record = _base_record(job.request.cell, device) | cell_outcome
        if job.hardware is not None:
            record.update(hardware=job.hardware, cell_key=job.key)
        record.update(_derived_fields(record, meta))
        results.append_record(run_dir, record)
        outcome.records.append(record)
        observer.cell_finished(job.request.cell, record)

    executor.run(jobs, job_started, job_finished)
    from segbench.report.tables import add_accuracy_deltas

    add_accuracy_deltas(outcome.records)  # for the run summary's expectations; reports recompute it from the file
    meta.update(status="complete", end_time=results.utc_now(), executor=executor_name, duration_s=meta.get("duration_s", 0) + round(time.perf_counter() - started, 3))
    results.write_json(run_dir / results.META_FILE, meta)
    return outcome
