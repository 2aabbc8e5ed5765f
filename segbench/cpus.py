"""The CPUs this process may actually use, and how busy the machine is.

`psutil.cpu_count()` counts the machine's CPUs, not the ones a container or `taskset` leaves the
process: a cell pinned to 2 CPUs of a 64-core host would start 64 threads on 2 cores. Here the
affinity mask and the cgroup CPU quota decide, and SMT siblings are counted once (one thread per
physical core, as the previous default did on a whole machine).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")


def affinity() -> set[int]:
    """The logical CPUs this process may be scheduled on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: every CPU
        return set(range(psutil.cpu_count(logical=True) or 1))


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup allows (cgroup v2 cpu.max or v1 cfs quota); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def physical_cores_of(cpus: set[int], topology: Path = CPU_TOPOLOGY) -> int:
    """How many distinct physical cores the logical CPUs belong to (SMT siblings count once)."""
    cores = set()
    for cpu in cpus:
        base = topology / f"cpu{cpu}" / "topology"
        try:
            cores.add(((base / "physical_package_id").read_text().strip(), (base / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))  # topology unknown: count the logical CPU
    return len(cores)


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """Logical CPUs this process may run on: its affinity, capped by the cgroup quota (rounded up)."""
    count = len(affinity())
    quota = cgroup_quota(root)
    return max(1, min(count, math.ceil(quota)) if quota else count)


def default_threads(root: Path = CGROUP_ROOT, topology: Path = CPU_TOPOLOGY) -> int:
    """Threads for a cell with no `threads:`: one per physical core it may use, within the cgroup quota."""
    cores = physical_cores_of(affinity(), topology)
    return max(1, min(cores, usable_cpus(root)))


@dataclass(frozen=True)
class LoadSnapshot:
    """The machine's 1-minute load average and CPU frequency at one moment."""

    load_1m: float | None
    cpu_mhz: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"load_1m": self.load_1m, "cpu_mhz": self.cpu_mhz}


def load_snapshot() -> LoadSnapshot:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    try:
        frequency = psutil.cpu_freq()
        mhz = float(frequency.current) if frequency and frequency.current else None
    except (OSError, NotImplementedError, AttributeError):
        mhz = None
    return LoadSnapshot(load, mhz)
