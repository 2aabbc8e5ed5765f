"""Run comparison: match cells by their axes (cell_id), the change of each metric in %, and whether it is real.

Which evidence a verdict rests on (the README's "Which rule each verdict follows" says the same):

- **Between processes** (both runs measured the cell in k >= 3 processes, `timing.repeats`): a Welch t-test on the
  logarithms of the per-process values, as pyperf compares its worker processes. This is the only evidence that sees
  what changes from process to process (±10–30 % on shared 2-core VMs), so only it can make a change significant
  at the threshold.
- **Within one process** (fewer repeats): a stationary block bootstrap of each run's kept samples (consecutive
  samples are autocorrelated). The change is *indicative*: it is shown with its interval, and counts as significant
  only beyond `SINGLE_PROCESS_AA_BOUND_PCT`, a change that A/A runs of one process each did not reach.

Across the cells of one comparison the p-values of each metric are adjusted by Holm's step-down method, so a gate over
50 cells does not raise a false alarm because one of 50 tests at 95 % fails by chance. A cell flagged `drifted` in
either run (its canary moved or the hypervisor stole time), or contended (other processes used its CPUs), is never
significant. Peak memory is one measurement per
cell (no samples): NVML and allocator peaks are judged by the threshold alone, peak RSS (which moved by up to
55 % between A/A runs) only shown. The default threshold is measured: twice the runs' median
between-process CV, the range in which two A/A medians of three processes fall 95 % of the time.

The regression gate (`compare --fail-on-regression PCT`) never passes what it cannot judge. A cell fails it when it
ran ok in A but not in B, has no result in B, has a missing or non-finite median, or its median latency got
significantly slower by PCT % or more. A cell ok in both runs whose median change no statistics can judge (no
interval: fewer than MIN_SAMPLES_FOR_CI kept samples a side and no per-process values on both; or drifted or
contended in either run) is judged on its size alone (`size_alone_regressions`): it fails when its median got slower
by at least the larger of PCT and the comparison's threshold (the bar a judged change must clear, without the
p-value), and the gate names every such cell with a warning, pass or fail.

A comparison of more than FULL_BOOTSTRAP_MAX_CELLS matched cells bootstraps within one process only the changes that
could be significant (beyond the single-process A/A bound or the threshold), with the same verdicts (see the
constant), and its terminal table lists only the notable cells past TABLE_MAX_ROWS; the HTML lists every cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.markup import escape
from rich.table import Table

from segbench.measure.significance import (
    BETWEEN,
    SIGNIFICANCE_LEVEL,
    WITHIN,
    ChangeTest,
    Spread,
    adjust,
    between_process_change,
    change_test,
    within_process_spreads,
)
from segbench.report.profile import block_regressions
from segbench.report.tables import sort_cells
from segbench.results.labels import cell_label
from segbench.results.metrics import METRICS, Metric, headline_memory
from segbench.results.runs import RunData, load_run
from segbench.results.schema import STAGES
from segbench.results.store import record_key

MIN_PROCESSES_FOR_SIGNIFICANCE = 3  # two processes give one degree of freedom: an interval too wide to use
# Measured A/A spread on the shared 2-core Xeon VMs (AVX-512, AMX) this project runs on: pairs of runs of the same code
# and suite made back to back (results/README.md, "A/A runs"). The host's speed moves over tens of seconds (its
# fp32 ceiling read 136 then 219 GFLOP/s within 15 minutes), which the k processes of one cell, run back to back,
# do not see.
# - one process per cell: the forward median moved by up to 29.2 %, end to end by up to 33.7 % (the 2026-11-26
#   pair: 24.2 %). Without between-process evidence a change must exceed this to count.
SINGLE_PROCESS_AA_BOUND_PCT = 40.0
# - three processes per cell: the median of the three moved by up to 22.4 % (7.0 % in the other pair).
CPU_REPEATED_AA_BOUND_PCT = 25.0
AA_BOUND_SOURCE = "A/A pairs of quick runs on shared 2-core Xeon VMs, results/README.md"
THRESHOLD_FLOOR_PCT = 2.0  # below this no change matters to a deployment decision, however certain
MEMORY_THRESHOLD_PCT = 5.0  # the default for one-measurement memory figures (allocator peaks repeat to the byte)
TAIL_SAMPLES_FOR_CI = 5  # samples needed beyond a quantile (each side) before its interval means anything
INDICATIVE_HINT = "no between-process spread; rerun with -s timing.repeats=3"
# A comparison of more matched ok cells than this bootstraps within one process only the changes that could be
# significant (beyond max(SINGLE_PROCESS_AA_BOUND_PCT, threshold), not drifted or contended): a block bootstrap of
# 1,000 resamples of 1,000 samples costs tens of milliseconds per cell and side, an hour over 10,000 cells, and a
# smaller single-process change is never significant whatever its p. Those others are shown without an interval.
# Holm's p of a bootstrapped change is then bounded by Bonferroni's over the whole family (m * p, never below
# Holm's), which decides its verdict unless p < 0.05 <= m * p; then every change of the family is bootstrapped and
# Holm's p is exact, so no verdict differs from bootstrapping every cell.
FULL_BOOTSTRAP_MAX_CELLS = 200
NOT_BOOTSTRAPPED = "not bootstrapped: too small a change to be significant within one process"


def min_samples_for_ci(quantile: float) -> int:
    """Samples a run needs for a quantile's interval: 10 for the median, 100 for p95.

    With fewer, the statistic rests on one or two samples (a p95 of 30 samples is the second
    largest), and the bootstrap "interval" of a repeat can exclude zero by chance.
    """
    return math.ceil(TAIL_SAMPLES_FOR_CI / (min(quantile, 100 - quantile) / 100))


MIN_SAMPLES_FOR_CI = min_samples_for_ci(50.0)
Samples = np.ndarray


@dataclass(frozen=True)
class MetricChange:
    key: str
    label: str
    a: float | None
    b: float | None
    change_pct: float | None  # (b - a) / a in %
    ci_pct: tuple[float, float] | None  # 95 % interval of change_pct (unadjusted)
    significant: bool
    higher_is_better: bool
    evidence: str | None = None  # "between processes (3 vs 3)", "within one process (block bootstrap)", None
    p_value: float | None = None
    p_adjusted: float | None = None  # Holm-adjusted across the cells of the comparison
    indicative: bool = False  # no between-process evidence: the interval cannot see process-to-process variance
    excluded: str | None = None  # why this change cannot be significant whatever its size ("drifted in B")
    threshold_pct: float = math.inf  # the size a change must exceed (set when the comparison judges it)
    no_interval: str | None = None  # why a sampled figure's change has no interval ("9 and 9 kept samples …")

    @property
    def unjudgeable_reason(self) -> str | None:
        """Why no statistics can judge this change (it is judged on its size alone), or None when they can."""
        if self.change_pct is None:
            return None
        return self.excluded or self.no_interval
    bootstrap_skipped: bool = False  # a large comparison left out its within-process bootstrap (FULL_BOOTSTRAP_...)
    p_is_bound: bool = False  # p_adjusted is Bonferroni's bound on Holm's p (FULL_BOOTSTRAP_MAX_CELLS)

    @property
    def beyond_threshold(self) -> bool:
        return self.change_pct is not None and abs(self.change_pct) > self.threshold_pct

    @property
    def worse(self) -> bool:
        """The change goes the bad way (slower, fewer FPS, more memory), whatever its size."""
        if self.change_pct is None:
            return False
        return self.change_pct < 0 if self.higher_is_better else self.change_pct > 0


@dataclass(frozen=True)
class CellChange:
    cell_id: str
    label: str
    status_a: str
    status_b: str
    metrics: tuple[MetricChange, ...]
    flags: tuple[str, ...] = ()  # why its figures deserve less trust: "contended in B", "undersampled in A"
    slower_blocks: tuple[str, ...] = ()  # profiled blocks whose time grew, "neck 2.1 -> 3.4 ms (+62 %)"

    def metric(self, key: str) -> MetricChange | None:
        return next((m for m in self.metrics if m.key == key), None)

    @property
    def status_regressed(self) -> bool:
        return self.status_a == "ok" and self.status_b != "ok"

    @property
    def flagged(self) -> bool:
        """Worth a confirmation run: its median moved beyond the threshold, significantly or indicatively."""
        median = self.metric("median_ms")
        return bool(median and (median.significant or median.indicative and median.beyond_threshold))


@dataclass(frozen=True)
class Comparison:
    name_a: str
    name_b: str
    threshold_pct: float
    cells: tuple[CellChange, ...]
    only_in_a: tuple[str, ...]
    only_in_b: tuple[str, ...]
    fingerprint_differences: tuple[str, ...]
    machine_warnings: tuple[str, ...] = ()  # measured ceilings that differ: the machines, not the code, changed
    threshold_source: str = "given"  # how the threshold was chosen ("--threshold", or the A/A spread it came from)
    bootstrap_note: str = ""  # how many within-process bootstraps a large comparison left out, and why
    pruned_note: str = ""  # cells a search pruned (never measured) in either run: left out of the comparison

    @property
    def notable(self) -> list[CellChange]:
        """Cells worth a row when the table is too long for every one: a status change, a change beyond the
        threshold (significant, indicative or not judged), or a median no gate can judge."""
        unjudged = {id(cell) for cell in self.unjudgeable}
        return [
            cell
            for cell in self.cells
            if cell.status_a != cell.status_b
            or id(cell) in unjudged
            or any(m.significant or m.beyond_threshold for m in cell.metrics)
        ]

    def latency_regressions(self, min_pct: float) -> list[CellChange]:
        """Cells whose median latency got significantly slower by at least min_pct %."""
        found = []
        for cell in self.cells:
            median = cell.metric("median_ms")
            if median and median.significant and median.change_pct is not None and median.change_pct >= min_pct:
                found.append(cell)
        return found

    @property
    def status_regressions(self) -> list[CellChange]:
        return [cell for cell in self.cells if cell.status_regressed]

    @property
    def unjudgeable(self) -> list[CellChange]:
        """Cells ok in both runs whose median latency is missing, NaN or infinite in either: a gate cannot vouch for
        them."""
        found = []
        for cell in self.cells:
            median = cell.metric("median_ms")
            values = (median.a, median.b) if median else (None, None)
            if (
                cell.status_a == "ok"
                and cell.status_b == "ok"
                and not all(v is not None and math.isfinite(v) for v in values)
            ):
                found.append(cell)
        return found

    def judged_on_size_alone(self) -> list[tuple[CellChange, str]]:
        """(cell, why) for each cell ok in both runs with a finite median change that no statistics can judge."""
        found = []
        for cell in self.cells:
            median = cell.metric("median_ms")
            reason = median.unjudgeable_reason if median and cell not in self.unjudgeable else None
            if reason and cell.status_a == "ok" and cell.status_b == "ok":
                found.append((cell, reason))
        return found

    def size_alone_regressions(self, min_pct: float) -> list[CellChange]:
        """The cells judged on size alone whose median got slower by at least min_pct % and the threshold."""
        bar = max(min_pct, self.threshold_pct)
        return [
            cell
            for cell, _ in self.judged_on_size_alone()
            if (median := cell.metric("median_ms")) and median.change_pct is not None and median.change_pct >= bar
        ]

    @property
    def significant_count(self) -> tuple[int, int]:
        """(significantly worse, significantly better) cells by median latency."""
        medians = [c.metric("median_ms") for c in self.cells]
        flagged = [m for m in medians if m and m.significant]
        return sum(m.worse for m in flagged), sum(not m.worse for m in flagged)

    @property
    def indicative_count(self) -> int:
        """Cells whose median change rests on one process per side (no between-process evidence)."""
        return sum(bool((m := c.metric("median_ms")) and m.indicative) for c in self.cells)

    @property
    def flagged(self) -> list[CellChange]:
        return [cell for cell in self.cells if cell.flagged]


# ---- metrics ---------------------------------------------------------------------------------------


def _samples(record: dict[str, Any]) -> Samples | None:
    """The kept latency samples of a single-process record (a repeated one pools its processes: not a series)."""
    if not record.get("latency_ms") or not record.get("samples_ms") or _processes(record) > 1:
        return None
    return np.asarray(record["samples_ms"], dtype=np.float64)


def _end_to_end_samples(record: dict[str, Any]) -> Samples | None:
    """Per-iteration end-to-end time: the three stage samples of the same iteration, summed."""
    stages = record.get("stage_samples_ms") or {}
    series = [stages.get(name) for name in STAGES]
    if _processes(record) > 1 or not all(series) or len({len(s) for s in series}) != 1:
        return None
    return np.sum(np.asarray(series, dtype=np.float64), axis=0)


def _processes(record: dict[str, Any]) -> int:
    return int((record.get("repeats") or {}).get("k") or 1)


def _per_process(field: str) -> Callable[[dict[str, Any]], np.ndarray | None]:
    """The per-process values of one figure of a repeated cell (None where a process withheld it)."""

    def values(record: dict[str, Any]) -> np.ndarray | None:
        found = (record.get("repeats") or {}).get(field)
        if not found or len(found) < 2 or any(v is None or not v > 0 for v in found):
            return None
        return np.asarray(found, dtype=np.float64)

    return values


@dataclass(frozen=True)
class _Metric:
    """A catalogue metric compared between runs, with the evidence its interval can come from."""

    metric: Metric
    samples: Callable[[dict[str, Any]], Samples | None] | None = None  # one process's series
    per_process: Callable[[dict[str, Any]], np.ndarray | None] | None = None  # the k processes' values
    quantile: float = 50.0  # the statistic of the samples the value is (50: median)

    @property
    def key(self) -> str:
        return self.metric.key

    @property
    def label(self) -> str:
        return self.metric.name

    @property
    def higher_is_better(self) -> bool:
        return self.metric.higher_is_better

    def value(self, record: dict[str, Any]) -> float | None:
        return self.metric.value(record)


METRICS_COMPARED = (
    _Metric(METRICS["median_ms"], _samples, _per_process("process_medians_ms"), 50.0),
    _Metric(METRICS["p95_ms"], _samples, _per_process("process_p95_ms"), 95.0),
    _Metric(METRICS["fps"], _samples, _per_process("process_medians_ms"), 50.0),
    _Metric(METRICS["end_to_end_ms"], _end_to_end_samples, _per_process("process_end_to_end_ms"), 50.0),
    _Metric(METRICS["end_to_end_fps"], _end_to_end_samples, _per_process("process_end_to_end_ms"), 50.0),
    _Metric(METRICS["end_to_end_throughput_fps"]),  # one figure per process: its change, without an interval
    _Metric(METRICS["peak_mb"]),
    _Metric(METRICS["footprint_mb"]),
    _Metric(METRICS["miou_gt_pct"]),
    _Metric(METRICS["max_cameras"]),  # a confirmed count: its change, judged by size (k trials, one process)
)


def _inverted(test: ChangeTest) -> ChangeTest:
    """The same test for the inverse figure (FPS is batch / median latency)."""
    low, high = test.ci_pct
    return replace(test, ci_pct=(100 / (1 + high / 100) - 100, 100 / (1 + low / 100) - 100))


TestCache = dict[Any, "ChangeTest | None"]
SKIPPED = ChangeTest((math.nan, math.nan), math.nan, WITHIN)  # a within-process test a large comparison left out


class Spreads:
    """Each record's within-process spreads, bootstrapped once per series for every quantile compared on it (the
    median and p95 of a series come from the same resamples), and reused by every metric and rerun."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._found: dict[tuple[int, Any], dict[float, Spread]] = {}

    def of(self, record: dict[str, Any], series: Callable[[dict[str, Any]], Samples | None], quantile: float) -> Spread:
        key = (id(record), series)
        if key not in self._found:
            quantiles = tuple(sorted({m.quantile for m in METRICS_COMPARED if m.samples is series}))
            samples = series(record)
            assert samples is not None  # the caller checked that the record has the series
            self._found[key] = dict(zip(quantiles, within_process_spreads(samples, quantiles, seed=self.seed)))
        return self._found[key][quantile]


