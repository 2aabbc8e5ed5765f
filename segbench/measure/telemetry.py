"""GPU telemetry per cell from NVML: clocks, temperature, power, utilisation, energy, throttle reasons.

`TelemetrySampler.sample()` is called by a `SamplingThread` every 100 ms over the cell's telemetry pass (the
latency pass's step in a loop of its own, after it: nothing samples beside the headline loop; never on a CPU cell),
so it only reads NVML and appends one row. A window under 1 s gives nulls with the reason: NVML averages power over
about a second. Over the warm-up before the latency pass a sampler reads the SM clock, and `clocks_steady` says
whether it stopped ramping. `summary(images)` turns
the rows into min/mean/max per series, energy over the sampled window (the total-energy counter where the GPU
has one, else the integral of power) and joules per image, and the clock-throttle reasons seen, with
`throttled` set for thermal or power throttling. Without NVML (or on a CPU cell) every field is None and
`unavailable` says why.

All NVML calls go through an `NvmlApi` object, so tests drive the arithmetic with a fake one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from segbench.measure import nvml

if TYPE_CHECKING:  # only for annotations: the suite schema imports this module, and torch costs seconds
    import torch

# NVML enum values (nvml.h); stable across driver versions, so no pynvml import is needed to name them.
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2

# nvmlClocksEventReason* / nvmlClocksThrottleReason* bits (the same bits under both names).
CLOCK_EVENT_REASONS = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}
THERMAL_REASONS = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown"})
POWER_REASONS = frozenset({"sw_power_cap", "hw_power_brake_slowdown"})
# hw_slowdown is raised by over-temperature, an external power brake or a power-draw spike: either cause.
EITHER_REASONS = frozenset({"hw_slowdown"})

# NVML refreshes power roughly every 100 ms and averages it over about a second: shorter windows read noise.
MIN_WINDOW_S = 1.0
SAMPLE_INTERVAL_S = 0.1

SERIES = ("sm_clock_mhz", "memory_clock_mhz", "temperature_c", "power_w", "gpu_util_pct")
SUMMARY_FIELDS = (
    *SERIES,
    "energy_j",
    "energy_source",
    "joules_per_image",
    "throttle_reasons",
    "throttle_causes",
    "throttled",
    "throttled_share",
)


class NvmlApi(Protocol):
    """The NVML reads telemetry uses. Each returns None where the GPU or driver does not support it."""

    def unavailable_reason(self) -> str | None: ...
    def sm_clock_mhz(self, handle: Any) -> float | None: ...
    def memory_clock_mhz(self, handle: Any) -> float | None: ...
    def temperature_c(self, handle: Any) -> float | None: ...
    def power_w(self, handle: Any) -> float | None: ...
    def gpu_util_pct(self, handle: Any) -> float | None: ...
    def total_energy_mj(self, handle: Any) -> float | None: ...
    def clock_event_reasons(self, handle: Any) -> int | None: ...


class PynvmlApi:
    """NvmlApi over pynvml, through `segbench.measure.nvml` so nothing ever raises."""

    def unavailable_reason(self) -> str | None:
        return nvml.unavailable_reason()

    def sm_clock_mhz(self, handle: Any) -> float | None:
        return nvml.query(handle, "nvmlDeviceGetClockInfo", NVML_CLOCK_SM)

    def memory_clock_mhz(self, handle: Any) -> float | None:
        return nvml.query(handle, "nvmlDeviceGetClockInfo", NVML_CLOCK_MEM)

    def temperature_c(self, handle: Any) -> float | None:
        return nvml.query(handle, "nvmlDeviceGetTemperature", NVML_TEMPERATURE_GPU)

    def power_w(self, handle: Any) -> float | None:
        milliwatts = nvml.query(handle, "nvmlDeviceGetPowerUsage")
        return None if milliwatts is None else milliwatts / 1000.0

    def gpu_util_pct(self, handle: Any) -> float | None:
        rates = nvml.query(handle, "nvmlDeviceGetUtilizationRates")
        return None if rates is None else float(rates.gpu)

    def total_energy_mj(self, handle: Any) -> float | None:
        return nvml.query(handle, "nvmlDeviceGetTotalEnergyConsumption")  # Volta and newer

    def clock_event_reasons(self, handle: Any) -> int | None:
        # Drivers >= 535 call them "clocks event reasons"; older pynvml only has the throttle name.
        reasons = nvml.query(handle, "nvmlDeviceGetCurrentClocksEventReasons")
        return reasons if reasons is not None else nvml.query(handle, "nvmlDeviceGetCurrentClocksThrottleReasons")


def decode_reasons(mask: int) -> list[str]:
    """Names of the bits set in a clocks-event (throttle) bitmask; unknown bits as 'bit_0x...'."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    names += [f"bit_{1 << i:#x}" for i in range(64) if unknown & (1 << i)]
    return names


def throttle_causes(reasons: set[str] | list[str]) -> list[str]:
    """'thermal' and/or 'power' for the reasons that mean the clocks were cut to protect the card."""
    reasons = set(reasons)
    causes = set()
    if reasons & (THERMAL_REASONS | EITHER_REASONS):
        causes.add("thermal")
    if reasons & (POWER_REASONS | EITHER_REASONS):
        causes.add("power")
    return sorted(causes)


@dataclass(frozen=True)
class TelemetrySample:
    t: float
    sm_clock_mhz: float | None
    memory_clock_mhz: float | None
    temperature_c: float | None
    power_w: float | None
    gpu_util_pct: float | None
    energy_mj: float | None
    reasons: int | None


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values)}


