"""NVML access through nvidia-ml-py (`pynvml`), which is absent or failing on many machines.

Every function returns None instead of raising, and `unavailable_reason()` says why, so a missing
driver turns into `null` fields with a reason, never a crash.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

MB = 1024 * 1024


@functools.lru_cache(maxsize=1)
def _init() -> tuple[Any | None, str | None]:
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError subclasses vary by driver; any failure means "no NVML here"
        return None, f"NVML unavailable: {exc}"
    return pynvml, None


def module() -> Any | None:
    """The initialised pynvml module, or None where NVML is unavailable."""
    return _init()[0]


def unavailable_reason() -> str | None:
    return _init()[1]


def handle_for(cuda_index: int) -> Any | None:
    """NVML handle of a CUDA device, matched by PCI bus id (CUDA and NVML may order devices differently)."""
    pynvml, _ = _init()
    if pynvml is None:
        return None
    try:
        import torch

        props = torch.cuda.get_device_properties(cuda_index)
        bus_id = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        return pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)
    except Exception:
        try:
            return pynvml.nvmlDeviceGetHandleByIndex(cuda_index)
        except Exception:
            return None


def device_used_mb(handle: Any) -> float | None:
    pynvml, _ = _init()
    try:
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / MB
    except Exception:
        return None


def own_pids(status_file: Path = Path("/proc/self/status")) -> frozenset[int]:
    """Every PID this process has: os.getpid() and the `NSpid` line's one per PID namespace it is a member of.

    NVML reports PIDs as the driver sees them (the host's namespace); inside a container os.getpid() is the
    container's. Where the status file shows the outer namespaces too, one of its NSpid entries is the host's PID.
    """
    pids = {os.getpid()}
    try:
        lines = status_file.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return frozenset(pids)
    for line in lines:
        if line.startswith("NSpid:"):
            pids.update(int(field) for field in line.split()[1:] if field.isdigit())
    return frozenset(pids)


@functools.lru_cache(maxsize=4)
def _pids_of(pid: int) -> frozenset[int]:
    """own_pids() read once per process (keyed by PID: a forked cell must not inherit its template's)."""
    return own_pids()


def process_used_mb(handle: Any, pids: frozenset[int] | None = None) -> float | None:
    """This process's GPU memory as NVML sees it (context + allocator + libraries); None when NVML lists none of
    its PIDs (inside a PID namespace whose host PID is not visible here)."""
    pynvml, _ = _init()
    pids = _pids_of(os.getpid()) if pids is None else pids
    try:
        processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:
        return None
    for process in processes:
        if process.pid in pids and process.usedGpuMemory is not None:
            return process.usedGpuMemory / MB
    return None


def query(handle: Any, function: str, *args: Any) -> Any | None:
    """Call any `nvmlDevice*` getter by name; None where the GPU or driver does not support it."""
    pynvml, _ = _init()
    try:
        return getattr(pynvml, function)(handle, *args)
    except Exception:
        return None