def _test_key(metric: _Metric) -> tuple[Any, ...]:
    return (metric.per_process, metric.samples, metric.quantile)


def _change_test(
    metric: _Metric,
    a: dict[str, Any],
    b: dict[str, Any],
    cache: TestCache,
    spreads: Spreads,
    bootstrap: bool,
) -> ChangeTest | None:
    """Between processes when both runs have >= 3; otherwise within one process (SKIPPED when not `bootstrap`);
    None without enough samples."""
    key = _test_key(metric)
    if key not in cache:
        cache[key] = _uncached_test(metric, a, b, spreads, bootstrap)
    test = cache[key]
    return _inverted(test) if test is not None and test is not SKIPPED and metric.higher_is_better else test


def _uncached_test(
    metric: _Metric, a: dict[str, Any], b: dict[str, Any], spreads: Spreads, bootstrap: bool
) -> ChangeTest | None:
    if metric.per_process is not None:
        values_a, values_b = metric.per_process(a), metric.per_process(b)
        if values_a is not None and values_b is not None:
            test = between_process_change(values_a, values_b)
            return replace(test, evidence=f"{BETWEEN} ({values_a.size} vs {values_b.size})")
    if metric.samples is None:
        return None
    samples_a, samples_b = metric.samples(a), metric.samples(b)
    needed = min_samples_for_ci(metric.quantile)
    if samples_a is None or samples_b is None or min(samples_a.size, samples_b.size) < needed:
        return None
    if not bootstrap:
        return SKIPPED
    series = metric.samples
    return change_test(spreads.of(a, series, metric.quantile), spreads.of(b, series, metric.quantile), WITHIN)


