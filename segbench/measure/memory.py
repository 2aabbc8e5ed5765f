"""Peak-memory sampling: a background poller (NVML on GPUs, RSS via psutil everywhere) plus the torch allocator.

The poller runs only during the memory pass, never while latency is measured, so it cannot disturb timing. The RSS
peak is the kernel's own high-water mark (VmHWM, reset at the pass's start through /proc/self/clear_refs): exact,
where a 10 ms poll misses a short spike; the poller's figure is the fallback where the mark cannot be reset.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
import torch

from segbench.measure import nvml

MB = 1024 * 1024
PROC_SELF = Path("/proc/self")
# torch.cuda.memory_stats() entries recorded at the pass's peak (bytes), so a workspace or fragmentation shows as
# what it is: requested is what tensors asked for, allocated what the allocator rounded it to, reserved what it holds.
ALLOCATOR_PEAK_STATS = {
    "allocated_peak": "allocated_bytes.all.peak",
    "reserved_peak": "reserved_bytes.all.peak",
    "requested_peak": "requested_bytes.all.peak",
    "active_peak": "active_bytes.all.peak",
    "inactive_split_peak": "inactive_split_bytes.all.peak",
    "large_pool_allocated_peak": "allocated_bytes.large_pool.peak",
    "small_pool_allocated_peak": "allocated_bytes.small_pool.peak",
}


@dataclass
class MemoryPeaks:
    """Peak figures in MiB; None where the source is unavailable (the reason sits in `unavailable`)."""

    nvml_device_peak: float | None = None
    nvml_process_peak: float | None = None
    torch_allocated_peak: float | None = None
    torch_reserved_peak: float | None = None
    rss_peak: float | None = None
    baseline: float | None = None
    weights: float | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # where a figure comes from, when it has more than one way
    allocator: dict[str, float] | None = None  # memory_stats() at the peak (MiB), see ALLOCATOR_PEAK_STATS

    def to_dict(self) -> dict[str, Any]:
        return {
            "nvml_device_peak": self.nvml_device_peak,
            "nvml_process_peak": self.nvml_process_peak,
            "torch_allocated_peak": self.torch_allocated_peak,
            "torch_reserved_peak": self.torch_reserved_peak,
            "rss_peak": self.rss_peak,
            "baseline": self.baseline,
            "weights": self.weights,
        }


def _max(current: float | None, value: float | None) -> float | None:
    if value is None:
        return current
    return value if current is None else max(current, value)


def reset_rss_high_water(proc: Path = PROC_SELF) -> str | None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (`echo 5 > clear_refs`); None on success, else why
    it could not."""
    try:
        (proc / "clear_refs").write_text("5", encoding="ascii")
    except OSError as exc:
        return f"cannot reset VmHWM ({proc / 'clear_refs'}: {exc.strerror or exc})"
    return None


def rss_high_water_mb(proc: Path = PROC_SELF) -> float | None:
    """VmHWM from the status file (kB), in MiB; None where there is none (not Linux)."""
    try:
        lines = (proc / "status").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024
    return None


class MemoryPoller:
    """Polls RSS (and NVML device/process memory on a GPU) every `interval_ms` in a daemon thread; on entry it resets
    the kernel's RSS high-water mark, on exit reads it (`rss_high_water`, None where it could not be reset)."""

    def __init__(
        self,
        device: torch.device,
        interval_ms: float = 10.0,
        on_sample: Callable[[], None] | None = None,
        proc: Path = PROC_SELF,
    ):
        self.device = device
        self.proc = proc
        self.rss_high_water: float | None = None
        self.high_water_unavailable: str | None = None
        self.interval_s = interval_ms / 1000.0
        self.process = psutil.Process()
        self.handle = nvml.handle_for(device.index or 0) if device.type == "cuda" else None
        self.rss_peak: float | None = None
        self.device_peak: float | None = None
        self.process_peak: float | None = None
        self.on_sample = on_sample  # e.g. NVML telemetry, sampled on the same clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="segbench-memory-poller", daemon=True)

    def sample(self) -> None:
        self.rss_peak = _max(self.rss_peak, self.process.memory_info().rss / MB)
        if self.handle is not None:
            self.device_peak = _max(self.device_peak, nvml.device_used_mb(self.handle))
            self.process_peak = _max(self.process_peak, nvml.process_used_mb(self.handle))
        if self.on_sample is not None:
            self.on_sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemoryPoller:
        self.high_water_unavailable = reset_rss_high_water(self.proc)
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        if self.high_water_unavailable is None:
            self.rss_high_water = rss_high_water_mb(self.proc)
            if self.rss_high_water is None:
                self.high_water_unavailable = f"no VmHWM line in {self.proc / 'status'}"


def device_used_mb(device: torch.device) -> float | None:
    """NVML's memory in use on the whole card (every process): the fallback where this process's own is not listed."""
    if device.type != "cuda":
        return None
    handle = nvml.handle_for(device.index or 0)
    return nvml.device_used_mb(handle) if handle is not None else None


DEVICE_DELTA = (
    "the card's used memory minus its figure before this cell's CUDA context: NVML lists none of this process's PIDs "
    "(a PID namespace: NVML reports host PIDs, and NSpid did not show this one's), so other processes' changes count"
)


