"""Timers driven by a fake device: synchronous latency against back-to-back throughput, and the timed warm-up."""

from __future__ import annotations

import pytest
import torch

from segbench.measure.timing import StopRule, time_cuda, time_throughput, warm_up


class FakeDevice:
    """A host clock and an in-order device queue: a step costs the host `host_ms` to issue and the device `device_ms`
    to run, starting when both the step is issued and the previous step is done (a CUDA stream in miniature)."""

    def __init__(self, host_ms: float, device_ms: float) -> None:
        self.host_ms, self.device_ms = host_ms, device_ms
        self.now_ms = 0.0  # the host's clock
        self.device_free_at_ms = 0.0
        self.steps = 0

    def clock(self) -> float:
        return self.now_ms / 1000.0

    def step(self) -> None:
        self.now_ms += self.host_ms
        self.device_free_at_ms = max(self.device_free_at_ms, self.now_ms) + self.device_ms
        self.steps += 1

    def synchronize(self) -> None:
        self.now_ms = max(self.now_ms, self.device_free_at_ms)


def test_gpu_latency_is_what_one_caller_waits_for_and_throughput_is_named_apart() -> None:
    """Issue 27 item 1: time_cuda bracketed steps with CUDA events and synchronised once at the end, so the host's work
    for step i+1 overlapped the GPU's step i (SegFormer-B2 fp16 on an H200: 8.16 ms against 10.83 ms synchronised).
    Latency is now synchronous (issue + device time per request, MLPerf single-stream); the pipelined rate is device
    throughput, images / loop time of a back-to-back loop."""
    rule = StopRule(min_iters=50, max_iters=50, min_time_s=0.0, max_time_s=60.0)
    device = FakeDevice(host_ms=1.0, device_ms=3.0)
    latency = time_cuda(device.step, rule, torch.device("cuda"), sync=device.synchronize, clock=device.clock)
    assert latency.samples_ms == pytest.approx([4.0] * 50)  # 1 ms to issue + 3 ms on the device, never overlapped
    pipelined = FakeDevice(host_ms=1.0, device_ms=3.0)
    throughput = time_throughput(pipelined.step, rule, pipelined.synchronize, pipelined.clock)
    assert throughput.iterations == 50
    # back to back the host's 1 ms hides under the device's 3 ms: 1 + 50 x 3 ms for 50 steps
    assert throughput.loop_s == pytest.approx((1.0 + 50 * 3.0) / 1000.0)
    assert throughput.images_per_s(batch_size=2) == pytest.approx(2 * 50 / 0.151)


def test_latency_warm_up_lasts_a_time_as_well_as_a_count() -> None:
    """Issue 27 item 4: the latency pass's warm-up was `warmup_iters` calls (5-10 launch-bound ones are ~30 ms, while
    a consumer card's clocks ramp over hundreds); it now runs for at least warmup_iters AND warmup_s, synchronised per
    call."""
    device = FakeDevice(host_ms=1.0, device_ms=2.0)
    done = warm_up(device.step, 5, torch.device("cuda"), 0.3, sync=device.synchronize, clock=device.clock)
    assert device.steps == 100 and done == {"calls": 100, "seconds": 0.3}  # 3 ms a call for 0.3 s
    quick = FakeDevice(host_ms=1.0, device_ms=2.0)
    assert warm_up(quick.step, 5, torch.device("cuda"), 0.0, sync=quick.synchronize, clock=quick.clock)["calls"] == 5
