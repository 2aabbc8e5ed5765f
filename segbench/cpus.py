"""The CPUs this process may actually use, and how busy the machine is.

`psutil.cpu_count()` counts the machine's CPUs, not the ones a container or `taskset` leaves the
process: a cell pinned to 2 CPUs of a 64-core host would start 64 threads on 2 cores. Here the
affinity mask and the cgroup CPU quota decide, and SMT siblings are counted once (one thread per
physical core, as the previous default did on a whole machine).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

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


def _busy_seconds(times: Any) -> float:
    """CPU-seconds spent working (everything but idle and I/O wait) in a psutil cpu_times() result."""
    return sum(value for name, value in times._asdict().items() if name not in ("idle", "iowait"))


def _own_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


OTHERS_TOLERANCE_CPUS = 0.5  # daemons, the parent's wait, a shell: less than this never counts as contention


class ContentionWindow:
    """Load, CPU frequency and other processes' CPU use around a cell's timed passes.

    The flag compares what other processes used (all CPU-seconds on the machine minus this
    process's, over the window's wall time) with what the machine had to spare beyond the
    cell's own threads: a cell timed while others needed those cores is "contended".
    """

    def __init__(self, threads: int, machine_cpus: int | None = None):
        self.threads = threads
        self.machine_cpus = machine_cpus or psutil.cpu_count(logical=True) or 1
        self.process = psutil.Process()
        self.before: LoadSnapshot | None = None
        self.after: LoadSnapshot | None = None
        self._start: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.others_cpus: float | None = None

    def __enter__(self) -> Self:
        self.before = load_snapshot()
        self._start = (time.perf_counter(), _busy_seconds(psutil.cpu_times()), _own_seconds(self.process))
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._start[0]
        busy = _busy_seconds(psutil.cpu_times()) - self._start[1]
        own = _own_seconds(self.process) - self._start[2]
        self.after = load_snapshot()
        self.others_cpus = max(0.0, busy - own) / wall if wall > 0 else None

    @property
    def spare_cpus(self) -> float:
        return max(0.0, self.machine_cpus - self.threads)

    @property
    def reason(self) -> str | None:
        """Why the cell counts as contended, or None."""
        if self.others_cpus is None or self.others_cpus <= self.spare_cpus + OTHERS_TOLERANCE_CPUS:
            return None
        load = ""
        if self.before and self.after and self.before.load_1m is not None and self.after.load_1m is not None:
            load = f"; 1-min load {self.before.load_1m:.2f} → {self.after.load_1m:.2f}"
        return (
            f"other processes used {self.others_cpus:.2f} CPUs while it was timed; the machine's {self.machine_cpus} "
            f"CPUs leave {self.spare_cpus:g} beside the cell's {self.threads} threads{load}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict() if self.after else None,
            "others_cpus": self.others_cpus,
            "machine_cpus": self.machine_cpus,
            "threads": self.threads,
        }


def threads_for_cpus(cpus: float, topology: Path = CPU_TOPOLOGY) -> int:
    """Threads for a task given `cpus` logical CPUs by a scheduler that counts SMT siblings (Ray does).

    One thread per physical core's worth: on a 2-way SMT node 8 logical CPUs are 4 cores, so 4
    threads, and two such tasks on a 16-CPU node never share a core. Capped by what this process may use.
    """
    allowed = affinity()
    per_core = len(allowed) / max(1, physical_cores_of(allowed, topology))
    return max(1, min(int(cpus / per_core), default_threads(topology=topology)))
