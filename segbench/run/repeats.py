"""`timing.repeats: k`: each cell measured in k separate processes, as pyperf does with its worker processes.

One process's samples share its memory layout, its allocator state, its thread placement and the
kernels its libraries picked; a second process can land elsewhere on all of them. So the headline
median is the median of the k per-process medians, and its spread (CV, 95 % interval) is between
processes, a t-interval over the k medians. The other figures (memory, fidelity, telemetry) come from
the process whose median is the middle one, so every figure in a record was really measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segbench.measure.stats import HIGH_CV, LatencyStats
from segbench.run.isolation import execute_isolated

Execute = Callable[[Any, float, "Path | None"], dict[str, Any]]


def between_process_spread(medians: list[float]) -> dict[str, Any]:
    """CV and a 95 % t-interval of the mean of per-process medians; None with the reason below two processes."""
    values = np.asarray(medians, dtype=np.float64)
    if values.size < 2:
        return {
            "cv": None,
            "ci95": None,
            "unavailable": "one process: no between-process spread (set timing.repeats >= 2)",
        }
    from scipy import stats as scipy_stats  # here: importing it costs 1 s, and only repeated cells need it

    mean, std = float(values.mean()), float(values.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.975, values.size - 1)) * std / math.sqrt(values.size)
    return {"cv": std / mean if mean > 0 else 0.0, "ci95": [mean - half, mean + half], "unavailable": None}


def _joined(outcomes: list[dict[str, Any]], key: str) -> str | None:
    reasons = [f"process {index + 1}: {outcome[key]}" for index, outcome in enumerate(outcomes) if outcome.get(key)]
    return "; ".join(reasons) or None


def merge_repeats(outcomes: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """One record from k processes' outcomes of the same cell (the first failure wins when one failed)."""
    k = len(outcomes)
    statuses = [str(outcome.get("status")) for outcome in outcomes]
    failed = [outcome for outcome in outcomes if outcome.get("status") != "ok"]
    if failed:
        return {**failed[0], "repeats": {"k": k, "statuses": statuses}}
    medians = [float(outcome["latency_ms"]["median"]) for outcome in outcomes]
    middle = sorted(range(k), key=lambda index: medians[index])[(k - 1) // 2]
    headline = float(np.median(medians))
    spread = between_process_spread(medians)
    pooled = LatencyStats.from_samples([sample for outcome in outcomes for sample in outcome["samples_ms"]])
    latency = {
        **pooled.summary(),
        "median": headline,
        "cv": spread["cv"],
        "ci95": spread["ci95"],
        "spread": f"between {k} processes (t-interval of the per-process medians)",
        "spread_unavailable": spread["unavailable"],
    }
    e2e_medians = [float(outcome["end_to_end_ms"]["median"]) for outcome in outcomes]
    stage_samples: dict[str, list[float]] = {}
    for outcome in outcomes:
        for stage, values in (outcome.get("stage_samples_ms") or {}).items():
            stage_samples.setdefault(stage, []).extend(values)
    return {
        **outcomes[middle],
        "latency_ms": latency,
        "samples_ms": list(pooled.samples),
        "fps": batch_size * 1000.0 / headline,
        "iterations": pooled.n,
        "end_to_end_ms": {**outcomes[middle]["end_to_end_ms"], "median": float(np.median(e2e_medians))},
        "end_to_end_fps": batch_size * 1000.0 / float(np.median(e2e_medians)),
        "stage_samples_ms": stage_samples,
        "noisy": bool(spread["cv"] is not None and spread["cv"] > HIGH_CV)
        or any(outcome.get("noisy") for outcome in outcomes),
        "undersampled": _joined(outcomes, "undersampled"),
        "contended": _joined(outcomes, "contended"),
        "repeats": {
            "k": k,
            "statuses": statuses,
            "process_medians_ms": medians,
            "between_cv": spread["cv"],
            "between_ci95": spread["ci95"],
            "within_cv": [outcome["latency_ms"].get("cv") for outcome in outcomes],
            "figures_from_process": middle + 1,
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
