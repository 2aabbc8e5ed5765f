"""Telemetry: a fake NVML drives the throttle flag and the energy arithmetic; real NVML here gives nulls with a
reason."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from segbench.cell import passes as cell_module
from segbench.measure import nvml
from segbench.measure.telemetry import (
    SUMMARY_FIELDS,
    CooldownConfig,
    PynvmlApi,
    TelemetrySampler,
    clocks_steady,
    decode_reasons,
    throttle_causes,
    wait_for_cooldown,
)

SW_POWER_CAP, HW_SLOWDOWN, SW_THERMAL, GPU_IDLE = 0x4, 0x8, 0x20, 0x1


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeNvml:
    """An NvmlApi test double: each getter returns the next value of its script (the last one repeats)."""

    def __init__(self, clock: FakeClock | None = None, step_s: float = 1.0, **scripts: list[Any]):
        self.clock, self.step_s = clock, step_s
        self.scripts = {
            "sm_clock_mhz": [1800],
            "memory_clock_mhz": [7500],
            "temperature_c": [60],
            "power_w": [100.0],
            "gpu_util_pct": [99],
            "total_energy_mj": [None],
            "clock_event_reasons": [0],
            **scripts,
        }
        self.calls = {name: 0 for name in self.scripts}

    def _next(self, name: str) -> Any:
        script, index = self.scripts[name], self.calls[name]
        self.calls[name] += 1
        if name == "clock_event_reasons" and self.clock is not None:
            self.clock.now += self.step_s  # one row of readings per step of the fake clock
        return script[min(index, len(script) - 1)]

    def unavailable_reason(self) -> str | None:
        return None

    def sm_clock_mhz(self, handle: Any) -> Any:
        return self._next("sm_clock_mhz")

    def memory_clock_mhz(self, handle: Any) -> Any:
        return self._next("memory_clock_mhz")

    def temperature_c(self, handle: Any) -> Any:
        return self._next("temperature_c")

    def power_w(self, handle: Any) -> Any:
        return self._next("power_w")

    def gpu_util_pct(self, handle: Any) -> Any:
        return self._next("gpu_util_pct")

    def total_energy_mj(self, handle: Any) -> Any:
        return self._next("total_energy_mj")

    def clock_event_reasons(self, handle: Any) -> Any:
        return self._next("clock_event_reasons")


def _run(api: FakeNvml, clock: FakeClock, rows: int, images: int | None = 10) -> dict[str, Any]:
    sampler = TelemetrySampler("handle", api, clock=clock)
    for _ in range(rows):
        sampler.sample()
    return sampler.summary(images)


# ---- throttling ------------------------------------------------------------------------------------


def test_power_cap_sets_the_throttle_flag() -> None:
    clock = FakeClock()
    summary = _run(FakeNvml(clock, clock_event_reasons=[0, SW_POWER_CAP, 0, 0]), clock, rows=4)
    assert summary["throttled"] is True
    assert (summary["throttle_reasons"], summary["throttle_causes"], summary["throttled_share"]) == (
        ["sw_power_cap"],
        ["power"],
        0.25,
    )


def test_thermal_slowdown_sets_the_throttle_flag() -> None:
    clock = FakeClock()
    summary = _run(FakeNvml(clock, clock_event_reasons=[SW_THERMAL | GPU_IDLE]), clock, rows=3)
    assert summary["throttled"] is True and summary["throttle_causes"] == ["thermal"]
    assert summary["throttle_reasons"] == ["gpu_idle", "sw_thermal_slowdown"]


def test_idle_and_clock_settings_are_not_throttling() -> None:
    clock = FakeClock()
    summary = _run(FakeNvml(clock, clock_event_reasons=[GPU_IDLE, 0x2, 0x10]), clock, rows=3)
    assert summary["throttled"] is False and summary["throttle_causes"] == []
    assert summary["throttle_reasons"] == ["applications_clocks_setting", "gpu_idle", "sync_boost"]


def test_decoding_bits() -> None:
    assert decode_reasons(0) == []
    assert decode_reasons(0x40 | 0x80) == ["hw_thermal_slowdown", "hw_power_brake_slowdown"]
    assert decode_reasons(0x1000) == ["bit_0x1000"]
    assert throttle_causes(decode_reasons(HW_SLOWDOWN)) == ["power", "thermal"]  # the hardware does not say which


# ---- energy -------------------------------------------------------------------------------------------


def test_energy_from_the_counter() -> None:
    clock = FakeClock()
    api = FakeNvml(
        clock, total_energy_mj=[1_000, 1_400, 3_000], power_w=[999.0]
    )  # power is ignored when the counter exists
    summary = _run(api, clock, rows=3, images=4)
    assert summary["energy_source"] == "energy_counter"
    assert summary["energy_j"] == pytest.approx(2.0) and summary["joules_per_image"] == pytest.approx(0.5)


def test_energy_from_the_power_integral_without_a_counter() -> None:
    clock = FakeClock()
    api = FakeNvml(clock, power_w=[100.0, 200.0, 100.0])  # samples at t = 0, 1, 2 s
    summary = _run(api, clock, rows=3, images=3)
    assert summary["energy_source"] == "power_integral"
    assert summary["energy_j"] == pytest.approx(300.0)  # trapezoids: 150 + 150
    assert summary["joules_per_image"] == pytest.approx(100.0)
    assert summary["window_s"] == pytest.approx(2.0)
    assert summary["power_w"] == {"min": 100.0, "max": 200.0, "mean": pytest.approx(400 / 3)}


def test_no_energy_source_gives_a_reason() -> None:
    clock = FakeClock()
    summary = _run(FakeNvml(clock, power_w=[None]), clock, rows=3)
    assert summary["energy_j"] is None and "fewer than two power samples" in summary["unavailable"]["energy_j"]
    assert summary["power_w"] is None and summary["unavailable"]["power_w"]
    assert summary["sm_clock_mhz"] == {"min": 1800, "mean": 1800, "max": 1800}


def test_zero_images_leaves_joules_per_image_null() -> None:
    clock = FakeClock()
    summary = _run(FakeNvml(clock), clock, rows=2, images=0)
    assert summary["energy_j"] == pytest.approx(100.0) and summary["joules_per_image"] is None
    assert summary["unavailable"]["joules_per_image"] == "no images processed in the window"


def test_sampling_from_another_thread() -> None:
    sampler = TelemetrySampler("handle", FakeNvml())
    threads = [threading.Thread(target=lambda: [sampler.sample() for _ in range(50)]) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sampler.summary(1)["samples"] == 100


# ---- without NVML ------------------------------------------------------------------------------------


def test_without_nvml_every_field_is_null_with_a_reason() -> None:
    sampler = TelemetrySampler.for_device(torch.device("cuda", 0))  # real pynvml; nvmlInit fails on this machine
    if nvml.unavailable_reason() is None:
        pytest.skip("NVML works here")
    sampler.sample()
    summary = sampler.summary(8)
    assert not sampler.enabled and summary["samples"] == 0
    assert all(summary[name] is None for name in SUMMARY_FIELDS)
    assert set(summary["unavailable"]) == set(SUMMARY_FIELDS)
    assert summary["unavailable"]["throttled"] == nvml.unavailable_reason()
    assert PynvmlApi().power_w(None) is None and PynvmlApi().clock_event_reasons(None) is None


def test_cpu_cell_has_no_telemetry() -> None:
    summary = TelemetrySampler.for_device(torch.device("cpu")).summary(1)
    assert summary["throttled"] is None and summary["unavailable"]["energy_j"] == "CPU cell: no GPU telemetry"


def test_a_sampler_that_never_sampled_says_so() -> None:
    assert (
        TelemetrySampler("handle", FakeNvml()).summary(1)["unavailable"]["power_w"] == "no telemetry samples were taken"
    )


# ---- cooldown ---------------------------------------------------------------------------------------


def test_cooldown_waits_until_below_the_temperature() -> None:
    clock = FakeClock()
    api = FakeNvml(temperature_c=[80, 80, 75, 70, 64])
    result = wait_for_cooldown("handle", below_c=65, api=api, poll_s=2.0, sleep=clock.sleep, clock=clock)
    assert result["reached"] is True and result["start_c"] == 80 and result["end_c"] == 64
    assert result["waited_s"] == pytest.approx(6.0)


def test_cooldown_gives_up_at_the_timeout() -> None:
    clock = FakeClock()
    result = wait_for_cooldown(
        "handle",
        below_c=50,
        fixed_s=5,
        timeout_s=20,
        api=FakeNvml(temperature_c=[90]),
        poll_s=1.0,
        sleep=clock.sleep,
        clock=clock,
    )
    assert result["reached"] is False and result["waited_s"] == pytest.approx(20.0)
    assert "still 90 °C after timeout_s=20" in result["note"]


def test_fixed_cooldown_and_cpu_noop() -> None:
    clock = FakeClock()
    result = wait_for_cooldown("handle", fixed_s=3, api=FakeNvml(), sleep=clock.sleep, clock=clock)
    assert result["waited_s"] == pytest.approx(3.0) and result["reached"] is None
    assert wait_for_cooldown(None, below_c=60)["note"] == "no cooldown: not a GPU cell"


def test_cooldown_config() -> None:
    assert CooldownConfig(below_c=60).timeout_s == 300
    with pytest.raises(ValidationError, match="below_c"):
        CooldownConfig()
    with pytest.raises(ValidationError, match="extra"):
        CooldownConfig(fixed_s=1, below=60)


# ---- the window telemetry covers ---------------------------------------------------------------------


def test_a_window_shorter_than_a_second_is_null_with_the_reason() -> None:
    clock = FakeClock()  # a 0.02 s window, like a 3-iteration memory pass
    short = TelemetrySampler("handle", FakeNvml(clock, step_s=0.01), clock=clock)
    for _ in range(3):
        short.sample()
    summary = short.summary(3, min_window_s=1.0)
    assert summary["window_s"] == pytest.approx(0.02) and summary["samples"] == 3
    assert all(summary[name] is None for name in SUMMARY_FIELDS)
    assert "under 1 s" in summary["unavailable"]["energy_j"] and "telemetry_s" in summary["unavailable"]["energy_j"]


def _cell_outcome(
    monkeypatch: pytest.MonkeyPatch, telemetry_s: float, interval_s: float = 0.1, warmup_s: float = 0.0
) -> dict[str, Any]:
    """A real cell in this process; NVML is whatever `_telemetry_sampler` the test set (a steady 100 W by default)."""
    from segbench.cell.passes import measure_cell
    from segbench.cell.request import CellRequest
    from segbench.models.registry import load_plugin
    from segbench.suite.matrix import CellSpec
    from segbench.suite.schema import Timing
    from tests.helpers import FAULT_PLUGIN

    load_plugin(FAULT_PLUGIN)
    timing = Timing(
        warmup_iters=1,
        warmup_s=warmup_s,
        min_iters=2,
        max_iters=100_000,
        min_time_s=0.2,
        max_time_s=2.0,
        memory_iters=1,
        telemetry_s=telemetry_s,
        telemetry_interval_s=interval_s,
    )
    return measure_cell(CellRequest(CellSpec("test-tiny", (16, 16), 1, "fp32", "eager"), "cpu", timing, 10.0, 1))


def _steady_100_w(device: torch.device) -> TelemetrySampler:
    return TelemetrySampler("handle", FakeNvml(power_w=[100.0]))


def _cell_telemetry(monkeypatch: pytest.MonkeyPatch, telemetry_s: float, interval_s: float = 0.1) -> dict[str, Any]:
    monkeypatch.setattr(cell_module, "_telemetry_sampler", _steady_100_w)
    return _cell_outcome(monkeypatch, telemetry_s, interval_s)["telemetry"]


def test_cell_telemetry_covers_its_own_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27 item 2: telemetry and energy come from a pass of their own, long enough for NVML's power averaging,
    with J/image over that pass's images."""
    telemetry = _cell_telemetry(monkeypatch, telemetry_s=1.2)
    assert telemetry["window_s"] >= 1.2 and telemetry["pass"]["seconds"] >= 1.2
    assert telemetry["samples"] >= 5  # sampled through the pass, not only at its ends
    assert telemetry["energy_j"] == pytest.approx(100.0 * telemetry["window_s"], rel=0.01)
    assert telemetry["joules_per_image"] == pytest.approx(telemetry["energy_j"] / telemetry["pass"]["iterations"])


