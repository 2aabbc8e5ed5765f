"""The stream scenario: frames arrive on a camera's clock; does the pipeline keep up within a latency bound?

A producer thread offers frame i at its scheduled time t0 + i / target_fps into a bounded queue; a full
queue drops the frame, as a camera driver does. The consumer runs preprocess → forward → postprocess per
frame. As in MLPerf loadgen's server scenario, a frame's latency runs from its *scheduled* arrival to its
class-id map, so a late producer counts against the pipeline, and each frame's latency splits into issue
delay (scheduled → put on the queue: the host was late), queue wait (put → taken: the rate is too high) and
service time (taken → class map: the model itself). A trial passes its `Criterion` when the q-quantile of
latency is within the bound (a dropped frame counts as one over it), over at least 1 / (1 − q) frames (100 for p99); the
highest sustainable rate is searched by bisection, then reported only after k consecutive passing trials at
that rate. With `overlap`, a second thread preprocesses while the model runs; on CUDA it does so on its own
CUDA stream (the forward waits on an event, never on the whole device), so the copy and normalisation of
frame i+1 really overlap the forward pass of frame i. Before the clock starts, `warm_stream` runs the same
per-frame path for a fixed time (clocks, caches and the side stream settle), as MLPerf loadgen warms up for
a duration rather than a count.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch

from segbench.measure.quantiles import percentile_withheld
from segbench.measure.stats import LatencyStats
from segbench.measure.timing import synchronize
from segbench.models.base import SegmentationAdapter
from segbench.suite.schema import DEFAULT_SEARCH_BUDGET_S, StreamConfig

STOP = object()
QUEUE_SERIES_POINTS = 200  # queue depth kept for plotting, evenly subsampled
CONFIRM_STEP = 0.9  # a confirmation trial that fails steps the rate down by 10 % and starts the count again
CONFIRM_FAILURES = 5  # step-downs before the search gives up on confirming any rate


def _percentile_name(quantile: float) -> str:
    return f"p{100 * quantile:g}"


@dataclass(frozen=True)
class Criterion:
    """When a trial passes, and how long trials are.

    Pass: the `quantile` of latency from scheduled arrival is at most the bound (`latency_bound_ms`, or the
    frame interval 1000 / rate when None: each class map ready before the next frame is due), a dropped frame
    counting as one over the bound (it never met it; one drop among 450 frames does not fail a p99). A trial
    offers max(min_frames, min_duration_s × rate) frames, so the quantile judged has at
    least 1 / (1 − quantile) samples (MLPerf's minimum query count and minimum duration).
    """

    quantile: float = 0.99
    latency_bound_ms: float | None = None
    min_frames: int = 100
    min_duration_s: float = 4.0
    confirmations: int = 3  # k: consecutive passing trials at a rate before it is reported
    budget_s: float = DEFAULT_SEARCH_BUDGET_S  # trials stop starting once the search would run past this

    @classmethod
    def from_config(cls, config: StreamConfig, timeout_s: float) -> Criterion:
        """The suite's stream options as the rule trials are judged and sized by."""
        return cls(
            quantile=config.quantile(),
            latency_bound_ms=config.latency_bound_ms,
            min_frames=config.trial_frames(),
            min_duration_s=config.duration_s,
            confirmations=config.confirmations,
            budget_s=config.search_budget(timeout_s),
        )

    def bound_ms(self, rate: float) -> float:
        return self.latency_bound_ms if self.latency_bound_ms is not None else 1000.0 / rate

    def frames_for(self, rate: float) -> int:
        return max(self.min_frames, math.ceil(self.min_duration_s * rate))

    def seconds_for(self, rate: float) -> float:
        return self.frames_for(rate) / rate

    def late_frames_that_fail(self, frames: int) -> int:
        """Frames over the bound after which a trial of `frames` frames cannot pass (its quantile is already over)."""
        return frames - math.floor(self.quantile * (frames - 1))

    def to_dict(self) -> dict[str, Any]:
        name = _percentile_name(self.quantile)
        bound = f"{self.latency_bound_ms:g} ms" if self.latency_bound_ms is not None else "the frame interval"
        return {
            "quantile": self.quantile,
            "percentile": name,
            "latency_bound_ms": self.latency_bound_ms,
            "bound": "fixed" if self.latency_bound_ms is not None else "frame interval",
            "drops": "count as frames over the bound",
            "min_frames": self.min_frames,
            "min_duration_s": self.min_duration_s,
            "confirmations": self.confirmations,
            "budget_s": self.budget_s,
            "text": (
                f"{name} latency from scheduled arrival ≤ {bound} (a dropped frame counts as late), over ≥ "
                f"{self.min_frames} frames "
                f"and ≥ {self.min_duration_s:g} s per trial; a rate is reported after {self.confirmations} "
                "consecutive passing trials"
            ),
        }


class Arrival(NamedTuple):
    due: float  # the camera's schedule: when the frame exists
    issued: float  # when the producer actually put it on the queue
    frame: torch.Tensor


def _summary(samples_ms: list[float]) -> dict[str, Any] | None:
    """Median, p99 and max with n: compact enough for every trial row."""
    if not samples_ms:
        return None
    values = np.asarray(samples_ms, dtype=np.float64)
    median, p99 = np.percentile(values, [50, 99])
    withheld = percentile_withheld("p99", values.size)  # the one percentile rule (measure/quantiles.py)
    summary = {"median": float(median), "p99": None if withheld else float(p99), "max": float(values.max())}
    return {**summary, "n": int(values.size), **({"p99_withheld": withheld} if withheld else {})}


@dataclass
class StreamOutcome:
    target_fps: float
    duration_s: float
    offered: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # from the scheduled arrival to the class map
    issue_delays_ms: list[float] = field(default_factory=list)  # scheduled → put on the queue (processed frames)
    queue_waits_ms: list[float] = field(default_factory=list)  # put → taken off the queue
    service_ms: list[float] = field(default_factory=list)  # taken off the queue → class map
    queue_depths: list[int] = field(default_factory=list)
    first_arrival: float = 0.0
    last_done: float = 0.0
    wall_s: float = 0.0  # the trial's wall time, start to the last frame's result (what the search budget counts)
    stopped_early: str | None = None  # why the trial ended before its last frame (its verdict was already known)

    @property
    def processed(self) -> int:
        return len(self.latencies_ms)

    @property
    def sustained_fps(self) -> float:
        span = self.last_done - self.first_arrival
        return self.processed / span if span > 0 else 0.0

    @property
    def drop_pct(self) -> float:
        return 100.0 * self.dropped / self.offered if self.offered else 0.0

    def latency_quantile(self, quantile: float) -> float | None:
        return float(np.percentile(self.latencies_ms, 100 * quantile)) if self.latencies_ms else None

    def verdict(self, criterion: Criterion) -> tuple[bool, str | None]:
        """Whether the trial passes `criterion`, and why not. A dropped frame never met its bound, so it counts as a
        late one: the quantile is over the bound once late + dropped frames reach `late_frames_that_fail`."""
        name, bound = _percentile_name(criterion.quantile), criterion.bound_ms(self.target_fps)
        value = self.latency_quantile(criterion.quantile)
        if value is None:
            return False, "no frame was processed"
        late = sum(latency > bound for latency in self.latencies_ms)
        if self.dropped and late + self.dropped >= criterion.late_frames_that_fail(self.offered):
            return False, f"{self.dropped} of {self.offered} frames dropped and {late} late: {name} over {bound:.1f} ms"
        if value > bound:
            return False, f"{name} {value:.1f} ms > bound {bound:.1f} ms"
        if self.processed < criterion.min_frames:
            return False, f"{self.processed} frames < the {criterion.min_frames} a {name} needs"
        return True, None

    def to_dict(self, criterion: Criterion) -> dict[str, Any]:
        depths = self.queue_depths
        stride = max(1, len(depths) // QUEUE_SERIES_POINTS)
        latency = LatencyStats.from_samples(self.latencies_ms) if self.latencies_ms else None
        passed, why = self.verdict(criterion)
        return {
            "target_fps": self.target_fps,
            "duration_s": self.duration_s,
            "sustained_fps": self.sustained_fps,
            "frames_offered": self.offered,
            "frames_processed": self.processed,
            "frames_dropped": self.dropped,
            "drop_pct": self.drop_pct,
            "keeps_up": passed,  # passed the criterion (records before the latency bound: no frame dropped)
            "fail_reason": why,
            "latency_bound_ms": criterion.bound_ms(self.target_fps),
            "latency_ms": latency.summary() if latency else None,  # from the scheduled arrival
            "issue_delay_ms": _summary(self.issue_delays_ms),
            "queue_wait_ms": _summary(self.queue_waits_ms),
            "service_ms": _summary(self.service_ms),
            "stopped_early": self.stopped_early,
            "queue_depth": {
                "max": max(depths, default=0),
                "mean": sum(depths) / len(depths) if depths else 0.0,
                "series": depths[::stride],
            },
        }


def _produce(
    frames: Iterator[torch.Tensor], inbox: queue.Queue, outcome: StreamOutcome, count: int, stop: threading.Event | None
) -> None:
    """Offer `count` frames on the clock; never wait for the consumer (a camera doesn't).

    Each frame is read before its due time (a camera's frame exists when it is due) and stamped with that due
    time, so a producer that wakes late shows as issue delay and counts in the frame's latency.
    """
    interval = 1.0 / outcome.target_fps
    frame = next(frames)
    start = time.perf_counter()
    outcome.first_arrival = start
    for index in range(count):
        if stop is not None and stop.is_set():
            break
        due = start + index * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        outcome.offered += 1
        outcome.queue_depths.append(inbox.qsize())
        try:
            inbox.put_nowait(Arrival(due, time.perf_counter(), frame))
        except queue.Full:
            outcome.dropped += 1  # a late frame for the verdict: the consumer stops the trial once it cannot pass
        if index + 1 < count:
            frame = next(frames)
    inbox.put(STOP)


class SidePreprocess:
    """Preprocess on a CUDA stream of its own and hand back an event the forward's stream waits on; plain on a CPU."""

    def __init__(self, adapter: SegmentationAdapter, device: torch.device):
        self.adapter = adapter
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __call__(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        if self.stream is None:
            return self.adapter.preprocess(frame.unsqueeze(0)), None
        with torch.cuda.stream(self.stream):
            inputs = self.adapter.preprocess(frame.unsqueeze(0).pin_memory())  # pinned: the copy is asynchronous
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return inputs, ready

    def hand_over(self, inputs: torch.Tensor, ready: torch.cuda.Event | None) -> None:
        """Make the consuming (current) stream wait for the preprocessing, and keep its memory alive for it."""
        if ready is None:
            return
        consumer = torch.cuda.current_stream(self.device)
        consumer.wait_event(ready)
        inputs.record_stream(consumer)


def _preprocess_worker(side: SidePreprocess, inbox: queue.Queue, outbox: queue.Queue) -> None:
    with torch.inference_mode():
        while (arrival := inbox.get()) is not STOP:
            taken = time.perf_counter()
            inputs, ready = side(arrival.frame)
            outbox.put((arrival, taken, inputs, ready))
    outbox.put(STOP)


def warm_stream(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    frames: Iterator[torch.Tensor],
    device: torch.device,
    seconds: float,
    overlap: bool = False,
) -> dict[str, Any]:
    """Run the stream's per-frame path (the overlap path too) for `seconds`, at least one frame; returns what it did."""
    side = SidePreprocess(adapter, device) if overlap else None
    count, started = 0, time.perf_counter()
    with torch.inference_mode():
        while count == 0 or time.perf_counter() - started < seconds:
            frame = next(frames)
            if side is not None:
                inputs, ready = side(frame)
                side.hand_over(inputs, ready)
            else:
                inputs = adapter.preprocess(frame.unsqueeze(0))
            adapter.postprocess(forward(inputs), tuple(frame.shape[:2]))
            count += 1
        synchronize(device)
    return {"seconds": time.perf_counter() - started, "frames": count}


def _record_frame(outcome: StreamOutcome, arrival: Arrival, taken: float, done: float) -> None:
    outcome.latencies_ms.append((done - arrival.due) * 1000.0)
    outcome.issue_delays_ms.append((arrival.issued - arrival.due) * 1000.0)
    outcome.queue_waits_ms.append((taken - arrival.issued) * 1000.0)
    outcome.service_ms.append((done - taken) * 1000.0)
    outcome.last_done = done


def run_stream(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    frames: Iterator[torch.Tensor],
    target_fps: float,
    duration_s: float,
    device: torch.device,
    queue_size: int = 2,
    overlap: bool = False,
    criterion: Criterion | None = None,
    stop_early: bool = True,
) -> StreamOutcome:
    """One trial at `target_fps`: `duration_s` of frames, or with a `criterion` its trial length, stopping early
    (with `stop_early`) once the trial has failed it: a drop, or enough frames over the bound to put the quantile
    over."""
    count = criterion.frames_for(target_fps) if criterion else max(1, math.ceil(duration_s * target_fps))
    outcome = StreamOutcome(target_fps=target_fps, duration_s=count / target_fps)
    late_limit = criterion.late_frames_that_fail(count) if criterion else None
    bound_s = criterion.bound_ms(target_fps) / 1000.0 if criterion else math.inf
    stop = threading.Event() if criterion and stop_early else None
    inbox: queue.Queue = queue.Queue(maxsize=queue_size)
    producer = threading.Thread(target=_produce, args=(frames, inbox, outcome, count, stop), daemon=True)
    ready: queue.Queue = inbox
    workers = [producer]
    side = SidePreprocess(adapter, device) if overlap else None
    if side is not None:
        ready = queue.Queue(maxsize=1)
        workers.append(threading.Thread(target=_preprocess_worker, args=(side, inbox, ready), daemon=True))
    started, late = time.perf_counter(), 0
    for worker in workers:
        worker.start()
    with torch.inference_mode():
        while (item := ready.get()) is not STOP:
            if side is not None:
                arrival, taken, inputs, event = item
                side.hand_over(inputs, event)
            else:
                arrival, taken = item, time.perf_counter()
                inputs = adapter.preprocess(arrival.frame.unsqueeze(0))
            adapter.postprocess(forward(inputs), tuple(arrival.frame.shape[:2]))
            done = time.perf_counter()
            _record_frame(outcome, arrival, taken, done)
            late += done - arrival.due > bound_s
            failed = late + outcome.dropped  # a dropped frame never met its bound
            if stop is not None and late_limit is not None and failed >= late_limit and not stop.is_set():
                outcome.stopped_early = f"{late} frames over the latency bound, {outcome.dropped} dropped"
                stop.set()
    for worker in workers:
        worker.join()
    outcome.wall_s = time.perf_counter() - started
    return outcome


# ---- the search for the highest sustainable rate -----------------------------------------------------------


def trial_row(phase: str, outcome: StreamOutcome, criterion: Criterion) -> dict[str, Any]:
    """One trial as the record keeps it: rate, n, the judged percentile from scheduled arrival, its parts, pass."""
    passed, why = outcome.verdict(criterion)
    return {
        "phase": phase,
        "target_fps": outcome.target_fps,
        "frames_offered": outcome.offered,
        "n": outcome.processed,
        "latency_bound_ms": criterion.bound_ms(outcome.target_fps),
        "latency_quantile_ms": outcome.latency_quantile(criterion.quantile),
        "latency_ms": _summary(outcome.latencies_ms),
        "issue_delay_ms": _summary(outcome.issue_delays_ms),
        "queue_wait_ms": _summary(outcome.queue_waits_ms),
        "service_ms": _summary(outcome.service_ms),
        "frames_dropped": outcome.dropped,
        "drop_pct": outcome.drop_pct,
        "sustained_fps": outcome.sustained_fps,
        "wall_s": outcome.wall_s,
        "stopped_early": outcome.stopped_early,
        "passed": passed,
        "fail_reason": why,
    }


@dataclass
class RateSearch:
    """The search's state: every trial, the time spent, and the last outcome at the reported rate."""

    trial: Callable[[float], StreamOutcome]
    criterion: Criterion
    rows: list[dict[str, Any]] = field(default_factory=list)
    spent_s: float = 0.0
    last: StreamOutcome | None = None

    def fits(self, rate: float, trials: int) -> bool:
        """Whether `trials` more full-length trials at `rate` end within the budget."""
        return self.spent_s + trials * self.criterion.seconds_for(rate) <= self.criterion.budget_s

    def run(self, phase: str, rate: float) -> bool:
        outcome = self.trial(rate)
        self.spent_s += outcome.wall_s
        self.last = outcome
        row = trial_row(phase, outcome, self.criterion)
        self.rows.append(row)
        return bool(row["passed"])


MIN_SEARCH_FPS = 0.1  # below one frame every 10 s a camera stream is not a stream


def find_max_rate(
    trial: Callable[[float], StreamOutcome], criterion: Criterion, estimate_fps: float, steps: int = 6
) -> dict[str, Any]:
    """Highest rate that passes `criterion` k times in a row: bisection around the offline estimate, then
    confirmation (a failed confirmation steps the rate down 10 % and the count starts again).

    The reported rate is below every rate that failed a trial, and its last k trials all passed. Returns the
    record's search fields: max_sustainable_fps (None with max_sustainable_fps_why when no rate was
    confirmed), confirmed_trials, trials, search_s, and the last trial at the reported rate as `outcome`.
    """
    search = RateSearch(trial, criterion)
    k = criterion.confirmations
    low, high = 0.0, max(estimate_fps * 1.5, 1e-3)
    probe = min(estimate_fps, high)
    for _ in range(steps):
        if not search.fits(probe, 1 + k):  # leave the budget room to confirm
            break
        if search.run("search", probe):
            low = probe
        else:
            high = probe
        probe = (low + high) / 2
    # No searched rate passed (the machine is slower than the offline estimate said): halve until one does, so the
    # confirmations start from a rate that passed rather than stepping down 10 % at a time from one that failed.
    probe = min([row["target_fps"] for row in search.rows] or [estimate_fps]) / 2
    while low == 0 and probe >= MIN_SEARCH_FPS and search.fits(probe, 1 + k):
        if search.run("search", probe):
            low = probe
        probe /= 2
    # When still no searched rate passed, confirmation starts a step below the slowest rate tried.
    rate = low if low > 0 else min([row["target_fps"] for row in search.rows] or [estimate_fps]) * CONFIRM_STEP
    streak, failures, why = 0, 0, None
    while streak < k:
        if not search.fits(rate, k - streak):
            why = (
                f"the search budget ({criterion.budget_s:g} s) ran out before {k} consecutive passing trials at "
                f"{rate:.2f} FPS ({criterion.seconds_for(rate):.0f} s each)"
            )
            break
        if search.run("confirm", rate):
            streak += 1
            continue
        streak, failures = 0, failures + 1
        if failures >= CONFIRM_FAILURES:
            why = f"{failures} confirmations failed, down to {rate:.2f} FPS: {search.rows[-1]['fail_reason']}"
            break
        rate *= CONFIRM_STEP
    confirmed = streak >= k
    return {
        "max_sustainable_fps": rate if confirmed else None,
        "max_sustainable_fps_why": None if confirmed else why,
        "confirmed_trials": streak,
        "trials": search.rows,
        "search_s": search.spent_s,
        "outcome": search.last,
    }
