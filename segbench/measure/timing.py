"""Timers: synchronous latency (one request at a time, the device synchronised per iteration) and a separately named
back-to-back device throughput.

Latency is MLPerf single-stream's: each sample is the host's wall clock from issuing a step to the device having
finished it, so nothing of step i overlaps step i+1. The pipelined figure a back-to-back loop gives (the host queues
step i+1 while the device runs step i) is a different quantity, device throughput: images / loop time, synchronised
once at the end (`time_throughput`). On a CPU both loops are the same synchronous loop.

The stop rule is optimum-benchmark's and timm's: run until both `min_iters` and `min_time_s` are met, but never past
`max_iters` or `max_time_s`. Every sample is kept. Warm-up runs for a time and a count (`warm_up`): on consumer cards
clocks ramp over hundreds of milliseconds, which a count of launch-bound iterations does not cover.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch

Clock = Callable[[], float]  # seconds
Sync = Callable[[], None]

SYNCHRONOUS = "synchronous: one request at a time, the device synchronised after each (MLPerf single-stream)"
BACK_TO_BACK = "back to back: steps queued without a sync between them, one sync at the end; images / loop time"


@dataclass(frozen=True)
class StopRule:
    min_iters: int
    max_iters: int
    min_time_s: float
    max_time_s: float

    def done(self, iters: int, elapsed_s: float) -> bool:
        if iters == 0:
            return False  # one sample at least, however short max_time_s is
        if iters >= self.max_iters or elapsed_s >= self.max_time_s:
            return True
        return iters >= self.min_iters and elapsed_s >= self.min_time_s


@dataclass(frozen=True)
class TimedRun:
    samples_ms: list[float]
    measured_s: float  # wall time of the measurement loop


@dataclass(frozen=True)
class ThroughputRun:
    """A back-to-back loop: `iterations` steps in `loop_s` seconds, the device synchronised once at the end."""

    iterations: int
    loop_s: float

    def images_per_s(self, batch_size: int) -> float | None:
        return batch_size * self.iterations / self.loop_s if self.loop_s > 0 else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_sync(device: torch.device) -> Sync:
    """The call that waits for the device: a no-op on a CPU (its steps return finished)."""
    return lambda: synchronize(device)


def warm_up(
    step: Callable[[], Any],
    iterations: int,
    device: torch.device,
    seconds: float = 0.0,
    *,
    sync: Sync | None = None,
    clock: Clock = time.perf_counter,
) -> dict[str, float]:
    """Run `step` for at least `iterations` calls and at least `seconds`, synchronised per call like the latency
    pass it precedes (so cuDNN autotuning, lazy kernels and the clock ramp are behind it). Returns the calls made and
    seconds taken."""
    sync = sync or device_sync(device)
    calls, started = 0, clock()
    while calls < iterations or clock() - started < seconds:
        step()
        sync()
        calls += 1
    return {"calls": calls, "seconds": round(clock() - started, 3)}


def time_synchronous(step: Callable[[], Any], rule: StopRule, sync: Sync, clock: Clock = time.perf_counter) -> TimedRun:
    """Each sample: the wall clock from issuing one step to the device having finished it (what a caller waits for)."""
    samples: list[float] = []
    start = clock()
    elapsed_s = 0.0
    while not rule.done(len(samples), elapsed_s):
        t0 = clock()
        step()
        sync()
        t1 = clock()
        samples.append((t1 - t0) * 1e3)
        elapsed_s = t1 - start
    return TimedRun(samples, elapsed_s)


def time_cpu(step: Callable[[], Any], rule: StopRule) -> TimedRun:
    return time_synchronous(step, rule, lambda: None, _perf_counter_s)


def time_cuda(
    step: Callable[[], Any],
    rule: StopRule,
    device: torch.device,
    *,
    sync: Sync | None = None,
    clock: Clock | None = None,
) -> TimedRun:
    """Synchronous latency on a GPU: the device synchronised after every step, so no step overlaps the next.

    (It used to bracket steps with CUDA events and synchronise once at the end: the host's work for step i+1
    overlapped the GPU's step i, and SegFormer-B2 fp16 on an H200 read 8.16 ms against 10.83 ms synchronised.)
    """
    with torch.cuda.device(device) if sync is None else nullcontext():  # a fake sync: no CUDA needed
        return time_synchronous(step, rule, sync or device_sync(device), clock or _perf_counter_s)


def time_steps(step: Callable[[], Any], rule: StopRule, device: torch.device) -> TimedRun:
    """The latency pass's timer: synchronous on every device."""
    if device.type == "cuda":
        return time_cuda(step, rule, device)
    return time_cpu(step, rule)


def time_throughput(
    step: Callable[[], Any], rule: StopRule, sync: Sync, clock: Clock = time.perf_counter
) -> ThroughputRun:
    """Steps back to back with one sync at the end: the device's throughput when the host keeps its queue full.

    The stop rule reads the host clock, which runs ahead of the device by at most the launch queue; the final sync
    is inside the loop's time.
    """
    iterations, start = 0, clock()
    while not rule.done(iterations, clock() - start):
        step()
        iterations += 1
    sync()
    return ThroughputRun(iterations, clock() - start)


def _perf_counter_s() -> float:
    return time.perf_counter_ns() / 1e9