def test_nothing_samples_beside_the_latency_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27 item 2: the NVML sampling thread ran inside the latency pass by default (0.1 s, 8-9 driver calls a
    tick); now no telemetry sample falls inside it, and the pass runs with the bare process's threads."""
    windows: list[tuple[float, float]] = []
    threads_in_pass: list[int] = []
    real_time_steps = cell_module.time_steps

    def watched_time_steps(*args: Any) -> Any:
        threads_in_pass.append(threading.active_count())
        started = time.monotonic()
        try:
            return real_time_steps(*args)
        finally:
            windows.append((started, time.monotonic()))

    samplers: list[TelemetrySampler] = []

    def recording_sampler(device: torch.device) -> TelemetrySampler:
        samplers.append(TelemetrySampler("handle", FakeNvml(power_w=[100.0])))
        return samplers[-1]

    monkeypatch.setattr(cell_module, "time_steps", watched_time_steps)
    monkeypatch.setattr(cell_module, "_telemetry_sampler", recording_sampler)
    before = threading.active_count()
    _cell_outcome(monkeypatch, telemetry_s=1.0, interval_s=0.05, warmup_s=0.3)
    (start, end), times = windows[0], [sample.t for sampler in samplers for sample in sampler.samples]
    assert len(times) > 10 and not [t for t in times if start < t < end]
    assert threads_in_pass == [before]


