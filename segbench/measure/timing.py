"""Timers: CUDA events without a host sync inside the loop on GPUs, perf_counter_ns on CPUs.

The stop rule is optimum-benchmark's and timm's: run until both `min_iters` and `min_time_s` are
met, but never past `max_iters` or `max_time_s`. Every sample is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch


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


def warm_up(step: Callable[[], Any], iterations: int, device: torch.device) -> None:
    for _ in range(iterations):
        step()
    synchronize(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cpu(step: Callable[[], Any], rule: StopRule) -> TimedRun:
    samples: list[float] = []
    clock = time.perf_counter_ns
    start = clock()
    elapsed_s = 0.0
    while not rule.done(len(samples), elapsed_s):
        t0 = clock()
        step()
        t1 = clock()
        samples.append((t1 - t0) / 1e6)
        elapsed_s = (t1 - start) / 1e9
    return TimedRun(samples, elapsed_s)


def time_cuda(step: Callable[[], Any], rule: StopRule, device: torch.device) -> TimedRun:
    """Record an event pair around each step and synchronise once at the end.

    The stop rule reads the host clock, which runs ahead of the GPU by at most the launch
    queue; the samples themselves are GPU time between the events.
    """
    pairs: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    start = time.perf_counter()
    elapsed_s = 0.0
    with torch.cuda.device(device):
        while not rule.done(len(pairs), elapsed_s):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            step()
            end.record()
            pairs.append((begin, end))
            elapsed_s = time.perf_counter() - start
        torch.cuda.synchronize(device)
    measured_s = time.perf_counter() - start
    return TimedRun([begin.elapsed_time(end) for begin, end in pairs], measured_s)


def time_steps(step: Callable[[], Any], rule: StopRule, device: torch.device) -> TimedRun:
    if device.type == "cuda":
        return time_cuda(step, rule, device)
    return time_cpu(step, rule)
