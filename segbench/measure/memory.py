"""Peak-memory sampling: a background poller (NVML on GPUs, RSS via psutil everywhere) plus the torch allocator.

The poller runs only during the memory pass, never while latency is measured, so it cannot disturb timing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil
import torch

from segbench.measure import nvml

MB = 1024 * 1024


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


class MemoryPoller:
    """Polls RSS (and NVML device/process memory on a GPU) every `interval_ms` in a daemon thread."""

    def __init__(self, device: torch.device, interval_ms: float = 10.0, on_sample: Callable[[], None] | None = None):
        self.device = device
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
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def baseline_mb(device: torch.device) -> float | None:
    """Memory in use before the model loads: NVML process memory after CUDA context creation, or RSS on a CPU."""
    if device.type == "cuda":
        handle = nvml.handle_for(device.index or 0)
        return nvml.process_used_mb(handle) if handle is not None else None
    return psutil.Process().memory_info().rss / MB


def reset_allocator_peaks(device: torch.device) -> None:
    """Start the memory pass from this cell's own working set: blocks cached by earlier phases (the FLOP count
    on the fp32 model, the fp32 weights a precision replaced, the latency pass) go back to the driver first,
    or they would stay in the allocator's reserved peak and in NVML's process figure (measured on an H100:
    SegFormer-B2 fp16 at 1024 showed fp32's 2,188 MiB reserved against 1,085 MiB allocated)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def collect_peaks(poller: MemoryPoller, device: torch.device, baseline: float | None, weights_mb: float) -> MemoryPeaks:
    peaks = MemoryPeaks(rss_peak=poller.rss_peak, baseline=baseline, weights=weights_mb)
    if device.type == "cuda":
        peaks.torch_allocated_peak = torch.cuda.max_memory_allocated(device) / MB
        peaks.torch_reserved_peak = torch.cuda.max_memory_reserved(device) / MB
        peaks.nvml_device_peak = poller.device_peak
        peaks.nvml_process_peak = poller.process_peak
        reason = nvml.unavailable_reason()
        if reason:
            peaks.unavailable.update(nvml_device_peak=reason, nvml_process_peak=reason)
        elif poller.process_peak is None:
            peaks.unavailable["nvml_process_peak"] = (
                "NVML lists no memory for this process (e.g. inside some containers)"
            )
    else:
        reason = "CPU cell: no GPU memory"
        for name in ("nvml_device_peak", "nvml_process_peak", "torch_allocated_peak", "torch_reserved_peak"):
            peaks.unavailable[name] = reason
    return peaks


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
