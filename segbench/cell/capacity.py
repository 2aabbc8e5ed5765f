"""The capacity scenario: how many cameras at F FPS does one deployment of the cell's model serve, confirmed?

N cameras, each a frame source on its own clock at `camera_fps`, their phases spread evenly over the frame interval
(MLPerf loadgen's multi-stream idea, with optional jitter or Poisson gaps as its server scenario), feed one
deployment under a serving policy:

- `replicas`: k workers, each with its own copy of the model, taking one frame at a time from the shared queue
  (Triton's instance groups). They are threads of the cell's process: torch's intra-op thread count is
  process-wide, so it is set to cores // k while they serve and k concurrent replicas share the cores.
- `batched`: one model behind a dynamic batcher: a batch closes at `max_batch` frames or `max_batch_delay_ms` after
  its first frame was taken, whichever comes first (Triton's dynamic batcher).
- `streams` (k CUDA streams) is not built yet: `unsupported`, with the reason.

As in the stream scenario (cell/stream.py), a frame's latency runs from its *scheduled* arrival to its class map,
and a frame is dropped by the schedule, not by the queue: one not taken before its camera's next frame is due
(`queue_size` frames later) is counted dropped however early it was put on the queue. A trial keeps up when no
frame is dropped and the percentile of latency is within the bound. The search brackets N by doubling from the
offline estimate, bisects, confirms the largest passing N with k consecutive trials (a failed confirmation makes
it the failing N and steps down one camera), and keeps the trial at N + 1 that failed, saying whether drops or
latency failed it. Each trial's row is also written to the cell's log as it ends, so a stopped run keeps them.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import threading
import time
from collections import Counter, deque
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import psutil
import torch

from segbench.cell.stream import Criterion, _summary
from segbench.measure import memory
from segbench.measure.timing import synchronize
from segbench.models.base import SegmentationAdapter
from segbench.suite.schema import CapacityConfig
from segbench.system.cpus import torch_threads

MB = 1024 * 1024
FRAME_POOL = 8  # distinct frames the cameras cycle through (the producer never renders a frame inside the clock)
LOG_PREFIX = "segbench capacity trial: "  # one JSON row per line in the cell's log


@dataclass(frozen=True)
class Arrival:
    camera: int
    due: float  # the camera's schedule: when the frame exists (perf_counter seconds)
    deadline: float  # when the camera's frame `queue_size` frames later is due: taken after it, this one is dropped
    issued: float  # when the producer actually put it on the queue
    frame: torch.Tensor


def arrival_plan(cameras: int, config: CapacityConfig, frames: int) -> list[tuple[float, float, int]]:
    """(due, deadline, camera) offsets in seconds from the trial's start, in due order, `frames` in all.

    Camera c's phase is c / N of the frame interval, so uniform arrivals are evenly spaced; `jitter` moves each frame
    by up to ± jitter_ms (less than half an interval, so a camera's frames keep their order), `poisson` draws each
    camera's gaps from an exponential with the frame interval as mean. Seeded by `seed` and N: repeatable.
    """
    interval = 1.0 / config.camera_fps
    per_camera = math.ceil(frames / cameras)
    count = per_camera + config.queue_size
    rng = np.random.default_rng([config.seed, cameras])
    rows: list[tuple[float, float, int]] = []
    for camera in range(cameras):
        phase = camera * interval / cameras
        if config.arrival == "poisson":
            times = phase + np.concatenate([[0.0], np.cumsum(rng.exponential(interval, count - 1))])
        else:
            times = phase + np.arange(count) * interval
            if config.arrival == "jitter":
                spread = min(config.jitter_ms / 1000.0, 0.49 * interval)
                times = np.maximum(times + rng.uniform(-spread, spread, count), 0.0)
        rows.extend((float(times[i]), float(times[i + config.queue_size]), camera) for i in range(per_camera))
    rows.sort()
    return rows[:frames] if len(rows) > frames else rows


def dropped_by_schedule(arrival: Arrival, taken: float) -> bool:
    """A frame taken after its camera's next frame (queue_size frames on) was due never made it: dropped, whenever
    it was put on the queue."""
    return taken > arrival.deadline


@dataclass
class CapacityOutcome:
    """One trial: N cameras at camera_fps against one deployment."""

    cameras: int
    camera_fps: float
    planned: int = 0
    offered: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # scheduled arrival → class map
    issue_delays_ms: list[float] = field(default_factory=list)  # scheduled → put on the queue
    queue_waits_ms: list[float] = field(default_factory=list)  # put → taken
    service_ms: list[float] = field(default_factory=list)  # taken → class map (the batch's whole call)
    batch_sizes: list[int] = field(default_factory=list)
    queue_depths: list[int] = field(default_factory=list)
    per_camera: Counter = field(default_factory=Counter)
    started: float = 0.0
    last_done: float = 0.0
    wall_s: float = 0.0
    stopped_early: str | None = None
    memory_peak_mb: float | None = None
    memory_source: str | None = None
    cpu_util_pct: float | None = None

    @property
    def processed(self) -> int:
        return len(self.latencies_ms)

    @property
    def per_camera_fps(self) -> float:
        span = self.last_done - self.started
        return self.processed / self.cameras / span if span > 0 else 0.0

    @property
    def drop_pct(self) -> float:
        return 100.0 * self.dropped / self.offered if self.offered else 0.0

    def quantile_ms(self, quantile: float) -> float | None:
        return float(np.percentile(self.latencies_ms, 100 * quantile)) if self.latencies_ms else None

    def verdict(self, criterion: Criterion) -> tuple[bool, str | None, str | None]:
        """(keeps up, what failed it: 'drops' or 'latency', why in words)."""
        name = f"p{100 * criterion.quantile:g}"
        bound = criterion.bound_ms(self.camera_fps)
        if self.dropped:
            return False, "drops", f"{self.dropped} of {self.offered} frames dropped ({self.drop_pct:.1f} %)"
        value = self.quantile_ms(criterion.quantile)
        if value is None:
            return False, "latency", "no frame was processed"
        if value > bound:
            return False, "latency", f"{name} {value:.1f} ms > bound {bound:.1f} ms"
        if self.processed < criterion.min_frames:
            return False, "latency", f"{self.processed} frames < the {criterion.min_frames} a {name} needs"
        return True, None, None


class Dispatch:
    """The shared queue between the cameras and the workers; drops are judged by the schedule when a frame is taken."""

    def __init__(self, outcome: CapacityOutcome, failed: threading.Event):
        self.pending: deque[Arrival] = deque()
        self.cond = threading.Condition()
        self.closed = False
        self.outcome = outcome
        self.failed = failed

    def put(self, arrival: Arrival) -> None:
        with self.cond:
            self.outcome.offered += 1
            self.outcome.queue_depths.append(len(self.pending))
            self.pending.append(arrival)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def take(self, limit: int, delay_s: float) -> list[tuple[Arrival, float]] | None:
        """Up to `limit` frames: the first as soon as there is one, more until `delay_s` after it was queued (a frame
        that already waited that long goes at once); None once closed and empty."""
        batch: list[tuple[Arrival, float]] = []
        close_at = math.inf
        with self.cond:
            while len(batch) < limit:
                if self.pending:
                    arrival, taken = self.pending.popleft(), time.perf_counter()
                    if dropped_by_schedule(arrival, taken):
                        self.outcome.dropped += 1
                        self.failed.set()  # zero drops is the criterion: the trial has failed
                        continue
                    batch.append((arrival, taken))
                    close_at = min(close_at, arrival.issued + delay_s)  # Triton: the delay counts from its queueing
                    continue
                if self.closed:
                    break
                if not batch:
                    self.cond.wait()
                    continue
                remaining = close_at - time.perf_counter()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
        return batch or None


@dataclass
class Worker:
    adapter: SegmentationAdapter
    forward: Callable[[torch.Tensor], Any]


@dataclass
class Deployment:
    """One serving policy, built: its workers, how many frames a worker takes at once, and its knobs."""

    policy: str
    workers: list[Worker]
    limit: int
    delay_s: float
    threads: int
    knobs: dict[str, Any]
    parallel: int  # workers serving at once, for the offline estimate


def _serve_frames(worker: Worker, batch: list[tuple[Arrival, float]], device: torch.device) -> float:
    frames = torch.stack([arrival.frame for arrival, _ in batch])
    inputs = worker.adapter.preprocess(frames)
    worker.adapter.postprocess(worker.forward(inputs), tuple(frames.shape[1:3]))
    synchronize(device)
    return time.perf_counter()


def _worker_loop(
    worker: Worker,
    deployment: Deployment,
    dispatch: Dispatch,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
    record: Callable[[list[tuple[Arrival, float]], float], None],
    errors: list[BaseException],
) -> None:
    try:
        with torch.inference_mode(), autocast():  # both are thread-local: each worker enters its own
            while (batch := dispatch.take(deployment.limit, deployment.delay_s)) is not None:
                record(batch, _serve_frames(worker, batch, device))
    except BaseException as exc:  # noqa: BLE001 (the trial re-raises it in the cell's thread)
        errors.append(exc)
        dispatch.failed.set()
        dispatch.close()


def _memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        memory.reset_rss_high_water()


def _memory_peak(device: torch.device) -> tuple[float | None, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / MB, "torch reserved peak (all replicas, one process)"
    return memory.rss_high_water_mb(), "VmHWM of the cell's process (all replicas), reset at the trial's start"


def run_trial(
    deployment: Deployment,
    cameras: int,
    config: CapacityConfig,
    criterion: Criterion,
    pool: list[torch.Tensor],
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> CapacityOutcome:
    """N cameras on their clocks against the deployment, until the trial's frames are offered or it has failed (a
    drop, or enough frames over the bound that the percentile is over)."""
    frames = criterion.frames_for(cameras * config.camera_fps)
    plan = arrival_plan(cameras, config, frames)
    outcome = CapacityOutcome(cameras, config.camera_fps, planned=len(plan))
    failed, lock, errors = threading.Event(), threading.Lock(), []
    dispatch = Dispatch(outcome, failed)
    bound_s = criterion.bound_ms(config.camera_fps) / 1000.0
    late_limit = criterion.late_frames_that_fail(len(plan))
    late = 0

    def record(batch: list[tuple[Arrival, float]], done: float) -> None:
        nonlocal late
        with lock:
            outcome.batch_sizes.append(len(batch))
            for arrival, taken in batch:
                outcome.latencies_ms.append((done - arrival.due) * 1000.0)
                outcome.issue_delays_ms.append((arrival.issued - arrival.due) * 1000.0)
                outcome.queue_waits_ms.append((taken - arrival.issued) * 1000.0)
                outcome.service_ms.append((done - taken) * 1000.0)
                outcome.per_camera[arrival.camera] += 1
                late += done - arrival.due > bound_s
            outcome.last_done = max(outcome.last_done, done)
            if late >= late_limit:
                failed.set()

    with torch_threads(deployment.threads):  # torch's count is process-wide: set for every worker
        _memory_reset(device)
        process = psutil.Process()
        cpu_before = sum(process.cpu_times()[:2])
        threads = [
            threading.Thread(
                target=_worker_loop, args=(w, deployment, dispatch, device, autocast, record, errors), daemon=True
            )
            for w in deployment.workers
        ]
        for thread in threads:
            thread.start()
        start = time.perf_counter() + 0.005
        outcome.started = start
        try:
            for index, (due, deadline, camera) in enumerate(plan):
                if failed.is_set():
                    outcome.stopped_early = "the trial had failed (a frame dropped, or the percentile over the bound)"
                    break
                delay = start + due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                dispatch.put(
                    Arrival(camera, start + due, start + deadline, time.perf_counter(), pool[index % len(pool)])
                )
        finally:
            dispatch.close()
            for thread in threads:
                thread.join()
    outcome.wall_s = time.perf_counter() - start
    outcome.memory_peak_mb, outcome.memory_source = _memory_peak(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    outcome.cpu_util_pct = 100.0 * (sum(process.cpu_times()[:2]) - cpu_before) / (outcome.wall_s * cores)
    if errors:
        raise errors[0]
    return outcome


def trial_row(phase: str, outcome: CapacityOutcome, criterion: Criterion) -> dict[str, Any]:
    """One trial as the record keeps it."""
    passed, failed_on, why = outcome.verdict(criterion)
    latencies = np.asarray(outcome.latencies_ms or [math.nan])
    p50, p95, p99 = (float(v) if outcome.latencies_ms else None for v in np.percentile(latencies, [50, 95, 99]))
    sizes = Counter(outcome.batch_sizes)
    return {
        "phase": phase,
        "cameras": outcome.cameras,
        "camera_fps": outcome.camera_fps,
        "frames_planned": outcome.planned,
        "frames_offered": outcome.offered,
        "n": outcome.processed,
        "frames_dropped": outcome.dropped,
        "drop_pct": outcome.drop_pct,
        "per_camera_fps": outcome.per_camera_fps,
        "latency_bound_ms": criterion.bound_ms(outcome.camera_fps),
        "latency_quantile_ms": outcome.quantile_ms(criterion.quantile),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "issue_delay_ms": _summary(outcome.issue_delays_ms),
        "queue_wait_ms": _summary(outcome.queue_waits_ms),
        "service_ms": _summary(outcome.service_ms),
        "queue_depth_max": max(outcome.queue_depths, default=0),
        "queue_depth_mean": float(np.mean(outcome.queue_depths)) if outcome.queue_depths else 0.0,
        "batch_sizes": {str(size): count for size, count in sorted(sizes.items())},
        "batch_mean": float(np.mean(outcome.batch_sizes)) if outcome.batch_sizes else None,
        "memory_peak_mb": outcome.memory_peak_mb,
        "memory_source": outcome.memory_source,
        "cpu_util_pct": outcome.cpu_util_pct,
        "wall_s": outcome.wall_s,
        "stopped_early": outcome.stopped_early,
        "passed": passed,
        "failed_on": failed_on,
        "fail_reason": why,
    }


def _log_row(policy: str, row: dict[str, Any]) -> None:
    """The row in the cell's log (its stderr) as soon as the trial ends: a stopped run keeps the trials done."""
    keep = ("phase", "cameras", "passed", "failed_on", "drop_pct", "p99_ms", "per_camera_fps", "batch_mean")
    print(LOG_PREFIX + json.dumps({"policy": policy, **{key: row[key] for key in keep}}), file=sys.stderr, flush=True)