EXCLUDING_FLAGS = ("drifted", "contended")  # the machine, not the code, may have moved the figure


def _excluded(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why no change of this cell can be significant: a run measured it while the machine drifted (its canary
    moved, the hypervisor stole time) or while other processes competed for its CPUs."""
    reasons = []
    for flag in EXCLUDING_FLAGS:
        sides = [side for side, record in (("A", a), ("B", b)) if record.get(flag)]
        if sides:
            reasons.append(f"{flag} in {' and '.join(sides)}")
    return "; ".join(reasons) or None


def _values(metric: _Metric, a: dict[str, Any], b: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(value in A, value in B, change in %), each None where it cannot be had."""
    value_a, value_b = metric.value(a), metric.value(b)
    if metric.key in MEMORY_METRICS and headline_memory(a)[1] != headline_memory(b)[1]:
        value_a = value_b = None  # different memory figures (e.g. NVML vs RSS) are not comparable
    change = (value_b - value_a) / value_a * 100 if value_a and value_b is not None else None
    return value_a, value_b, change


def _metric_change(
    metric: _Metric,
    a: dict[str, Any],
    b: dict[str, Any],
    cache: TestCache,
    spreads: Spreads,
    bootstrap: bool = True,
) -> MetricChange:
    """The change with its test, before the threshold and the multiplicity correction decide significance."""
    value_a, value_b, change = _values(metric, a, b)
    if metric.key in MEMORY_METRICS and headline_memory(a)[1] in NOISY_MEMORY:
        return _noisy_memory_change(metric, value_a, value_b, change, a, b)
    test = _change_test(metric, a, b, cache, spreads, bootstrap) if change is not None else None
    if test is SKIPPED:
        return MetricChange(
            metric.key,
            metric.label,
            value_a,
            value_b,
            change,
            None,
            False,
            metric.higher_is_better,
            evidence=WITHIN,
            indicative=True,
            excluded=_excluded(a, b),
            bootstrap_skipped=True,
        )
    no_interval = _no_interval(metric, a, b) if change is not None and test is None else None
    between = test is not None and test.evidence.startswith(BETWEEN)
    enough_processes = between and min(_processes(a), _processes(b)) >= MIN_PROCESSES_FOR_SIGNIFICANCE
    return MetricChange(
        metric.key,
        metric.label,
        value_a,
        value_b,
        change,
        test.ci_pct if test else None,
        False,
        metric.higher_is_better,
        evidence=test.evidence if test else None,
        p_value=test.p_value if test else None,
        indicative=test is not None and not enough_processes,
        excluded=_excluded(a, b),
        no_interval=no_interval,
    )


def _no_interval(metric: _Metric, a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why a sampled figure got no interval (None for one-measurement figures, which are judged by size anyway)."""
    if metric.samples is None:
        return None
    if max(_processes(a), _processes(b)) > 1:
        return "no interval: a repeated cell needs every process's figure on both sides (timing.repeats >= 2 in both)"
    counts = [0 if (series := metric.samples(r)) is None else series.size for r in (a, b)]
    return (
        f"no interval: {counts[0]} and {counts[1]} kept samples (one process needs "
        f"{min_samples_for_ci(metric.quantile)} a side; or run both with -s timing.repeats=3)"
    )


MEMORY_METRICS = ("peak_mb", "footprint_mb")
# Peak RSS is one reading of what the OS maps in, which a forked cell's untouched library pages and the allocator's
# arenas move: in the committed A/A pair the footprint moved by up to 55 %. It is shown, never judged significant.
NOISY_MEMORY = ("rss_peak",)


def _noisy_memory_change(
    metric: _Metric,
    value_a: float | None,
    value_b: float | None,
    change: float | None,
    a: dict[str, Any],
    b: dict[str, Any],
) -> MetricChange:
    return MetricChange(
        metric.key,
        metric.label,
        value_a,
        value_b,
        change,
        None,
        False,
        metric.higher_is_better,
        evidence="one RSS reading per run (indicative)",
        indicative=True,
        excluded=_excluded(a, b),
    )


def _judged(
    change: MetricChange, p_adjusted: float | None, threshold_pct: float, has_samples: bool, p_is_bound: bool = False
) -> MetricChange:
    """Significance: beyond the threshold, and (for sampled metrics) Holm-adjusted p below the level, with the
    between-process evidence or beyond what single-process A/A runs reach."""
    change = replace(change, p_is_bound=p_is_bound and p_adjusted is not None)
    if change.change_pct is None or change.excluded:
        return replace(change, p_adjusted=p_adjusted, threshold_pct=threshold_pct)
    size = abs(change.change_pct)
    if not has_samples:
        significant = size > threshold_pct and not change.indicative
    else:
        bound = SINGLE_PROCESS_AA_BOUND_PCT if change.indicative else threshold_pct
        significant = p_adjusted is not None and p_adjusted < SIGNIFICANCE_LEVEL and size > max(bound, threshold_pct)
    return replace(change, significant=significant, p_adjusted=p_adjusted, threshold_pct=threshold_pct)


def _holm_per_metric(cells: list[list[MetricChange]]) -> tuple[list[list[float | None]], set[int]]:
    """Holm-adjusted p-values, one family per metric across the cells (drifted cells are not in any family), and
    the columns whose p-values are Bonferroni bounds (a family with skipped bootstraps). Raises _Undecided when a
    bound cannot decide a verdict."""
    adjusted: list[list[float | None]] = [[None] * len(changes) for changes in cells]
    bounded: set[int] = set()
    for column in range(len(METRICS_COMPARED)):
        members = [
            (row, changes[column].p_value)
            for row, changes in enumerate(cells)
            if changes and changes[column].p_value is not None and not changes[column].excluded
        ]
        skipped = sum(
            1 for changes in cells if changes and changes[column].bootstrap_skipped and not changes[column].excluded
        )
        if skipped:
            bounded.add(column)
            family = len(members) + skipped
            for row, p in members:
                bound = min(1.0, family * p)
                if p < SIGNIFICANCE_LEVEL <= bound:
                    raise _Undecided
                adjusted[row][column] = bound
            continue
        for (row, _), p in zip(members, adjust([p for _, p in members])):
            adjusted[row][column] = p
    return adjusted, bounded


class _Undecided(Exception):
    """A Bonferroni bound cannot settle a verdict that Holm's exact p would: bootstrap the whole family."""


def auto_threshold(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]]) -> tuple[float, str]:
    """The default threshold from measured A/A spread: twice the runs' median between-process CV (two medians of 3
    such processes differ by less than that 95 % of the time), and on a CPU at least what A/A runs of repeated cells
    on the shared VMs reached; without repeats, the single-process A/A bound."""
    records = (*records_a, *records_b)
    cvs = [
        float(cv)
        for record in records
        if (cv := (record.get("repeats") or {}).get("between_cv")) is not None and math.isfinite(float(cv))
    ]
    repeated = all(_processes(r) >= MIN_PROCESSES_FOR_SIGNIFICANCE for r in records)
    if not cvs or not repeated:
        return SINGLE_PROCESS_AA_BOUND_PCT, (
            f"auto: one process per cell, so the single-process A/A bound ({AA_BOUND_SOURCE}); {INDICATIVE_HINT}"
        )
    median_cv = float(np.median(cvs)) * 100
    own = f"2 x the runs' median between-process CV ({median_cv:.1f} %)"
    if any(str(record.get("device", "cpu")).startswith("cpu") for record in records):
        threshold = max(THRESHOLD_FLOOR_PCT, 2 * median_cv, CPU_REPEATED_AA_BOUND_PCT)
        return threshold, (
            f"auto: the larger of {own} and the {CPU_REPEATED_AA_BOUND_PCT:g} % A/A runs of 3 processes reached on "
            "shared CPU VMs (set --threshold where your machine's A/A runs show less)"
        )
    # No GPU A/A pairs have been measured: the runs' own spread is all there is.
    return max(THRESHOLD_FLOOR_PCT, 2 * median_cv), f"auto: {own}; no A/A runs measured on GPUs yet"


