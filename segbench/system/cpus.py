"""The CPUs this process may actually use, and how busy the machine is.

`psutil.cpu_count()` counts the machine's CPUs, not the ones a container or `taskset` leaves the
process: a cell pinned to 2 CPUs of a 64-core host would start 64 threads on 2 cores. Here the
affinity mask and the cgroup CPU quota decide, and SMT siblings are counted once (one thread per
physical core, as the previous default did on a whole machine).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


def cores_of(cpus: set[int], topology: Path = CPU_TOPOLOGY) -> dict[tuple[str, str], list[int]]:
    """The logical CPUs grouped by the physical core they belong to (SMT siblings share one), each list sorted."""
    cores: dict[tuple[str, str], list[int]] = {}
    for cpu in sorted(cpus):
        base = topology / f"cpu{cpu}" / "topology"
        try:
            core = ((base / "physical_package_id").read_text().strip(), (base / "core_id").read_text().strip())
        except OSError:
            core = ("cpu", str(cpu))  # topology unknown: the logical CPU counts as a core
        cores.setdefault(core, []).append(cpu)
    return cores


def physical_cores_of(cpus: set[int], topology: Path = CPU_TOPOLOGY) -> int:
    """How many distinct physical cores the logical CPUs belong to (SMT siblings count once)."""
    return len(cores_of(cpus, topology))


def logical_per_core(cpus: set[int] | None = None, topology: Path = CPU_TOPOLOGY) -> float:
    """Logical CPUs per physical core among `cpus` (default: this process's): 2.0 on a 2-way SMT machine."""
    allowed = affinity() if cpus is None else cpus
    return len(allowed) / max(1, physical_cores_of(allowed, topology))


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
    return max(1, min(int(cpus / logical_per_core(topology=topology)), default_threads(topology=topology)))


CLAIMS_FILE = Path(tempfile.gettempdir()) / "segbench-core-claims.json"


@dataclass(frozen=True)
class CoreClaim:
    """Physical cores one task holds on this machine: `cpus` (one logical CPU per core) to pin its threads to."""

    cpus: tuple[int, ...] | None  # None: not pinned, `reason` says why
    reason: str | None = None
    token: str | None = None


def _live_claims(path: Path) -> list[dict[str, Any]]:
    try:
        claims = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return []
    return [c for c in claims if isinstance(c, dict) and psutil.pid_exists(int(c.get("pid", -1)))]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # POSIX only; the caller reports a machine without it as "not pinned"

    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def claim_cores(
    threads: int, allowed: set[int] | None = None, claims_file: Path = CLAIMS_FILE, topology: Path = CPU_TOPOLOGY
) -> CoreClaim:
    """`threads` distinct physical cores that no other live task on this machine has claimed.

    Ray reserves CPUs as counts and pins nothing, so tasks side by side on one node would let the OS put
    two cells' threads on one core (or on SMT siblings). The claims live in a file shared by every
    process on the machine, under a lock; a claim whose process died no longer counts. All siblings of a
    claimed core are claimed, and the cell is pinned to one logical CPU per core.
    """
    if not hasattr(psutil.Process, "cpu_affinity"):
        return CoreClaim(None, "this OS does not let a process pin its threads (no CPU affinity)")
    cores = cores_of(affinity() if allowed is None else allowed, topology)
    try:
        with _locked(claims_file):
            claims = _live_claims(claims_file)
            taken = {cpu for claim in claims for cpu in claim.get("cpus", [])}
            free = [siblings for siblings in cores.values() if not taken & set(siblings)]
            if len(free) < threads:
                return CoreClaim(
                    None, f"{len(free)} of {len(cores)} physical cores free for {threads} threads (others claimed them)"
                )
            chosen = free[:threads]
            token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            claims.append({"pid": os.getpid(), "token": token, "cpus": [cpu for core in chosen for cpu in core]})
            claims_file.write_text(json.dumps(claims))
    except (ImportError, OSError) as exc:
        return CoreClaim(None, f"cannot record core claims ({type(exc).__name__}: {exc})")
    return CoreClaim(tuple(core[0] for core in chosen), token=token)


def release_cores(claim: CoreClaim, claims_file: Path = CLAIMS_FILE) -> None:
    if claim.token is None:
        return
    try:
        with _locked(claims_file):
            claims = [c for c in _live_claims(claims_file) if c.get("token") != claim.token]
            claims_file.write_text(json.dumps(claims))
    except (ImportError, OSError):
        pass  # the claim dies with this process anyway


def pin_to(cpus: tuple[int, ...] | None) -> list[int] | None:
    """Pins this process (and the threads it starts afterwards) to `cpus`; returns the affinity it then has."""
    if not cpus or not hasattr(psutil.Process, "cpu_affinity"):
        return None
    process = psutil.Process()
    process.cpu_affinity(list(cpus))
    return sorted(process.cpu_affinity())


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count at `count` inside (unchanged when None), the count it had outside."""
    import torch  # already loaded wherever this runs; cpus stays importable without it (light paths use it)

    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