def test_interval_zero_samples_the_pass_ends_only(monkeypatch: pytest.MonkeyPatch) -> None:
    alone = _cell_telemetry(monkeypatch, telemetry_s=1.2, interval_s=0)
    assert alone["samples"] == 2  # the pass's start and end
    assert alone["energy_j"] == pytest.approx(100.0 * alone["window_s"], rel=0.01)  # energy still covers the pass


def test_cell_telemetry_under_a_second_is_null(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry = _cell_telemetry(monkeypatch, telemetry_s=0.05)
    assert telemetry["window_s"] < 1.0 and telemetry["energy_j"] is None and telemetry["power_w"] is None
    assert "under 1 s" in telemetry["unavailable"]["joules_per_image"]


def test_warm_up_says_whether_the_clocks_reached_steady_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27 item 4: warm-up counted iterations (5-10 launch-bound ones are ~30 ms while a consumer card's clocks
    ramp over hundreds); it now lasts warmup_s as well, and the SM clock it sampled says whether it settled."""
    ramp = [210, 600, 1100, 1500, 1700, 1800]
    monkeypatch.setattr(
        cell_module,
        "_telemetry_sampler",
        lambda device: TelemetrySampler("handle", FakeNvml(sm_clock_mhz=[*ramp, 1800, 1800, 1800])),
    )
    outcome = _cell_outcome(monkeypatch, telemetry_s=0.0, interval_s=0.02, warmup_s=0.4)
    warmup = outcome["latency_warmup"]
    assert warmup["seconds"] >= 0.4 and warmup["calls"] > 1
    assert warmup["clocks"]["steady"] is True and warmup["clocks"]["sm_clock_mhz"] == [1800, 1800, 1800]
    sampler = TelemetrySampler("handle", FakeNvml(sm_clock_mhz=ramp))
    for _ in ramp:
        sampler.sample()
    ramping = clocks_steady(sampler)
    assert ramping["steady"] is False and "raise timing.warmup_s" in ramping["reason"]
    assert clocks_steady(TelemetrySampler(None, FakeNvml(), unavailable="CPU cell: no GPU telemetry"))["steady"] is None
