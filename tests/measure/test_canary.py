"""The drift rule: a host canary GEMM that moved, or steal time above its bound, flags a cell `drifted`."""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Iterator

import pytest

from segbench.measure import canary as canary_module
from segbench.measure.canary import (
    CANARY_SIDE,
    STEAL_BOUND_PCT,
    StealWindow,
    against_reference,
    canary_gflops,
    cell_canary,
    drift_reason,
)


def _reading(gflops: float | None, threads: int = 2) -> dict[str, Any]:
    return {"gflops": gflops, "side": CANARY_SIDE, "threads": threads}


def _steal(steal_pct: float | None = 0.0, stolen_cpu_s: float | None = 0.0) -> StealWindow:
    window = StealWindow()
    window.steal_pct, window.stolen_cpu_s = steal_pct, stolen_cpu_s
    return window


def test_a_canary_that_moved_15_percent_over_the_cell_is_drifted() -> None:
    canary = cell_canary(_reading(200.0), _reading(170.0), _steal())
    assert canary["change_pct"] == pytest.approx(-15.0)
    assert drift_reason(canary) == (
        "the host canary GEMM moved -15 % over the cell (200 → 170 GFLOP/s; tolerance 10 %)"
    )


def test_a_canary_that_moved_3_percent_is_not_drifted() -> None:
    assert drift_reason(cell_canary(_reading(200.0), _reading(194.0), _steal())) is None
    assert drift_reason(cell_canary(_reading(200.0), _reading(206.0), _steal())) is None


def test_steal_above_the_bound_is_drifted_and_a_few_ticks_are_not() -> None:
    stolen = cell_canary(_reading(200.0), _reading(200.0), _steal(STEAL_BOUND_PCT + 3, 0.4))
    assert drift_reason(stolen) == (
        f"the hypervisor stole {STEAL_BOUND_PCT + 3:.1f} % of the CPUs' time while it was timed (bound 5 %)"
    )
    # One 10 ms tick in a 0.1 CPU-second window is 10 %: rounding, not evidence.
    assert drift_reason(cell_canary(_reading(200.0), _reading(200.0), _steal(10.0, 0.01))) is None


def test_a_missing_reading_withholds_the_change_with_a_reason() -> None:
    failed = {**_reading(None), "unavailable": "canary GEMM failed: RuntimeError: no BLAS"}
    canary = cell_canary(failed, _reading(200.0), _steal(None, None))
    assert canary["change_pct"] is None and canary["unavailable"]["change_pct"] == "a canary reading is missing"
    assert canary["unavailable"]["before_gflops"] == "canary GEMM failed: RuntimeError: no BLAS"
    assert drift_reason(canary) is None


def test_a_canary_faster_than_the_reference_is_not_drift() -> None:
    """The reference is measured while the template process starts: a cell 14 % above it (as in
    quick-20261201T232445Z, before/after within 1 %) says the reference was slow, not that the cell drifted."""
    canary = against_reference(cell_canary(_reading(308.0), _reading(305.0), _steal()), {**_reading(271.0)})
    assert canary["vs_run_reference_pct"] == pytest.approx(100 * (305 / 271 - 1))
    assert drift_reason(canary) is None


def test_a_cell_far_from_the_runs_reference_canary_is_drifted() -> None:
    """The whole cell on a machine slower than when the ceiling was measured: before and after agree, both low."""
    canary = against_reference(cell_canary(_reading(150.0), _reading(148.0), _steal()), {**_reading(252.0)})
    assert canary["run_reference_gflops"] == 252.0
    assert canary["vs_run_reference_pct"] == pytest.approx(100 * (148 / 252 - 1))
    assert "vs_run_reference_pct" not in canary["unavailable"]
    assert (
        drift_reason(canary)
        == "the host canary read -41 % against the run's reference (252 GFLOP/s, measured with the ceiling)"
    )
    assert (
        drift_reason(against_reference(cell_canary(_reading(250.0), _reading(245.0), _steal()), _reading(252.0)))
        is None
    )


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        (None, "no reference canary in this run (its ceiling was not measured, or predates the canary)"),
        ({**_reading(None), "unavailable": "canary GEMM failed: x"}, "canary GEMM failed: x"),
        (_reading(200.0, threads=4), "the run's reference canary ran 512² on 4 threads, this cell's 512² on 2"),
    ],
)
def test_a_reference_that_cannot_be_compared_says_why(reference: dict[str, Any] | None, reason: str) -> None:
    canary = against_reference(cell_canary(_reading(100.0), _reading(100.0), _steal()), reference)
    assert canary["vs_run_reference_pct"] is None
    assert canary["unavailable"]["vs_run_reference_pct"].startswith(reason)


Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")
MacTimes = namedtuple("MacTimes", "user nice system idle")


def _fake_cpu_times(monkeypatch: pytest.MonkeyPatch, readings: list[Any]) -> None:
    sequence: Iterator[Any] = iter(readings)
    monkeypatch.setattr(canary_module.psutil, "cpu_times", lambda: next(sequence))


def test_steal_is_the_stolen_share_of_all_cpu_time_guest_not_counted_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 CPUs for 1 s: 2 CPU-seconds, 0.2 of them stolen; guest (0.5) is already inside user.
    _fake_cpu_times(
        monkeypatch, [Times(10, 0, 2, 50, 0, 0, 0, 1.0, 3, 0), Times(11.3, 0, 2.2, 50.3, 0, 0, 0, 1.2, 3.5, 0)]
    )
    with StealWindow() as window:
        pass
    assert window.stolen_cpu_s == pytest.approx(0.2) and window.steal_pct == pytest.approx(10.0)
    assert window.unavailable is None


def test_steal_on_an_os_without_it_is_withheld_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cpu_times(monkeypatch, [MacTimes(1, 0, 1, 1), MacTimes(2, 0, 1, 2)])
    with StealWindow() as window:
        pass
    assert window.steal_pct is None
    assert window.unavailable == "this OS reports no steal time (psutil cpu_times().steal is Linux only)"


def test_the_canary_gemm_reads_a_rate() -> None:
    assert canary_gflops(side=64, trials=2, gemms_per_trial=1) > 0  # a rate, never judged against a speed