# ---- runs ------------------------------------------------------------------------------------------

FINGERPRINT_FIELDS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("device", lambda m: m.get("device")),
    ("machine", lambda m: _fp(m).get("machine")),
    ("CPU", lambda m: (_fp(m).get("cpu") or {}).get("model")),
    ("CPU threads", lambda m: (_fp(m).get("cpu") or {}).get("logical_cores")),
    # Two "AMD EPYC, 2 threads" machines can differ by AVX-512: 2.6x the matmul rate.
    ("CPU instruction sets", lambda m: " ".join((_fp(m).get("cpu") or {}).get("flags") or []) or None),
    ("GPUs", lambda m: ", ".join(str(g.get("name")) for g in _fp(m).get("gpus") or []) or "none"),
    ("CUDA build", lambda m: (_fp(m).get("cuda") or {}).get("torch_cuda_build")),
    ("segbench version", lambda m: (_fp(m).get("segbench") or {}).get("version")),
    ("segbench commit", lambda m: (_fp(m).get("segbench") or {}).get("commit")),
)


def _fp(meta: dict[str, Any]) -> dict[str, Any]:
    return meta.get("fingerprint") or {}


def fingerprint_differences(meta_a: dict[str, Any], meta_b: dict[str, Any]) -> list[str]:
    """What differs between the two runs' hardware and software; volatile fields (hostname, times) are ignored."""
    differences = [
        f"{name}: {get(meta_a)} → {get(meta_b)}" for name, get in FINGERPRINT_FIELDS if get(meta_a) != get(meta_b)
    ]
    packages_a, packages_b = _fp(meta_a).get("packages") or {}, _fp(meta_b).get("packages") or {}
    for package in sorted(set(packages_a) | set(packages_b)):
        if packages_a.get(package) != packages_b.get(package):
            differences.append(f"package {package}: {packages_a.get(package)} → {packages_b.get(package)}")
    return differences


