"""Run comparison: match cells by their axes (cell_id), change of each metric in %, bootstrap CIs.

A latency change is significant only when the 95 % interval of the relative change excludes zero *and* the
change exceeds a threshold. The interval is a bootstrap over the kept samples, or, when both runs measured
each cell in k >= 2 processes (`timing.repeats`), a Welch t-interval over the per-process medians (the spread
between processes, which samples of one process cannot show). The interval guards against noise, the threshold
against differences too small to matter. Peak memory is one measurement per cell (no samples), so it is judged
by the threshold alone. A quantile gets an interval only when each run has at least 5 samples beyond it (10
for the median, 100 for p95); without one it is never significant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.markup import escape
from rich.table import Table

from segbench.measure.stats import BOOTSTRAP_RESAMPLES, LatencyStats
from segbench.report.tables import sort_cells
from segbench.results.labels import cell_label
from segbench.results.metrics import METRICS, Metric, headline_memory
from segbench.results.runs import RunData, load_run
from segbench.results.schema import STAGES
from segbench.results.store import record_key

DEFAULT_THRESHOLD_PCT = 5.0
TAIL_SAMPLES_FOR_CI = 5  # samples needed beyond a quantile (each side) before its bootstrap interval means anything


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
    ci_pct: tuple[float, float] | None  # 95 % bootstrap interval of change_pct
    significant: bool
    higher_is_better: bool

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

    def metric(self, key: str) -> MetricChange | None:
        return next((m for m in self.metrics if m.key == key), None)

    @property
    def status_regressed(self) -> bool:
        return self.status_a == "ok" and self.status_b != "ok"


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

    @property
    def significant_count(self) -> tuple[int, int]:
        """(significantly worse, significantly better) cells by median latency."""
        medians = [c.metric("median_ms") for c in self.cells]
        flagged = [m for m in medians if m and m.significant]
        return sum(m.worse for m in flagged), sum(not m.worse for m in flagged)


# ---- metrics ---------------------------------------------------------------------------------------


def _samples(record: dict[str, Any]) -> Samples | None:
    """The kept latency samples, through LatencyStats so a record without them is handled in one place."""
    summary = record.get("latency_ms")
    if not summary or not record.get("samples_ms"):
        return None
    return np.asarray(LatencyStats.from_dict(summary, record["samples_ms"]).samples, dtype=np.float64)


def _end_to_end_samples(record: dict[str, Any]) -> Samples | None:
    """Per-iteration end-to-end time: the three stage samples of the same iteration, summed."""
    stages = record.get("stage_samples_ms") or {}
    series = [stages.get(name) for name in STAGES]
    if not all(series) or len({len(s) for s in series}) != 1:
        return None
    return np.sum(np.asarray(series, dtype=np.float64), axis=0)


@dataclass(frozen=True)
class _Metric:
    """A catalogue metric compared between runs, with the samples whose bootstrap gives its interval."""

    metric: Metric
    samples: Callable[[dict[str, Any]], Samples | None] | None = None
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
    _Metric(METRICS["median_ms"], _samples, 50.0),
    _Metric(METRICS["p95_ms"], _samples, 95.0),
    _Metric(METRICS["fps"], _samples, 50.0),
    _Metric(METRICS["end_to_end_ms"], _end_to_end_samples, 50.0),
    _Metric(METRICS["end_to_end_fps"], _end_to_end_samples, 50.0),
    _Metric(METRICS["peak_mb"]),
    _Metric(METRICS["footprint_mb"]),
    _Metric(METRICS["miou_gt_pct"]),
)
QUANTILES = (50.0, 95.0)  # bootstrapped together: one resample serves every statistic of the same samples


def quantile_change_cis(
    a: Samples,
    b: Samples,
    quantiles: tuple[float, ...] = QUANTILES,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[float, tuple[float, float]]:
    """95 % percentile-bootstrap intervals of quantile(b) / quantile(a) - 1, in %, per quantile; both runs resampled,
    seeded."""
    rng = np.random.default_rng(seed)
    draws_a = np.percentile(rng.choice(a, size=(resamples, a.size), replace=True), quantiles, axis=1)
    draws_b = np.percentile(rng.choice(b, size=(resamples, b.size), replace=True), quantiles, axis=1)
    intervals = {}
    for index, quantile in enumerate(quantiles):
        low, high = np.percentile(draws_b[index] / draws_a[index], [2.5, 97.5])
        intervals[quantile] = (float((low - 1) * 100), float((high - 1) * 100))
    return intervals


def bootstrap_change_ci(
    a: Samples, b: Samples, quantile: float = 50.0, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """The interval of one quantile's relative change (the median's by default), in %."""
    return quantile_change_cis(a, b, (quantile,), resamples, seed)[quantile]


CiCache = dict[
    Any, "tuple[dict[float, tuple[float, float]], int] | None"
]  # samples function -> (intervals, fewer run's n)


def _change_ci(
    metric: _Metric, a: dict[str, Any], b: dict[str, Any], cache: CiCache, resamples: int, seed: int
) -> tuple[float, float] | None:
    if metric.samples is None:
        return None
    if metric.samples not in cache:
        samples_a, samples_b = metric.samples(a), metric.samples(b)
        if samples_a is None or samples_b is None or min(samples_a.size, samples_b.size) < MIN_SAMPLES_FOR_CI:
            cache[metric.samples] = None
        else:
            cache[metric.samples] = (
                quantile_change_cis(samples_a, samples_b, QUANTILES, resamples, seed),
                min(samples_a.size, samples_b.size),
            )
    cached = cache[metric.samples]
    if cached is None or cached[1] < min_samples_for_ci(metric.quantile):
        return None
    low, high = cached[0][metric.quantile]
    if metric.higher_is_better:  # FPS is the inverse of the median: invert the ratio's bounds
        low, high = 100 / (1 + high / 100) - 100, 100 / (1 + low / 100) - 100
    return low, high


def process_medians(record: dict[str, Any]) -> np.ndarray | None:
    """The per-process medians of a cell measured with `timing.repeats` >= 2, else None."""
    medians = (record.get("repeats") or {}).get("process_medians_ms")
    return np.asarray(medians, dtype=np.float64) if medians and len(medians) >= 2 else None


def between_process_change_ci(
    a: np.ndarray, b: np.ndarray, change_pct: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Welch t-interval of the change in % between two sets of per-process medians, centred on the headline change."""
    from scipy import stats as scipy_stats

    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    standard_error = math.sqrt(var_a + var_b)
    if standard_error == 0:
        return change_pct, change_pct
    dof = (var_a + var_b) ** 2 / (var_a**2 / (a.size - 1) + var_b**2 / (b.size - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, dof)) * standard_error / float(a.mean()) * 100
    return change_pct - half, change_pct + half