@dataclass(frozen=True)
class Baseline:
    """Memory in use before the model loads: NVML process memory after CUDA context creation (or the card's used delta
    since before it, inside a PID namespace), or RSS on a CPU; `device_before_context` is the card's used figure before
    this process made its context."""

    mb: float | None
    source: str | None = None
    device_before_context: float | None = None


def baseline_mb(device: torch.device, device_before_context: float | None = None) -> Baseline:
    if device.type != "cuda":
        return Baseline(psutil.Process().memory_info().rss / MB, "RSS")
    handle = nvml.handle_for(device.index or 0)
    own = nvml.process_used_mb(handle) if handle is not None else None
    if own is not None:
        return Baseline(own, "NVML process", device_before_context)
    used = nvml.device_used_mb(handle) if handle is not None else None
    if used is None or device_before_context is None:
        return Baseline(None, None, device_before_context)
    return Baseline(used - device_before_context, DEVICE_DELTA, device_before_context)


def reset_allocator_peaks(device: torch.device) -> float:
    """Start the memory pass from this cell's own working set: blocks cached by earlier phases (the FLOP count
    on the fp32 model, the fp32 weights a precision replaced, the latency pass) go back to the driver first,
    or they would stay in the allocator's reserved peak and in NVML's process figure (measured on an H100:
    SegFormer-B2 fp16 at 1024 showed fp32's 2,188 MiB reserved against 1,085 MiB allocated). Returns the MiB
    allocated at the pass's start (weights and inputs), 0 on a CPU."""
    if device.type != "cuda":
        return 0.0
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / MB


def allocator_at_peak(stats: dict[str, Any], allocated_at_start_mb: float) -> dict[str, float]:
    """memory_stats() entries at the peak in MiB, plus `transient_peak`: the peak minus what was allocated at the pass's
    start (activations and the cuDNN/cuBLAS workspaces the allocator served), and `retries`/`ooms` as counts."""
    out = {name: stats[key] / MB for name, key in ALLOCATOR_PEAK_STATS.items() if key in stats}
    out["allocated_at_start"] = allocated_at_start_mb
    if "allocated_peak" in out:
        out["transient_peak"] = out["allocated_peak"] - allocated_at_start_mb
    out["alloc_retries"] = float(stats.get("num_alloc_retries", 0))
    out["ooms"] = float(stats.get("num_ooms", 0))
    return out


def _rss_peak(poller: MemoryPoller, peaks: MemoryPeaks) -> None:
    if poller.rss_high_water is not None:
        peaks.rss_peak = _max(poller.rss_high_water, poller.rss_peak)
        peaks.sources["rss_peak"] = "VmHWM (the kernel's high-water mark, reset at the pass's start)"
    else:
        peaks.rss_peak = poller.rss_peak
        peaks.sources["rss_peak"] = f"polled every {poller.interval_s * 1000:g} ms: {poller.high_water_unavailable}"


def collect_peaks(
    poller: MemoryPoller,
    device: torch.device,
    baseline: Baseline,
    weights_mb: float,
    allocated_at_start_mb: float = 0.0,
    occupied_mb: float = 0.0,
) -> MemoryPeaks:
    """The pass's peaks; `occupied_mb` (what a budget holds outside every allocator) is taken out of NVML's figures."""
    peaks = MemoryPeaks(baseline=baseline.mb, weights=weights_mb)
    _rss_peak(poller, peaks)
    if baseline.source:
        peaks.sources["baseline"] = baseline.source
    if device.type != "cuda":
        reason = "CPU cell: no GPU memory"
        for name in ("nvml_device_peak", "nvml_process_peak", "torch_allocated_peak", "torch_reserved_peak"):
            peaks.unavailable[name] = reason
        return peaks
    peaks.torch_allocated_peak = torch.cuda.max_memory_allocated(device) / MB
    peaks.torch_reserved_peak = torch.cuda.max_memory_reserved(device) / MB
    peaks.allocator = allocator_at_peak(torch.cuda.memory_stats(device), allocated_at_start_mb)
    _nvml_peaks(poller, baseline, peaks, occupied_mb)
    return peaks


def _nvml_peaks(poller: MemoryPoller, baseline: Baseline, peaks: MemoryPeaks, occupied_mb: float) -> None:
    reason = nvml.unavailable_reason()
    if reason:
        peaks.unavailable.update(nvml_device_peak=reason, nvml_process_peak=reason)
        return
    if poller.device_peak is not None:
        peaks.nvml_device_peak = poller.device_peak - occupied_mb
    if poller.process_peak is not None:
        peaks.nvml_process_peak = poller.process_peak - occupied_mb
        peaks.sources["nvml_process_peak"] = "NVML, this process (its PID or an NSpid entry)"
    elif poller.device_peak is not None and baseline.device_before_context is not None:
        peaks.nvml_process_peak = poller.device_peak - baseline.device_before_context - occupied_mb
        peaks.sources["nvml_process_peak"] = DEVICE_DELTA
    else:
        peaks.unavailable["nvml_process_peak"] = (
            "NVML lists none of this process's PIDs (a PID namespace) and the card's used memory before the "
            "context is unknown"
        )
    if occupied_mb:
        peaks.sources["nvml_device_peak"] = f"NVML, minus the {occupied_mb:.0f} MiB the budget occupies"


def stored_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor really stores: a wrapper subclass (torchao's Int8Tensor reports dtype float32) counts its inner
    tensors."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()
        return sum(stored_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def module_size_mb(module: torch.nn.Module) -> float:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(stored_bytes(t) for t in tensors) / MB