CEILING_TOLERANCE = 0.10


def ceiling_differences(
    meta_a: dict[str, Any], meta_b: dict[str, Any], tolerance: float = CEILING_TOLERANCE
) -> list[str]:
    """Precision classes whose measured matmul ceiling differs by more than `tolerance` between the runs."""
    matmul_a = (meta_a.get("ceiling") or {}).get("matmul") or {}
    matmul_b = (meta_b.get("ceiling") or {}).get("matmul") or {}
    lines = []
    for kind in sorted(set(matmul_a) & set(matmul_b)):
        rate_a, rate_b = (matmul_a[kind] or {}).get("gflops"), (matmul_b[kind] or {}).get("gflops")
        if rate_a and rate_b and abs(rate_b - rate_a) / rate_a > tolerance:
            unit = matmul_a[kind].get("unit") or "GFLOP/s"
            lines.append(
                f"measured {kind} matmul ceiling {rate_a:.1f} → {rate_b:.1f} {unit} "
                f"({(rate_b - rate_a) / rate_a * 100:+.0f} %): the runs measured different machines (or one was "
                "throttled or busy); latency changes reflect that, not the code"
            )
    return lines


def cell_flags(record_a: dict[str, Any], record_b: dict[str, Any]) -> tuple[str, ...]:
    """'contended in B', 'undersampled in A': measurement conditions that make a change less trustworthy."""
    return tuple(
        f"{flag} in {side}"
        for flag in ("contended", "drifted", "undersampled")
        for side, record in (("A", record_a), ("B", record_b))
        if record.get(flag)
    )