# ---- the search --------------------------------------------------------------------------------------------


def find_max_cameras(
    trial: Callable[[int], CapacityOutcome],
    criterion: Criterion,
    camera_fps: float,
    estimate: int,
    max_cameras: int,
    budget_s: float,
    on_row: Callable[[dict[str, Any]], None] = lambda row: None,
) -> dict[str, Any]:
    """Largest N in [1, max_cameras] whose trial keeps up, confirmed by k consecutive passing trials, with the trial
    at N + 1 that failed. Doubling from `estimate` until a trial fails (or the cap), then bisection; a failed
    confirmation makes that N the failing one and the next lower N is confirmed instead."""
    rows: list[dict[str, Any]] = []
    spent = 0.0
    k = criterion.confirmations

    def seconds(cameras: int) -> float:
        return criterion.seconds_for(cameras * camera_fps)

    def run(phase: str, cameras: int) -> bool:
        nonlocal spent
        outcome = trial(cameras)
        spent += outcome.wall_s
        row = trial_row(phase, outcome, criterion)
        rows.append(row)
        on_row(row)
        return bool(row["passed"])

    low, high, why = 0, max_cameras + 1, None  # low: largest N that passed; high: smallest N that failed
    probe = min(max(1, estimate), max_cameras)
    while high - low > 1:
        if spent + seconds(probe) * (1 + k) > budget_s:
            why = f"the search budget ({budget_s:g} s) ran out before N was bracketed ({low} passed, {high} failed)"
            break
        if run("search", probe):
            low = probe
            probe = min(probe * 2, max_cameras) if high > max_cameras else (low + high) // 2
        else:
            high = probe
            probe = (low + high) // 2
    streak = 0
    while low > 0 and streak < k and why is None:
        if spent + seconds(low) * (k - streak) > budget_s:
            why = f"the search budget ({budget_s:g} s) ran out before {k} consecutive passing trials at N = {low}"
            break
        if run("confirm", low):
            streak += 1
        else:
            high, low, streak = low, low - 1, 0
    confirmed = low > 0 and streak >= k
    if low == 0 and why is None:
        one = [row for row in rows if row["cameras"] == 1]
        why = (
            f"no N was confirmed: one camera passed {sum(row['passed'] for row in one)} of {len(one)} trials, the "
            f"last failing on {one[-1]['failed_on']} ({one[-1]['fail_reason']})"
            if any(row["passed"] for row in one)
            else f"no N kept up, not even one camera ({one[-1]['fail_reason'] if one else 'no trial ran'})"
        )
    failing = next((row for row in reversed(rows) if row["cameras"] == high and not row["passed"]), None)
    if confirmed and failing is not None:
        how = (
            f"{k} consecutive trials at N = {low} kept up; N = {high} failed on {failing['failed_on']}: "
            f"{failing['fail_reason']}"
        )
    elif confirmed:
        how = f"{k} consecutive trials at N = {low} kept up; the cap max_cameras = {max_cameras} was reached"
    else:
        how = why
    return {
        "max_cameras": low if confirmed else None,
        "max_cameras_why": None if confirmed else why,
        "confirmed": confirmed,
        "confirmed_trials": streak,
        "how": how,
        "capped": confirmed and high > max_cameras,
        "failing_cameras": failing["cameras"] if failing else None,
        "failed_on": failing["failed_on"] if failing else None,
        "failing_reason": failing["fail_reason"] if failing else None,
        "trials": rows,
        "search_s": spent,
    }