def _power_integral_j(samples: list[TelemetrySample]) -> float | None:
    """Trapezoid rule over the power samples; None with fewer than two."""
    points = [(s.t, s.power_w) for s in samples if s.power_w is not None]
    if len(points) < 2:
        return None
    return sum((p0 + p1) / 2.0 * (t1 - t0) for (t0, p0), (t1, p1) in zip(points, points[1:]))


def energy_over(samples: list[TelemetrySample]) -> tuple[float | None, str | None, str | None]:
    """(joules, source, None) from the energy counter's delta, else the power integral; (None, None, reason)."""
    counter = [s.energy_mj for s in samples if s.energy_mj is not None]
    if len(counter) >= 2:
        return (counter[-1] - counter[0]) / 1000.0, "energy_counter", None
    integral = _power_integral_j(samples)
    if integral is not None:
        return integral, "power_integral", None
    return None, None, "no energy counter and fewer than two power samples"


def empty_summary(reason: str) -> dict[str, Any]:
    """Every telemetry field None, each with the same reason."""
    return {
        "samples": 0,
        "window_s": None,
        **dict.fromkeys(SUMMARY_FIELDS),
        "unavailable": dict.fromkeys(SUMMARY_FIELDS, reason),
    }


class TelemetrySampler:
    """Collects NVML telemetry rows; `sample()` is safe to call from the poller thread."""

    def __init__(
        self,
        handle: Any,
        api: NvmlApi | None = None,
        clock: Callable[[], float] = time.monotonic,
        unavailable: str | None = None,
    ):
        self.api = api or PynvmlApi()
        self.handle = handle
        self.clock = clock
        self.unavailable = (
            unavailable
            or self.api.unavailable_reason()
            or (None if handle is not None else "no NVML handle for this GPU")
        )
        self._samples: list[TelemetrySample] = []
        self._lock = threading.Lock()

    @classmethod
    def for_device(cls, device: torch.device, api: NvmlApi | None = None) -> TelemetrySampler:
        """A sampler for the cell's device; a disabled one (fields None with a reason) on a CPU."""
        if device.type != "cuda":
            return cls(None, api, unavailable="CPU cell: no GPU telemetry")
        api = api or PynvmlApi()
        reason = api.unavailable_reason()
        handle = None if reason else nvml.handle_for(device.index or 0)
        return cls(handle, api, unavailable=reason)

    @property
    def enabled(self) -> bool:
        return self.unavailable is None

    def sample(self) -> None:
        if not self.enabled:
            return
        api, handle = self.api, self.handle
        row = TelemetrySample(
            t=self.clock(),
            sm_clock_mhz=api.sm_clock_mhz(handle),
            memory_clock_mhz=api.memory_clock_mhz(handle),
            temperature_c=api.temperature_c(handle),
            power_w=api.power_w(handle),
            gpu_util_pct=api.gpu_util_pct(handle),
            energy_mj=api.total_energy_mj(handle),
            reasons=api.clock_event_reasons(handle),
        )
        with self._lock:
            self._samples.append(row)

    @property
    def samples(self) -> list[TelemetrySample]:
        with self._lock:
            return list(self._samples)

    def summary(self, images_processed: int | None, min_window_s: float = 0.0) -> dict[str, Any]:
        """Everything recorded over the sampled window; `images_processed` is the images run in that window.

        A window shorter than `min_window_s` gives every field None with the reason (its length is kept).
        """
        if not self.enabled:
            return empty_summary(str(self.unavailable))
        samples = self.samples
        if not samples:
            return empty_summary("no telemetry samples were taken")
        window_s = samples[-1].t - samples[0].t
        if window_s < min_window_s:
            short = empty_summary(
                f"the timed window lasted {window_s:.3f} s, under {min_window_s:g} s: shorter than NVML's power "
                "averaging, so clocks, power and energy would be noise (raise timing.telemetry_s)"
            )
            return {**short, "samples": len(samples), "window_s": window_s}
        out: dict[str, Any] = {"samples": len(samples), "window_s": window_s, "unavailable": {}}
        for name in SERIES:
            out[name] = _stats([getattr(s, name) for s in samples if getattr(s, name) is not None])
            if out[name] is None:
                out["unavailable"][name] = "not supported by this GPU or driver"
        out.update(self._energy(samples, images_processed, out["unavailable"]))
        out.update(self._throttling(samples, out["unavailable"]))
        return out

    @staticmethod
    def _energy(samples: list[TelemetrySample], images: int | None, unavailable: dict[str, str]) -> dict[str, Any]:
        joules, source, reason = energy_over(samples)
        per_image = joules / images if joules is not None and images else None
        if reason:
            unavailable.update(energy_j=reason, energy_source=reason, joules_per_image=reason)
        elif per_image is None:
            unavailable["joules_per_image"] = "no images processed in the window"
        return {"energy_j": joules, "energy_source": source, "joules_per_image": per_image}

    @staticmethod
    def _throttling(samples: list[TelemetrySample], unavailable: dict[str, str]) -> dict[str, Any]:
        masks = [s.reasons for s in samples if s.reasons is not None]
        if not masks:
            reason = "clock event (throttle) reasons not supported by this GPU or driver"
            unavailable.update(
                dict.fromkeys(("throttle_reasons", "throttle_causes", "throttled", "throttled_share"), reason)
            )
            return dict.fromkeys(("throttle_reasons", "throttle_causes", "throttled", "throttled_share"))
        seen = sorted({name for mask in masks for name in decode_reasons(mask)})
        causes = throttle_causes(seen)
        throttled_samples = sum(1 for mask in masks if throttle_causes(decode_reasons(mask)))
        return {
            "throttle_reasons": seen,
            "throttle_causes": causes,
            "throttled": bool(causes),
            "throttled_share": throttled_samples / len(masks),
        }