def compare_runs(
    a: Path | str | RunData,
    b: Path | str | RunData,
    threshold: float | None = None,
    seed: int = 0,
) -> Comparison:
    """Compare run b against run a (the baseline); threshold is in percent, None for the measured A/A default."""
    run_a = a if isinstance(a, RunData) else load_run(a)
    run_b = b if isinstance(b, RunData) else load_run(b)
    # record_key is the cell_id (a hash of the axes), qualified by the card in a run over several cards.
    pruned_note = _pruned_note(run_a.records, run_b.records)
    by_id_a = {record_key(r): r for r in run_a.records if r.get("status") != "pruned"}
    by_id_b = {record_key(r): r for r in run_b.records if r.get("status") != "pruned"}
    pairs = [(r, by_id_b[record_key(r)]) for r in sort_cells([r for r in run_a.records if record_key(r) in by_id_b])]
    ok_pairs = [(ra, rb) for ra, rb in pairs if ra.get("status") == "ok" and rb.get("status") == "ok"]
    if threshold is None:
        latency_threshold, source = auto_threshold([ra for ra, _ in ok_pairs], [rb for _, rb in ok_pairs])
        memory_threshold = MEMORY_THRESHOLD_PCT
    else:
        latency_threshold, source, memory_threshold = threshold, "--threshold", threshold
    spreads = Spreads(seed)
    bootstrap_all = len(ok_pairs) <= FULL_BOOTSTRAP_MAX_CELLS
    decisive = max(SINGLE_PROCESS_AA_BOUND_PCT, latency_threshold)
    raw = [_raw_changes(ra, rb, spreads, None if bootstrap_all else decisive) for ra, rb in pairs]
    try:
        adjusted, bounded = _holm_per_metric(raw)
    except _Undecided:
        raw = [_raw_changes(ra, rb, spreads, None) for ra, rb in pairs]
        adjusted, bounded = _holm_per_metric(raw)
    cells = []
    for (record_a, record_b), changes, p_values in zip(pairs, raw, adjusted):
        judged = tuple(
            _judged(
                change,
                p,
                latency_threshold if metric.samples is not None else memory_threshold,
                metric.samples is not None,
                column in bounded,
            )
            for column, (metric, change, p) in enumerate(zip(METRICS_COMPARED, changes, p_values))
        )
        cells.append(
            CellChange(
                record_key(record_a),
                cell_label(record_a),
                str(record_a.get("status")),
                str(record_b.get("status")),
                judged,
                cell_flags(record_a, record_b),
                tuple(block_regressions(record_a, record_b)),
            )
        )
    return Comparison(
        name_a=run_a.name,
        name_b=run_b.name,
        threshold_pct=latency_threshold,
        cells=tuple(cells),
        only_in_a=tuple(
            cell_label(r) for r in sort_cells([r for r in by_id_a.values() if record_key(r) not in by_id_b])
        ),
        only_in_b=tuple(
            cell_label(r) for r in sort_cells([r for r in by_id_b.values() if record_key(r) not in by_id_a])
        ),
        pruned_note=pruned_note,
        fingerprint_differences=tuple(fingerprint_differences(run_a.meta, run_b.meta)),
        machine_warnings=tuple(ceiling_differences(run_a.meta, run_b.meta)),
        threshold_source=source,
        bootstrap_note=_bootstrap_note(raw, decisive),
    )


