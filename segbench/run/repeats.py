"""`timing.repeats: k`: each cell measured in k separate processes, as pyperf does with its worker processes.

One process's samples share its memory layout, its allocator state, its thread placement and the
kernels its libraries picked; a second process can land elsewhere on all of them. One rule holds for every
timed figure of a repeated cell (latency and end-to-end statistics, each stage, the cold first call):

- the figure is the **median of the k per-process figures**;
- its spread is **between processes**: the CV of the k values, and a 95 % t-interval (k - 1 degrees of freedom)
  of their logarithms, centred on the figure, so the interval and the figure are one estimate;
- the k per-process values are kept (`repeats.process_*`), and `compare` tests changes on them (Welch).

The untimed figures (memory, fidelity, telemetry) come from the process whose latency median is the middle one, so
every figure in a record was really measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segbench.measure import significance
from segbench.measure.stats import HIGH_CV
from segbench.run.isolation import execute_isolated

Execute = Callable[[Any, float, "Path | None"], dict[str, Any]]
STATISTICS = ("mean", "median", "p90", "p95", "p99", "min", "max")
PER_PROCESS_FIELDS = {  # repeats.<field>: the k per-process values compare tests
    "process_medians_ms": ("latency_ms", "median"),
    "process_p95_ms": ("latency_ms", "p95"),
    "process_end_to_end_ms": ("end_to_end_ms", "median"),
    "process_end_to_end_p95_ms": ("end_to_end_ms", "p95"),
}
PIPELINE_RATES = ("end_to_end_throughput_fps", "pipelined_fps_bound")  # one per process: their median, like the rest
# A flag of any process is the cell's, with its process.
REASON_FLAGS = ("undersampled", "contended", "drifted", "inconsistent_forward", "over_budget")


def between_process_spread(values: list[float], centre: float | None = None) -> dict[str, Any]:
    """CV and a 95 % t-interval of k per-process values (on their logs, centred on `centre`, by default their
    median); None with the reason below two processes."""
    array = np.asarray(values, dtype=np.float64)
    if array.size < 2:
        return {
            "cv": None,
            "ci95": None,
            "unavailable": "one process: no between-process spread (set timing.repeats >= 2)",
        }
    if not (array > 0).all():
        return {"cv": None, "ci95": None, "unavailable": "a process measured no positive value"}
    centre = float(np.median(array)) if centre is None else centre
    # The same standard error and degrees of freedom compare's Welch test uses, around this centre.
    spread = significance.between_process_spread(array)
    low, high = significance.interval(significance.Spread(math.log(centre), spread.log_se, spread.dof))
    mean = float(array.mean())
    return {
        "cv": float(array.std(ddof=1)) / mean if mean > 0 else 0.0,
        "ci95": [low, high],
        "unavailable": None,
    }


def _joined(outcomes: list[dict[str, Any]], key: str) -> str | None:
    reasons = [f"process {index + 1}: {outcome[key]}" for index, outcome in enumerate(outcomes) if outcome.get(key)]
    return "; ".join(reasons) or None


def _median_or_none(values: list[Any]) -> float | None:
    """The median of the per-process values, or None when any process withheld the figure."""
    if not values or any(value is None for value in values):
        return None
    return float(np.median(np.asarray(values, dtype=np.float64)))


def merge_summaries(summaries: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """One statistics summary from k processes' summaries of the same figure (see the module's rule)."""
    merged: dict[str, Any] = {name: _median_or_none([s.get(name) for s in summaries]) for name in STATISTICS}
    spread = between_process_spread([s["median"] for s in summaries], merged["median"])
    # A percentile withheld in any process (too few samples there) stays withheld, with that process's reason.
    withheld = {name: why for s in summaries for name, why in (s.get("percentiles_withheld") or {}).items()}
    return {
        **merged,
        "percentiles_withheld": withheld or None,
        "std": None,
        "cv": spread["cv"],
        "ci95": spread["ci95"],
        "n": sum(int(s.get("n") or 0) for s in summaries),
        "n_per_process": [s.get("n") for s in summaries],
        "spread": f"between {k} processes: the median of the per-process figures, t-interval on their logs",
        "spread_unavailable": spread["unavailable"],
    }


def _pooled(outcomes: list[dict[str, Any]], field: str) -> list[float]:
    return [sample for outcome in outcomes for sample in outcome.get(field) or []]


def _pooled_stages(outcomes: list[dict[str, Any]]) -> dict[str, list[float]]:
    stage_samples: dict[str, list[float]] = {}
    for outcome in outcomes:
        for stage, values in (outcome.get("stage_samples_ms") or {}).items():
            stage_samples.setdefault(stage, []).extend(values)
    return stage_samples


def merge_repeats(outcomes: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """One record from k processes' outcomes of the same cell (the first failure wins when one failed)."""
    k = len(outcomes)
    statuses = [str(outcome.get("status")) for outcome in outcomes]
    failed = [outcome for outcome in outcomes if outcome.get("status") != "ok"]
    if failed:
        return {**failed[0], "repeats": {"k": k, "statuses": statuses}}
    medians = [float(outcome["latency_ms"]["median"]) for outcome in outcomes]
    middle = sorted(range(k), key=lambda index: medians[index])[(k - 1) // 2]
    latency = merge_summaries([outcome["latency_ms"] for outcome in outcomes], k)
    end_to_end = merge_summaries([outcome["end_to_end_ms"] for outcome in outcomes], k)
    stage_names = set.intersection(*(set(outcome.get("stages_ms") or {}) for outcome in outcomes))
    stages = {name: merge_summaries([o["stages_ms"][name] for o in outcomes], k) for name in sorted(stage_names)}
    pooled = _pooled(outcomes, "samples_ms")
    return {
        **outcomes[middle],
        "latency_ms": latency,
        "samples_ms": pooled,  # every process's samples, for plots; no statistic is computed from the pool
        "fps": batch_size * 1000.0 / latency["median"],
        "iterations": len(pooled),
        "end_to_end_ms": end_to_end,
        "end_to_end_fps": batch_size * 1000.0 / end_to_end["median"],
        "device_throughput_fps": _median_or_none([outcome.get("device_throughput_fps") for outcome in outcomes]),
        **{figure: _median_or_none([outcome.get(figure) for outcome in outcomes]) for figure in PIPELINE_RATES},
        "stages_ms": stages,
        "stage_samples_ms": _pooled_stages(outcomes),
        "first_call_ms": _median_or_none([outcome.get("first_call_ms") for outcome in outcomes]),
        # The middle process's canary heads the record (the runner checks it against the run's reference); each
        # process's own readings are kept, and any process's drift is the cell's (REASON_FLAGS).
        "canary": {**(outcomes[middle].get("canary") or {}), "processes": [o.get("canary") for o in outcomes]},
        "noisy": bool(latency["cv"] is not None and latency["cv"] > HIGH_CV)
        or any(outcome.get("noisy") for outcome in outcomes),
        **{flag: _joined(outcomes, flag) for flag in REASON_FLAGS},
        "repeats": {
            "k": k,
            "statuses": statuses,
            **{
                name: [outcome[figure].get(statistic) for outcome in outcomes]
                for name, (figure, statistic) in PER_PROCESS_FIELDS.items()
            },
            "between_cv": latency["cv"],
            "between_ci95": latency["ci95"],
            "within_cv": [outcome["latency_ms"].get("cv") for outcome in outcomes],
            "figures_from_process": middle + 1,
            "rule": "every timed figure: median of the per-process figures; spread between processes",
        },
    }


def execute_repeated(
    request: Any, timeout_s: float, log_path: Path | None = None, execute: Execute | None = None
) -> dict[str, Any]:
    """Run the cell `request.timing.repeats` times, each in a fresh process (its own timeout), and merge the
    outcomes."""
    if execute is None:
        execute = execute_isolated
    k = request.timing.repeats
    if k <= 1:
        return execute(request, timeout_s, log_path)
    outcomes = []
    for _ in range(k):
        outcome = execute(request, timeout_s, log_path)  # the log appends: one file holds every process
        outcomes.append(outcome)
        if outcome.get("status") != "ok":
            break  # a cell that fails once is recorded as failed; more processes would only repeat it
    return merge_repeats(outcomes, request.cell.batch_size)
