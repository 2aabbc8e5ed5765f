"""Has the machine drifted? A fixed host GEMM timed around each cell, and the time the hypervisor stole.

`ContentionWindow` sees only the processes inside this machine. A virtual machine can also slow down from
outside it (a noisy neighbour on the host, a lower clock, a migration): the committed "quiet" Xeon runs measured
an fp32 ceiling of 252 GFLOP/s and, six and a half minutes later, 148. Two witnesses catch that:

- the canary: one fixed-size fp32 GEMM on the host CPU, best of a few trials (slowdowns only make a trial slower,
  so the best rejects a one-off hiccup), timed once beside the run's ceiling (the run's reference, in meta.json
  under `ceiling.canary`) and in each cell just before warm-up and just after the timed passes, with the cell's
  threads. A cell is compared with the reference canary rather than with the ceiling's big GEMMs: a 512² GEMM
  and a 2048² one run at different rates on a healthy machine, the same GEMM should not. On a GPU cell the canary
  is still a host GEMM: the host's speed is what a launch-bound model's latency follows.
- steal: the share of all CPUs' time `/proc/stat` counts as stolen by the hypervisor over the timed passes
  (psutil's `cpu_times().steal`).

Nothing here runs beside the timed loop: the canary runs before and after the passes, and steal is two reads of
a kernel counter.
"""

from __future__ import annotations

import time
from typing import Any, Self

import psutil
import torch

CANARY_SIDE = 512  # 0.27 GFLOP per GEMM: about 2 ms on a 2-core Xeon, so a reading costs tens of ms
CANARY_GEMMS_PER_TRIAL = 4
CANARY_TRIALS = 5  # best of 5: a trial can only be slowed, so the best one is the machine's rate
DRIFT_TOLERANCE_PCT = 10.0  # a canary that moved more than this (over the cell, or from the run's reference)
# Steal above this share of the CPUs' time means the hypervisor gave the guest's cores to someone else often
# enough to move a median: on a 2-CPU machine 5 % is a tenth of one core.
STEAL_BOUND_PCT = 5.0
# /proc/stat counts in 10 ms ticks: below 5 ticks stolen, a short window's share is rounding, not evidence.
MIN_STOLEN_CPU_S = 0.05
# guest time is already inside user and nice in /proc/stat; counting it again would inflate the total
_NOT_IN_TOTAL = ("guest", "guest_nice")


# ---- the canary -------------------------------------------------------------------------------------


def canary_gflops(
    side: int = CANARY_SIDE, trials: int = CANARY_TRIALS, gemms_per_trial: int = CANARY_GEMMS_PER_TRIAL
) -> float:
    """The fixed host fp32 GEMM's rate, best of `trials`, with this process's torch threads.

    Autocast is off and the matrices live on the CPU, so a cell's precision (bf16 autocast) or device never
    changes what the canary measures.
    """
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode(), torch.autocast("cpu", enabled=False):
        a = torch.randn(side, side, generator=generator)
        b = torch.randn(side, side, generator=generator)
        torch.mm(a, b)  # warm-up: thread-pool wake-up and kernel choice are not the rate
        best = float("inf")
        for _ in range(trials):
            started = time.perf_counter()
            for _ in range(gemms_per_trial):
                torch.mm(a, b)
            best = min(best, (time.perf_counter() - started) / gemms_per_trial)
    return 2.0 * side**3 / best / 1e9


def canary_reading() -> dict[str, Any]:
    """One canary measurement with what makes two readings comparable (size, threads); an error is a reason."""
    reading: dict[str, Any] = {"gflops": None, "side": CANARY_SIDE, "threads": torch.get_num_threads()}
    try:
        reading["gflops"] = canary_gflops()
    except Exception as exc:  # a broken BLAS must not cost the cell its figures
        reading["unavailable"] = f"canary GEMM failed: {type(exc).__name__}: {exc}"
    return reading


def reference_canary() -> dict[str, Any]:
    """The run's reference, measured beside the ceiling (meta.json `ceiling.canary`)."""
    return {**canary_reading(), "where": "host CPU"}


# ---- steal ------------------------------------------------------------------------------------------


def _total_and_steal() -> tuple[float, float | None]:
    times = psutil.cpu_times()
    total = sum(value for name, value in times._asdict().items() if name not in _NOT_IN_TOTAL)
    steal = getattr(times, "steal", None)  # Linux only
    return total, float(steal) if steal is not None else None


class StealWindow:
    """The share of all CPUs' time the hypervisor stole between entering and leaving (Linux /proc/stat)."""

    def __init__(self) -> None:
        self._start: tuple[float, float | None] = (0.0, None)
        self.steal_pct: float | None = None
        self.stolen_cpu_s: float | None = None
        self.unavailable: str | None = None

    def __enter__(self) -> Self:
        self._start = _total_and_steal()
        return self

    def __exit__(self, *exc: object) -> None:
        total, steal = _total_and_steal()
        if steal is None or self._start[1] is None:
            self.unavailable = "this OS reports no steal time (psutil cpu_times().steal is Linux only)"
            return
        elapsed = total - self._start[0]
        if elapsed <= 0:
            self.unavailable = "the window was shorter than one /proc/stat tick"
            return
        self.stolen_cpu_s = max(0.0, steal - self._start[1])
        self.steal_pct = 100.0 * self.stolen_cpu_s / elapsed