def _raw_changes(
    record_a: dict[str, Any], record_b: dict[str, Any], spreads: Spreads, decisive_pct: float | None
) -> list[MetricChange]:
    """Every compared metric's change; with `decisive_pct`, a within-process test only for a series on which some
    metric moved beyond it in a cell that is not excluded (FULL_BOOTSTRAP_MAX_CELLS)."""
    if record_a.get("status") != "ok" or record_b.get("status") != "ok":
        return []
    cache: TestCache = {}
    deciding = _deciding_tests(record_a, record_b, decisive_pct)
    return [
        _metric_change(
            metric, record_a, record_b, cache, spreads, deciding is None or _test_key(metric) in deciding
        )
        for metric in METRICS_COMPARED
    ]


def _deciding_tests(a: dict[str, Any], b: dict[str, Any], decisive_pct: float | None) -> set[Any] | None:
    """The tests whose verdict a within-process bootstrap could decide; None: every test."""
    if decisive_pct is None:
        return None
    if _excluded(a, b):
        return set()
    deciding = set()
    for metric in METRICS_COMPARED:
        change = _values(metric, a, b)[2] if metric.samples is not None else None
        if change is not None and abs(change) > decisive_pct:
            deciding.add(_test_key(metric))
    return deciding


def _pruned_note(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]]) -> str:
    """'3 cells pruned by a search in A, 0 in B, are left out (never measured: nothing to compare)'."""
    counts = [sum(r.get("status") == "pruned" for r in records) for records in (records_a, records_b)]
    if not any(counts):
        return ""
    return (
        f"{counts[0]} cell(s) pruned by a search in A and {counts[1]} in B are left out: never measured, they have "
        "nothing to compare (`segbench run --resume RUN --retry-pruned` measures them)"
    )


def _bootstrap_note(raw: list[list[MetricChange]], decisive_pct: float) -> str:
    skipped = sum(1 for changes in raw if any(m.bootstrap_skipped for m in changes))
    if not skipped:
        return ""
    return (
        f"{skipped} of {len(raw)} cells: no within-process interval, as a comparison of more than "
        f"{FULL_BOOTSTRAP_MAX_CELLS} cells bootstraps only changes beyond {decisive_pct:g} % (a smaller "
        "single-process change cannot be significant); their Holm p-values are Bonferroni bounds (p ≤)"
    )


# ---- presentation ----------------------------------------------------------------------------------