# ---- building a policy's deployment -----------------------------------------------------------------------


class PolicyUnavailable(Exception):
    """A policy this cell cannot run: `status` says how (unsupported, budget), the message why."""

    def __init__(self, status: str, why: str):
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class MemoryFit:
    """What one model instance costs and what the emulated card holds, for the replicas' budget check."""

    footprint_mb: float | None  # one instance in use: the memory pass's peak minus the cell's baseline
    budget_mb: float | None  # the emulated card's total
    context_mb: float  # what the card holds before any model (its CUDA context)
    target: str | None

    def projected_mb(self, instances: int) -> float | None:
        return None if self.footprint_mb is None else self.context_mb + instances * self.footprint_mb

    def check(self, instances: int) -> None:
        """Raise PolicyUnavailable('budget') naming the first of `instances` instances that would not fit the emulated
        card: before any copy is made, so a deployment that cannot fit costs no memory here."""
        if self.budget_mb is None or self.footprint_mb is None:
            return
        first = next((i for i in range(1, instances + 1) if (self.projected_mb(i) or 0) > self.budget_mb), None)
        if first is None:
            return
        instances, projected = first, self.projected_mb(first) or 0.0
        raise PolicyUnavailable(
            "budget",
            f"replica {instances} does not fit {self.target}'s {self.budget_mb:.0f} MiB: {self.context_mb:.0f} MiB "
            f"context + {instances} x {self.footprint_mb:.0f} MiB per model instance = {projected:.0f} MiB",
        )

    def to_dict(self, instances: int) -> dict[str, Any]:
        return {
            "per_instance_mb": self.footprint_mb,
            "instances": instances,
            "projected_peak_mb": self.projected_mb(instances),
            "budget_mb": self.budget_mb,
            "context_mb": self.context_mb,
            "target": self.target,
            "basis": "context + instances x (the memory pass's peak - the cell's baseline): every replica counts",
        }