STEADY_TAIL = 3  # the last SM clock samples of a warm-up that must agree
STEADY_TOLERANCE = 0.03  # within 3 % of their highest: no longer ramping


def clocks_steady(sampler: TelemetrySampler) -> dict[str, Any]:
    """Whether the SM clock reached steady state over a warm-up: its last STEADY_TAIL samples within STEADY_TOLERANCE
    of their highest. `steady` is None with the reason where it cannot be told (a CPU, no NVML, too short)."""
    if not sampler.enabled:
        return {"steady": None, "reason": str(sampler.unavailable)}
    clocks = [s.sm_clock_mhz for s in sampler.samples if s.sm_clock_mhz is not None]
    if len(clocks) < STEADY_TAIL:
        return {
            "steady": None,
            "reason": f"{len(clocks)} SM clock sample(s) over the warm-up, under {STEADY_TAIL}: raise timing.warmup_s",
        }
    tail = clocks[-STEADY_TAIL:]
    spread = (max(tail) - min(tail)) / max(tail) if max(tail) > 0 else 0.0
    steady = spread <= STEADY_TOLERANCE
    reason = None if steady else (
        f"the SM clock still moved {spread:.0%} over the warm-up's last {STEADY_TAIL} samples "
        f"({', '.join(f'{c:.0f}' for c in tail)} MHz): raise timing.warmup_s"
    )  # fmt: skip
    return {"steady": steady, "sm_clock_mhz": tail, "spread": spread, "reason": reason}