def change_text(change: MetricChange | None, with_ci: bool = False) -> str:
    """'+20.1 % (!) [+18.0, +22.3]': the change, its mark ((!) significant, (?) indicative beyond the threshold,
    (drifted) excluded), optionally the interval."""
    if change is None or change.change_pct is None:
        return "–"
    text = f"{change.change_pct:+.1f} %"
    if change.significant:
        text += " (!)"
    elif change.excluded and change.beyond_threshold:
        text += " (not judged)"
    elif change.indicative and change.beyond_threshold:
        text += " (?)"
    if with_ci and change.ci_pct is not None:
        text += f" [{change.ci_pct[0]:+.1f}, {change.ci_pct[1]:+.1f}]"
    return text


def evidence_text(change: MetricChange | None) -> str:
    """'3 vs 3 processes, p = 0.004' or '1 process (indicative), p = 0.03' or the reason it is excluded."""
    if change is None or change.evidence is None:
        return "–"
    if change.evidence.startswith(BETWEEN):
        counts = change.evidence.removeprefix(BETWEEN).strip(" ()")
        text = f"{counts} processes" + (" (indicative: < 3)" if change.indicative else "")
    else:
        text = "1 process (indicative)"
    if change.excluded:
        return f"{text}; {change.excluded}: not judged"
    if change.bootstrap_skipped:
        return f"{text}, {NOT_BOOTSTRAPPED}"
    relation = "≤" if change.p_is_bound else "="
    return text + (f", p {relation} {change.p_adjusted:.2g}" if change.p_adjusted is not None else "")


def change_tone(change: MetricChange | None) -> str:
    """'worse', 'better' or '' (no change to speak of)."""
    if change is None or not change.change_pct:
        return ""
    return "worse" if change.worse else "better"


TONE_STYLE = {"worse": "red", "better": "green", "": ""}


def _rich_change(change: MetricChange | None, with_ci: bool = False) -> str:
    style = TONE_STYLE[change_tone(change)]
    if change is not None and change.significant:
        style += " bold"
    text = escape(change_text(change, with_ci))
    return f"[{style}]{text}[/]" if style.strip() else text


TABLE_MAX_ROWS = 200  # past this a table of every matched cell is unreadable: it shows the notable cells


def table_rows(comparison: Comparison, limit: int = TABLE_MAX_ROWS) -> tuple[list[CellChange], str]:
    """The cells a table shows, and a sentence when it leaves some out: every cell up to `limit`, past it only the
    notable ones (Comparison.notable), at most `limit` of them."""
    cells = list(comparison.cells)
    if len(cells) <= limit:
        return cells, ""
    notable = comparison.notable
    shown = notable[:limit]
    more = f" (the first {limit} of {len(notable)} notable)" if len(notable) > limit else ""
    return shown, (
        f"{len(shown)} of {len(cells)} matched cells shown{more}: those whose status changed or whose change goes "
        f"beyond the threshold; the other {len(cells) - len(shown)} moved less. Write every cell with -o FILE.html."
    )


def comparison_table(comparison: Comparison) -> Table:
    """The terminal table: one row per matched cell; green faster, red slower, (!) significant."""
    capacity = has_capacity(comparison)
    table = Table(
        title=escape(
            f"{comparison.name_b} vs {comparison.name_a} (baseline) · threshold {comparison.threshold_pct:g} %"
        )
    )
    for column in (
        "cell",
        "status",
        "median ms (A → B)",
        "median Δ [95 % CI]",
        "evidence (Holm p)",
        "p95 Δ",
        "FPS Δ",
        "end-to-end Δ",
        "end-to-end FPS Δ",
        "throughput Δ",
        "peak memory Δ",
        "footprint Δ",
        "mIoU (GT) Δ",
        *(["cameras Δ"] if capacity else []),
    ):
        table.add_column(escape(column), justify="left" if column in ("cell", "status") else "right")
    shown, caption = table_rows(comparison)
    table.caption = escape(caption) if caption else None
    for cell in shown:
        median = cell.metric("median_ms")
        status = escape(cell.status_a if cell.status_a == cell.status_b else f"{cell.status_a} → {cell.status_b}")
        table.add_row(
            escape(cell.label) + "".join(f" [yellow](! {escape(flag)})[/]" for flag in cell.flags),
            f"[red]{status}[/]" if cell.status_regressed else status,
            f"{median.a:.3g} → {median.b:.3g}" if median and median.a is not None and median.b is not None else "–",
            _rich_change(median, with_ci=True),
            escape(evidence_text(median)),
            _rich_change(cell.metric("p95_ms")),
            _rich_change(cell.metric("fps")),
            _rich_change(cell.metric("end_to_end_ms")),
            _rich_change(cell.metric("end_to_end_fps")),
            _rich_change(cell.metric("end_to_end_throughput_fps")),
            _rich_change(cell.metric("peak_mb")),
            _rich_change(cell.metric("footprint_mb")),
            _rich_change(cell.metric("miou_gt_pct")),
            *([_rich_change(cell.metric("max_cameras"))] if capacity else []),
        )
    return table


def has_capacity(comparison: Comparison) -> bool:
    """Whether any matched cell is a capacity cell in either run: then the tables add the cameras column."""
    return any(
        (change := cell.metric("max_cameras")) is not None and (change.a is not None or change.b is not None)
        for cell in comparison.cells
    )