def _replicas(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    prepare: Callable[[SegmentationAdapter], Callable[[torch.Tensor], Any]],
    count: int,
    fit: MemoryFit,
) -> tuple[list[Worker], list[float]]:
    """The cell's model and count - 1 copies, each prepared by the backend; the memory each copy added."""
    fit.check(count)
    workers, added = [Worker(adapter, forward)], []
    for index in range(2, count + 1):
        before = _resident_mb(adapter)
        try:
            replica = copy.deepcopy(adapter)
            workers.append(Worker(replica, prepare(replica)))
        except Exception as exc:
            if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower():
                raise PolicyUnavailable("budget", f"replica {index} ran out of memory: {exc}") from None
            raise PolicyUnavailable(
                "unsupported", f"the model could not be copied for replica {index}: {type(exc).__name__}: {exc}"
            ) from None
        added.append(_resident_mb(adapter) - before)
    return workers, added


def _resident_mb(adapter: SegmentationAdapter) -> float:
    device = getattr(adapter, "device", None)
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.cuda.memory_allocated(device) / MB
    return psutil.Process().memory_info().rss / MB


def build_deployment(
    policy: str,
    config: CapacityConfig,
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    prepare: Callable[[SegmentationAdapter], Callable[[torch.Tensor], Any]],
    device: torch.device,
    threads: int,
    fit: MemoryFit,
) -> tuple[Deployment, dict[str, Any]]:
    """The policy's workers and knobs, and its memory figures; PolicyUnavailable when it cannot run here."""
    if policy == "streams":
        if device.type != "cuda":
            raise PolicyUnavailable("unsupported", "the streams policy runs k CUDA streams: it needs a CUDA device")
        raise PolicyUnavailable("unsupported", "the streams policy is not built yet (replicas and batched are)")
    if policy == "replicas":
        workers, added = _replicas(adapter, forward, prepare, config.replicas, fit)
        per = max(1, threads // config.replicas)
        knobs = {
            "replicas": config.replicas,
            "threads_per_replica": per,
            "workers": "threads of the cell's process, each with its own model instance; torch's intra-op thread "
            "count is process-wide, set to cores // replicas while they serve",
        }
        memory_info = {**fit.to_dict(config.replicas), "copies_added_mb": added}
        return Deployment(policy, workers, 1, 0.0, per, knobs, config.replicas), memory_info
    fit.check(1)
    knobs = {"max_batch": config.max_batch, "max_batch_delay_ms": config.max_batch_delay_ms, "threads": threads}
    return (
        Deployment(policy, [Worker(adapter, forward)], config.max_batch, config.max_batch_delay_ms / 1000.0, threads,
                   knobs, 1),
        fit.to_dict(1),
    )  # fmt: skip


def warm_deployment(
    deployment: Deployment,
    pool: list[torch.Tensor],
    device: torch.device,
    seconds: float,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> dict[str, Any]:
    """Every worker through its path (batch 1 and the largest batch) for `seconds`, at least once each; a batch the
    backend cannot take makes the policy unsupported."""
    calls, started = 0, time.perf_counter()
    with torch_threads(deployment.threads), torch.inference_mode(), autocast():
        while calls == 0 or time.perf_counter() - started < seconds:
            for worker in deployment.workers:
                for size in sorted({1, deployment.limit}):
                    frames = [(Arrival(0, 0.0, math.inf, 0.0, pool[i % len(pool)]), 0.0) for i in range(size)]
                    try:
                        _serve_frames(worker, frames, device)
                    except Exception as exc:
                        if size == 1:
                            raise
                        raise PolicyUnavailable(
                            "unsupported",
                            f"the forward cannot take a batch of {size} (prepared for batch 1?): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                        ) from None
                    calls += 1
    return {"seconds": round(time.perf_counter() - started, 3), "calls": calls}


def offline_estimate(deployment: Deployment, camera_fps: float, end_to_end_ms: float) -> int:
    """Cameras the offline end-to-end median says the deployment serves: where the search starts."""
    per_worker = 1000.0 / camera_fps / max(end_to_end_ms, 1e-3)
    return max(1, math.floor(per_worker * deployment.parallel))


def capacity_search(
    config: CapacityConfig,
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    prepare: Callable[[SegmentationAdapter], Callable[[torch.Tensor], Any]],
    pool: list[torch.Tensor],
    device: torch.device,
    end_to_end_ms: float,
    timeout_s: float,
    fit: MemoryFit,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> dict[str, Any]:
    """Each policy's search (the budget shared evenly), and the best confirmed N over them: the record's
    `capacity`."""
    quantile = config.quantile()
    criterion = Criterion(
        quantile=quantile,
        latency_bound_ms=config.bound_ms(),
        min_frames=config.trial_frames(),
        min_duration_s=config.duration_s,
        confirmations=config.confirmations,
        budget_s=config.search_budget(timeout_s),
    )
    threads = torch.get_num_threads()
    share = criterion.budget_s / len(config.policies)
    policies: dict[str, Any] = {}
    for policy in config.policies:
        policies[policy] = _policy_search(
            policy, config, criterion, adapter, forward, prepare, pool, device, end_to_end_ms, threads, share, fit,
            autocast,
        )  # fmt: skip
    return summarise(config, criterion, policies)


def _policy_search(
    policy: str,
    config: CapacityConfig,
    criterion: Criterion,
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    prepare: Callable[[SegmentationAdapter], Callable[[torch.Tensor], Any]],
    pool: list[torch.Tensor],
    device: torch.device,
    end_to_end_ms: float,
    threads: int,
    budget_s: float,
    fit: MemoryFit,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> dict[str, Any]:
    try:
        deployment, memory_info = build_deployment(policy, config, adapter, forward, prepare, device, threads, fit)
        warmup = warm_deployment(deployment, pool, device, config.warmup_s, autocast)
    except PolicyUnavailable as exc:
        return {
            "policy": policy,
            "status": exc.status,
            "end_reason": exc.status,
            "max_cameras": None,
            "max_cameras_why": str(exc),
            "trials": [],
            "memory": fit.to_dict(config.replicas if policy == "replicas" else 1),
        }
    estimate = offline_estimate(deployment, config.camera_fps, end_to_end_ms)

    def trial(cameras: int) -> CapacityOutcome:
        return run_trial(deployment, cameras, config, criterion, pool, device, autocast)

    search = find_max_cameras(
        trial, criterion, config.camera_fps, estimate, config.max_cameras, budget_s, lambda row: _log_row(policy, row)
    )
    end_reason = "confirmed" if search["confirmed"] else ("budget_s" if "budget" in (search["how"] or "") else "none")
    knobs = deployment.knobs  # the copies go with this frame, before the next policy builds its own
    return {
        "policy": policy,
        "status": "ok",
        "end_reason": end_reason,
        "knobs": knobs,
        "estimate": estimate,
        "warmup": warmup,
        "memory": memory_info,
        **search,
    }


def summarise(config: CapacityConfig, criterion: Criterion, policies: dict[str, Any]) -> dict[str, Any]:
    """The best confirmed N over the policies, with the criterion, the schedule and each policy's search."""
    confirmed = [result for result in policies.values() if result.get("max_cameras") is not None]
    best = max(confirmed, key=lambda result: result["max_cameras"], default=None)
    name = f"p{100 * criterion.quantile:g}"
    reasons = "; ".join(f"{p}: {r.get('max_cameras_why')}" for p, r in policies.items() if r.get("max_cameras") is None)
    return {
        "camera_fps": config.camera_fps,
        "arrival": config.arrival,
        "jitter_ms": config.jitter_ms if config.arrival == "jitter" else None,
        "queue_size": config.queue_size,
        "percentile": name,
        "latency_bound_ms": criterion.bound_ms(config.camera_fps),
        "criterion": {
            **criterion.to_dict(),
            "text": (
                f"no frame dropped (a frame not taken before its camera's next frame is due) and {name} latency from "
                f"scheduled arrival ≤ {criterion.bound_ms(config.camera_fps):g} ms, over ≥ {criterion.min_frames} "
                f"frames and ≥ {criterion.min_duration_s:g} s per trial; N is reported after "
                f"{criterion.confirmations} consecutive passing trials, with the trial at N + 1 that failed"
            ),
        },
        "max_cameras": best["max_cameras"] if best else None,
        "policy": best["policy"] if best else None,
        "how": best["how"] if best else None,
        "failing_cameras": best.get("failing_cameras") if best else None,
        "failed_on": best.get("failed_on") if best else None,
        "max_cameras_why": None if best else reasons or "no policy confirmed an N",
        "policies": policies,
    }


# ---- the cell's pass ----------------------------------------------------------------------------------------


def instance_footprint_mb(memory_mb: dict[str, Any]) -> float | None:
    """One model instance in use: the allocator's reserved peak on a GPU, else the RSS peak above the baseline."""
    reserved = memory_mb.get("torch_reserved_peak")
    if reserved:
        return float(reserved)
    peak, baseline = memory_mb.get("rss_peak"), memory_mb.get("baseline")
    return float(peak) - float(baseline) if peak is not None and baseline is not None else None


def memory_fit(memory_mb: dict[str, Any], budget: Any, hardware: str | None) -> MemoryFit:
    """The budget check's figures: the emulated card's total and context (the profile's estimate where the cell
    measured none, e.g. on a CPU), and one instance's footprint."""
    if budget is None or hardware is None:
        return MemoryFit(instance_footprint_mb(memory_mb), None, 0.0, None)
    from segbench.hardware import load_profile  # lazy: only a budgeted cell needs the profile

    context = budget.context_mb if budget.context_mb is not None else load_profile(hardware).cuda_context_mb
    return MemoryFit(instance_footprint_mb(memory_mb), budget.budget_mb, float(context), budget.target)


def capacity_pass(
    config: CapacityConfig,
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    prepare: Callable[[SegmentationAdapter], Callable[[torch.Tensor], Any]],
    device: torch.device,
    resolution: tuple[int, int],
    end_to_end_ms: float,
    timeout_s: float,
    fit: MemoryFit,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> dict[str, Any]:
    """The capacity scenario's pass: synthetic camera frames at the cell's resolution, every policy searched."""
    from segbench.data.sources import MovingScene  # lazy: the photographs load only for a capacity cell

    scene = MovingScene(*resolution).frames()
    pool = [next(scene) for _ in range(FRAME_POOL)]
    if device.type == "cuda":
        pool = [frame.pin_memory() for frame in pool]
    return capacity_search(config, adapter, forward, prepare, pool, device, end_to_end_ms, timeout_s, fit, autocast)