def _between_process_ci(
    metric: _Metric, a: dict[str, Any], b: dict[str, Any], change_pct: float
) -> tuple[float, float] | None:
    """For the median and FPS when both runs measured each cell in >= 2 processes: the between-process interval."""
    medians_a, medians_b = process_medians(a), process_medians(b)
    if medians_a is None or medians_b is None or metric.key not in ("median_ms", "fps"):
        return None
    if not metric.higher_is_better:
        return between_process_change_ci(medians_a, medians_b, change_pct)
    latency_change = (float(np.median(medians_b)) / float(np.median(medians_a)) - 1) * 100
    low, high = between_process_change_ci(medians_a, medians_b, latency_change)
    return 100 / (1 + high / 100) - 100, 100 / (1 + low / 100) - 100  # FPS is the inverse of the median


def _metric_change(
    metric: _Metric,
    a: dict[str, Any],
    b: dict[str, Any],
    threshold_pct: float,
    cache: CiCache,
    resamples: int,
    seed: int,
) -> MetricChange:
    value_a, value_b = metric.value(a), metric.value(b)
    if metric.key in ("peak_mb", "footprint_mb") and headline_memory(a)[1] != headline_memory(b)[1]:
        value_a = value_b = None  # different memory figures (e.g. NVML vs RSS) are not comparable
    change = (value_b - value_a) / value_a * 100 if value_a and value_b is not None else None
    # Between processes when both runs have them (pyperf's worker processes): samples of one process share its luck.
    between = _between_process_ci(metric, a, b, change) if change is not None else None
    ci = (
        between
        if between is not None
        else (_change_ci(metric, a, b, cache, resamples, seed) if change is not None else None)
    )
    if change is None:
        significant = False
    elif metric.samples is None:
        significant = abs(change) > threshold_pct
    else:
        significant = ci is not None and (ci[0] > 0 or ci[1] < 0) and abs(change) > threshold_pct
    return MetricChange(metric.key, metric.label, value_a, value_b, change, ci, significant, metric.higher_is_better)


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
    threshold: float = DEFAULT_THRESHOLD_PCT,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Compare run b against run a (the baseline); threshold is in percent."""
    run_a = a if isinstance(a, RunData) else load_run(a)
    run_b = b if isinstance(b, RunData) else load_run(b)
    # record_key is the cell_id (a hash of the axes), qualified by the card in a run over several cards.
    by_id_a = {record_key(r): r for r in run_a.records}
    by_id_b = {record_key(r): r for r in run_b.records}
    cells = []
    for record_a in sort_cells([r for r in run_a.records if record_key(r) in by_id_b]):
        record_b = by_id_b[record_key(record_a)]
        both_ok = record_a.get("status") == "ok" and record_b.get("status") == "ok"
        cache: CiCache = {}
        metrics = (
            tuple(_metric_change(m, record_a, record_b, threshold, cache, resamples, seed) for m in METRICS_COMPARED)
            if both_ok
            else ()
        )
        cells.append(
            CellChange(
                record_key(record_a),
                cell_label(record_a),
                str(record_a.get("status")),
                str(record_b.get("status")),
                metrics,
                cell_flags(record_a, record_b),
            )
        )
    return Comparison(
        name_a=run_a.name,
        name_b=run_b.name,
        threshold_pct=threshold,
        cells=tuple(cells),
        only_in_a=tuple(cell_label(r) for r in sort_cells([r for r in run_a.records if record_key(r) not in by_id_b])),
        only_in_b=tuple(cell_label(r) for r in sort_cells([r for r in run_b.records if record_key(r) not in by_id_a])),
        fingerprint_differences=tuple(fingerprint_differences(run_a.meta, run_b.meta)),
        machine_warnings=tuple(ceiling_differences(run_a.meta, run_b.meta)),
    )


# ---- presentation ----------------------------------------------------------------------------------


def change_text(change: MetricChange | None, with_ci: bool = False) -> str:
    """'+20.1 % (!) [+18.0, +22.3]': the change, the significance mark, optionally the interval."""
    if change is None or change.change_pct is None:
        return "–"
    text = f"{change.change_pct:+.1f} %"
    if change.significant:
        text += " (!)"
    if with_ci and change.ci_pct is not None:
        text += f" [{change.ci_pct[0]:+.1f}, {change.ci_pct[1]:+.1f}]"
    return text


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


def comparison_table(comparison: Comparison) -> Table:
    """The terminal table: one row per matched cell; green faster, red slower, (!) significant."""
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
        "p95 Δ",
        "FPS Δ",
        "end-to-end Δ",
        "end-to-end FPS Δ",
        "peak memory Δ",
        "footprint Δ",
        "mIoU (GT) Δ",
    ):
        table.add_column(escape(column), justify="left" if column in ("cell", "status") else "right")
    for cell in comparison.cells:
        median = cell.metric("median_ms")
        status = escape(cell.status_a if cell.status_a == cell.status_b else f"{cell.status_a} → {cell.status_b}")
        table.add_row(
            escape(cell.label) + "".join(f" [yellow](! {escape(flag)})[/]" for flag in cell.flags),
            f"[red]{status}[/]" if cell.status_regressed else status,
            f"{median.a:.3g} → {median.b:.3g}" if median and median.a is not None and median.b is not None else "–",
            _rich_change(median, with_ci=True),
            _rich_change(cell.metric("p95_ms")),
            _rich_change(cell.metric("fps")),
            _rich_change(cell.metric("end_to_end_ms")),
            _rich_change(cell.metric("end_to_end_fps")),
            _rich_change(cell.metric("peak_mb")),
            _rich_change(cell.metric("footprint_mb")),
            _rich_change(cell.metric("miou_gt_pct")),
        )
    return table
