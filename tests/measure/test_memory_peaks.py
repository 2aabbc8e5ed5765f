"""Peaks that could be missed or dropped (issue 27 item 6): the kernel's RSS high-water mark instead of a 10 ms
poll, NVML's host PIDs mapped through NSpid, the device-used delta with its reason, and the allocator's state at the
peak (item 3)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from segbench.measure import memory, nvml

MB = 1024 * 1024


def _fake_proc(tmp_path: Path, hwm_kb: int, nspid: str = "17") -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "clear_refs").write_text("")
    (proc / "status").write_text(f"Name:\tpython\nNSpid:\t{nspid}\nVmHWM:\t  {hwm_kb} kB\nVmRSS:\t  1024 kB\n")
    return proc


def test_the_rss_peak_is_the_kernels_high_water_mark_reset_at_the_pass_start(tmp_path: Path) -> None:
    """The poller sampled RSS every 10 ms, so a spike between two samples was missed; the pass now resets VmHWM
    (writes 5 to clear_refs) on entry and reads it on exit."""
    proc = _fake_proc(tmp_path, hwm_kb=3 * 1024 * 1024)
    with memory.MemoryPoller(torch.device("cpu"), interval_ms=10_000, proc=proc) as poller:
        pass
    assert (proc / "clear_refs").read_text() == "5"
    peaks = memory.collect_peaks(poller, torch.device("cpu"), memory.Baseline(100.0, "RSS"), 1.0)
    assert peaks.rss_peak == pytest.approx(3 * 1024) and peaks.sources["rss_peak"].startswith("VmHWM")


def test_without_clear_refs_the_poller_is_the_fallback_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-proc"
    with memory.MemoryPoller(torch.device("cpu"), interval_ms=10_000, proc=missing) as poller:
        pass
    peaks = memory.collect_peaks(poller, torch.device("cpu"), memory.Baseline(100.0, "RSS"), 1.0)
    assert peaks.rss_peak == poller.rss_peak and "cannot reset VmHWM" in peaks.sources["rss_peak"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_a_spike_between_two_polls_is_caught() -> None:
    """Real /proc: 256 MiB touched and freed inside a pass whose poller never ticks reads in the peak."""
    with memory.MemoryPoller(torch.device("cpu"), interval_ms=60_000) as poller:
        before = poller.rss_peak or 0.0
        spike = np.ones(256 * MB, dtype=np.uint8)
        del spike
    if poller.high_water_unavailable:
        pytest.skip(poller.high_water_unavailable)
    peaks = memory.collect_peaks(poller, torch.device("cpu"), memory.Baseline(None), 0.0)
    assert peaks.rss_peak is not None and peaks.rss_peak >= before + 200


def test_nvml_host_pids_are_matched_through_nspid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a PID namespace NVML reports host PIDs, so os.getpid() matched none and the per-process peak became
    None; the NSpid entries of /proc/self/status now count as this process's PIDs."""
    proc = _fake_proc(tmp_path, 1024, nspid="48213\t17")
    pids = nvml.own_pids(proc / "status")
    assert {48213, 17} <= pids
    listed = [SimpleNamespace(pid=999, usedGpuMemory=10 * MB), SimpleNamespace(pid=48213, usedGpuMemory=700 * MB)]
    fake = SimpleNamespace(nvmlDeviceGetComputeRunningProcesses=lambda handle: listed)
    monkeypatch.setattr(nvml, "_init", lambda: (fake, None))
    assert nvml.process_used_mb("handle", pids) == pytest.approx(700.0)
    assert nvml.process_used_mb("handle", frozenset({17})) is None  # the container's PID alone: not listed


class _Poller:
    def __init__(self, device_peak: float | None, process_peak: float | None) -> None:
        self.device_peak, self.process_peak = device_peak, process_peak


def test_without_this_process_in_nvml_the_device_used_delta_stands_in_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nvml, "_init", lambda: (SimpleNamespace(), None))
    peaks = memory.MemoryPeaks()
    memory._nvml_peaks(_Poller(9000.0, None), memory.Baseline(None, None, 1000.0), peaks, occupied_mb=0.0)  # type: ignore[arg-type]
    assert peaks.nvml_process_peak == pytest.approx(8000.0)
    assert "PID namespace" in peaks.sources["nvml_process_peak"] and "nvml_process_peak" not in peaks.unavailable
    # A budget's raw allocation is counted by NVML in this process: it is taken out again.
    budgeted = memory.MemoryPeaks()
    memory._nvml_peaks(_Poller(60000.0, 50000.0), memory.Baseline(600.0), budgeted, occupied_mb=48000.0)  # type: ignore[arg-type]
    assert budgeted.nvml_process_peak == pytest.approx(2000.0) and budgeted.nvml_device_peak == pytest.approx(12000.0)
    nothing = memory.MemoryPeaks()
    memory._nvml_peaks(_Poller(None, None), memory.Baseline(None), nothing, occupied_mb=0.0)  # type: ignore[arg-type]
    assert nothing.nvml_process_peak is None and "PID namespace" in nothing.unavailable["nvml_process_peak"]


def test_the_allocators_state_at_the_peak_is_attributed() -> None:
    """Issue 27 item 3: YOLOv8x-seg fp32 peaked at 3,617 MiB allocated against 231 MiB in fp16 with nothing to say
    what it was; memory_stats() at the peak and the transient above the pass's start (activations and workspaces)
    are recorded."""
    stats: dict[str, Any] = {
        "allocated_bytes.all.peak": 3617 * MB,
        "reserved_bytes.all.peak": 3700 * MB,
        "requested_bytes.all.peak": 3600 * MB,
        "num_alloc_retries": 0,
        "num_ooms": 0,
    }
    at_peak = memory.allocator_at_peak(stats, allocated_at_start_mb=300.0)
    assert at_peak["allocated_peak"] == pytest.approx(3617) and at_peak["reserved_peak"] == pytest.approx(3700)
    assert at_peak["transient_peak"] == pytest.approx(3317) and at_peak["requested_peak"] == pytest.approx(3600)