class SamplingThread:
    """Samples once at the start, every `interval_s` on a daemon thread, and once at the end of a `with` block.

    The thread sleeps on an Event between reads (no busy loop), and never starts for a disabled
    sampler (a CPU cell) or an interval of 0, so such a timed loop runs with nothing beside it.
    """

    def __init__(self, sampler: TelemetrySampler, interval_s: float = SAMPLE_INTERVAL_S):
        self.sampler = sampler
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sampler.sample()

    def __enter__(self) -> Self:
        self.sampler.sample()
        if self.sampler.enabled and self.interval_s > 0:  # 0: the pass's two ends only, nothing beside the loop
            self._thread = threading.Thread(target=self._run, name="segbench-telemetry", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sampler.sample()


# ---- cooldown between cells ------------------------------------------------------------------------


class CooldownConfig(BaseModel):
    """Suite `cooldown:` wait before each cell: a fixed time, then until the GPU is below a temperature (capped by
    timeout_s)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    below_c: Annotated[float, Field(gt=0, le=120)] | None = None
    fixed_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 300.0

    @model_validator(mode="after")
    def _something_to_wait_for(self) -> CooldownConfig:
        if self.below_c is None and self.fixed_s is None:
            raise ValueError("cooldown needs below_c (a temperature in °C) or fixed_s (seconds), or both")
        return self


def wait_for_cooldown(
    handle: Any,
    below_c: float | None = None,
    fixed_s: float | None = None,
    timeout_s: float = 300.0,
    *,
    api: NvmlApi | None = None,
    poll_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Sleep `fixed_s`, then poll until the GPU is below `below_c` or `timeout_s` has passed since the start.

    GPU only: with no handle (a CPU run) it returns at once with a note. Returns what happened,
    for the cell's record: seconds waited, temperatures before and after, whether the target was reached.
    """
    result: dict[str, Any] = {"waited_s": 0.0, "start_c": None, "end_c": None, "reached": None, "note": None}
    if handle is None:
        result["note"] = "no cooldown: not a GPU cell"
        return result
    if below_c is None and not fixed_s:
        result["note"] = "no cooldown configured"
        return result
    api = api or PynvmlApi()
    started = clock()
    result["start_c"] = api.temperature_c(handle)
    if fixed_s:
        sleep(min(fixed_s, timeout_s))
    if below_c is not None:
        temperature = api.temperature_c(handle)
        if temperature is None:
            result["note"] = "GPU temperature unreadable through NVML; waited the fixed time only"
        while temperature is not None and temperature >= below_c and clock() - started < timeout_s:
            sleep(min(poll_s, max(0.0, timeout_s - (clock() - started))))
            temperature = api.temperature_c(handle)
        result["reached"] = temperature is not None and temperature < below_c
        if temperature is not None and not result["reached"]:
            result["note"] = f"still {temperature:g} °C after timeout_s={timeout_s:g}; the cell ran anyway"
    result["end_c"] = api.temperature_c(handle)
    result["waited_s"] = clock() - started
    return result