# ---- the record's `canary` and `drifted` -------------------------------------------------------------


def _change_pct(value: float | None, against: float | None) -> float | None:
    return 100.0 * (value / against - 1.0) if value and against else None


def cell_canary(before: dict[str, Any], after: dict[str, Any], steal: StealWindow) -> dict[str, Any]:
    """A cell's `canary` field: its two readings, their change, and the steal over its timed passes."""
    unavailable = {
        key: reason
        for key, reason in (
            ("before_gflops", before.get("unavailable")),
            ("after_gflops", after.get("unavailable")),
            ("steal_pct", steal.unavailable),
        )
        if reason
    }
    change = _change_pct(after["gflops"], before["gflops"])
    if change is None:
        unavailable["change_pct"] = "a canary reading is missing"
    return {
        "before_gflops": before["gflops"],
        "after_gflops": after["gflops"],
        "change_pct": change,
        "steal_pct": steal.steal_pct,
        "stolen_cpu_s": steal.stolen_cpu_s,
        "run_reference_gflops": None,
        "vs_run_reference_pct": None,
        "side": CANARY_SIDE,
        "threads": before["threads"],
        "where": "host CPU (before warm-up and after the timed passes; steal over the timed passes)",
        "unavailable": unavailable
        | {"vs_run_reference_pct": "compared with the run's reference when the record is written"},
    }


def against_reference(canary: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """The cell's canary with its slower reading against the run's reference canary, in percent of the reference."""
    unavailable = {
        key: value for key, value in (canary.get("unavailable") or {}).items() if key != "vs_run_reference_pct"
    }
    out = {**canary, "unavailable": unavailable}
    reason = _reference_unusable(canary, reference)
    if reason:
        unavailable["vs_run_reference_pct"] = reason
        return out
    assert reference is not None
    changes = [
        change
        for change in (_change_pct(canary.get(key), reference["gflops"]) for key in ("before_gflops", "after_gflops"))
        if change is not None
    ]
    out["run_reference_gflops"] = reference["gflops"]
    # The slower reading: only a canary below the reference says the machine slowed. One above it says the reference
    # was taken on a busier machine (it runs while the cells' template process imports torch): 11-14 % above it in
    # quick-20261201T232445Z, with the cell's own before/after within 9 %.
    out["vs_run_reference_pct"] = min(changes) if changes else None
    return out


def _reference_unusable(canary: dict[str, Any], reference: dict[str, Any] | None) -> str | None:
    if not reference:
        return "no reference canary in this run (its ceiling was not measured, or predates the canary)"
    if not reference.get("gflops"):
        return reference.get("unavailable") or "the run's reference canary has no reading"
    if reference.get("side") != canary.get("side") or reference.get("threads") != canary.get("threads"):
        return (
            f"the run's reference canary ran {reference.get('side')}² on {reference.get('threads')} threads, this "
            f"cell's {canary.get('side')}² on {canary.get('threads')}: not the same measurement"
        )
    if canary.get("before_gflops") is None and canary.get("after_gflops") is None:
        return "the cell has no canary reading"
    return None


def cell_drift(canary: dict[str, Any] | None) -> str | None:
    """What the cell's own process saw: its canary moved between its two readings, or the hypervisor stole time."""
    if not canary:
        return None
    reasons = []
    change = canary.get("change_pct")
    if change is not None and abs(change) > DRIFT_TOLERANCE_PCT:
        reasons.append(
            f"the host canary GEMM moved {change:+.0f} % over the cell ({canary['before_gflops']:.0f} → "
            f"{canary['after_gflops']:.0f} GFLOP/s; tolerance {DRIFT_TOLERANCE_PCT:g} %)"
        )
    steal, stolen = canary.get("steal_pct"), canary.get("stolen_cpu_s")
    if steal is not None and steal > STEAL_BOUND_PCT and (stolen or 0.0) >= MIN_STOLEN_CPU_S:
        reasons.append(
            f"the hypervisor stole {steal:.1f} % of the CPUs' time while it was timed (bound {STEAL_BOUND_PCT:g} %)"
        )
    return "; ".join(reasons) or None


def reference_drift(canary: dict[str, Any] | None) -> str | None:
    """What only the run knows: the cell's canary far from the reference measured with the ceiling."""
    versus = (canary or {}).get("vs_run_reference_pct")
    if versus is None or versus >= -DRIFT_TOLERANCE_PCT:
        return None
    assert canary is not None
    return (
        f"the host canary read {versus:+.0f} % against the run's reference "
        f"({canary['run_reference_gflops']:.0f} GFLOP/s, measured with the ceiling)"
    )


def joined(*reasons: str | None) -> str | None:
    return "; ".join(reason for reason in reasons if reason) or None


def drift_reason(canary: dict[str, Any] | None) -> str | None:
    """Why a cell counts as drifted (the machine's speed moved under it), or None: the record's `drifted`.

    The cell writes `cell_drift` (it has no reference); the runner adds `reference_drift` when it writes the record.
    """
    return joined(cell_drift(canary), reference_drift(canary))
