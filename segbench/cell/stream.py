"""The stream scenario: frames arrive on a camera's clock; does the pipeline keep up?

A producer thread offers frame i at t0 + i / target_fps into a bounded queue; a full queue drops the
frame, as a camera driver does. The consumer runs preprocess → forward → postprocess per frame and
records the latency from the frame's arrival to its class-id map. Like MLPerf's server scenario,
with the camera's clock. With `overlap`, a second thread preprocesses while the model runs; on CUDA
it does so on its own CUDA stream (the forward waits on an event, never on the whole device), so the
copy and normalisation of frame i+1 really overlap the forward pass of frame i. Before the clock
starts, `warm_stream` runs the same per-frame path for a fixed time (clocks, caches and the side
stream settle), as MLPerf loadgen warms up for a duration rather than a count.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from segbench.measure.stats import LatencyStats
from segbench.measure.timing import synchronize
from segbench.models.base import SegmentationAdapter

STOP = object()
QUEUE_SERIES_POINTS = 200  # queue depth kept for plotting, evenly subsampled
CONFIRM_STEP = 0.9  # a confirmation trial that drops frames steps the rate down by 10 % and tries again
CONFIRM_TRIES = 5


@dataclass
class StreamOutcome:
    target_fps: float
    duration_s: float
    offered: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    queue_depths: list[int] = field(default_factory=list)
    first_arrival: float = 0.0
    last_done: float = 0.0

    @property
    def processed(self) -> int:
        return len(self.latencies_ms)

    @property
    def sustained_fps(self) -> float:
        span = self.last_done - self.first_arrival
        return self.processed / span if span > 0 else 0.0

    @property
    def keeps_up(self) -> bool:
        return self.dropped == 0 and self.processed > 0

    def to_dict(self) -> dict[str, Any]:
        depths = self.queue_depths
        stride = max(1, len(depths) // QUEUE_SERIES_POINTS)
        latency = LatencyStats.from_samples(self.latencies_ms) if self.latencies_ms else None
        return {
            "target_fps": self.target_fps,
            "duration_s": self.duration_s,
            "sustained_fps": self.sustained_fps,
            "frames_offered": self.offered,
            "frames_processed": self.processed,
            "frames_dropped": self.dropped,
            "drop_pct": 100.0 * self.dropped / self.offered if self.offered else 0.0,
            "keeps_up": self.keeps_up,
            "latency_ms": latency.summary() if latency else None,
            "queue_depth": {
                "max": max(depths, default=0),
                "mean": sum(depths) / len(depths) if depths else 0.0,
                "series": depths[::stride],
            },
        }


def _produce(frames: Iterator[torch.Tensor], inbox: queue.Queue, outcome: StreamOutcome, stop_at: float) -> None:
    """Offer frames on the clock; never wait for the consumer (a camera doesn't)."""
    start = time.perf_counter()
    outcome.first_arrival = start
    interval = 1.0 / outcome.target_fps
    index = 0
    while True:
        due = start + index * interval
        if due >= stop_at:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        frame = next(frames)
        outcome.offered += 1
        outcome.queue_depths.append(inbox.qsize())
        try:
            inbox.put_nowait((time.perf_counter(), frame))
        except queue.Full:
            outcome.dropped += 1
        index += 1
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
        while (item := inbox.get()) is not STOP:
            arrived, frame = item
            inputs, ready = side(frame)
            outbox.put((arrived, frame.shape[:2], inputs, ready))
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


def run_stream(
    adapter: SegmentationAdapter,
    forward: Callable[[torch.Tensor], Any],
    frames: Iterator[torch.Tensor],
    target_fps: float,
    duration_s: float,
    device: torch.device,
    queue_size: int = 2,
    overlap: bool = False,
) -> StreamOutcome:
    outcome = StreamOutcome(target_fps=target_fps, duration_s=duration_s)
    inbox: queue.Queue = queue.Queue(maxsize=queue_size)
    producer = threading.Thread(
        target=_produce, args=(frames, inbox, outcome, time.perf_counter() + duration_s), daemon=True
    )
    ready: queue.Queue = inbox
    workers = [producer]
    side = SidePreprocess(adapter, device) if overlap else None
    if side is not None:
        ready = queue.Queue(maxsize=1)
        workers.append(threading.Thread(target=_preprocess_worker, args=(side, inbox, ready), daemon=True))
    for worker in workers:
        worker.start()
    with torch.inference_mode():
        while (item := ready.get()) is not STOP:
            if side is not None:
                arrived, size, inputs, event = item
                side.hand_over(inputs, event)
            else:
                arrived, frame = item
                size, inputs = frame.shape[:2], adapter.preprocess(frame.unsqueeze(0))
            adapter.postprocess(forward(inputs), tuple(size))
            done = time.perf_counter()
            outcome.latencies_ms.append((done - arrived) * 1000.0)
            outcome.last_done = done
    for worker in workers:
        worker.join()
    return outcome


def find_max_rate(
    trial: Callable[[float], StreamOutcome], estimate_fps: float, steps: int = 6
) -> tuple[float, list[dict[str, Any]]]:
    """Highest target rate with no drops, by bisection around the offline estimate; returns it and the trials."""
    low, high = 0.0, max(estimate_fps * 1.5, 1e-3)
    probe = min(estimate_fps, high)
    trials: list[dict[str, Any]] = []
    best = 0.0
    for _ in range(steps):
        outcome = trial(probe)
        trials.append(_trial_row(probe, outcome))
        if outcome.keeps_up:
            best, low = max(best, probe), probe
        else:
            high = probe
        probe = (low + high) / 2
    return best, trials


def _trial_row(rate: float, outcome: StreamOutcome) -> dict[str, Any]:
    return {
        "target_fps": rate,
        "keeps_up": outcome.keeps_up,
        "drop_pct": outcome.to_dict()["drop_pct"],
        "sustained_fps": outcome.sustained_fps,
    }


def confirm_rate(
    trial: Callable[[float], StreamOutcome], rate: float, tries: int = CONFIRM_TRIES, step: float = CONFIRM_STEP
) -> tuple[float, StreamOutcome | None, list[dict[str, Any]]]:
    """Confirm a searched rate with a trial of its own; while that trial drops frames, step down and confirm again.

    Returns the confirmed rate (0 when no try kept up), the last trial's outcome and every try, so a
    reported maximum is always a rate whose own trial kept up with no drops.
    """
    confirmations: list[dict[str, Any]] = []
    outcome = None
    while rate > 0 and len(confirmations) < tries:
        outcome = trial(rate)
        confirmations.append(_trial_row(rate, outcome))
        if outcome.keeps_up:
            return rate, outcome, confirmations
        rate *= step
    return 0.0, outcome, confirmations
