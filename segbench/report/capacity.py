"""The capacity scenario in every report format: how many cameras each cell serves per serving policy, each trial's
latency from scheduled arrival and drops, and a plot of cameras against p99 and against dropped frames."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from segbench.report.plots import STYLE, Plot, _encode
from segbench.report.tables import sort_cells
from segbench.results.labels import cell_label
from segbench.results.metrics import dig, number
from segbench.results.runs import RunData

NOTE = (
    "N cameras, each on its own clock at the camera FPS (phases spread over the frame interval), feed one deployment "
    "per serving policy: replicas (k model instances taking one frame each) or batched (one model behind a dynamic "
    "batcher: up to max_batch frames, or max_batch_delay_ms after the first was queued). A trial keeps up when no "
    "frame is dropped (one not taken before its camera's next frame is due counts as dropped, by the schedule) and "
    "the latency percentile from each frame's scheduled arrival is within the bound. N is reported after k "
    "consecutive passing trials; the trial at N + 1 that failed says whether drops or latency failed it. – : not "
    "measured."
)
PLOT_KEY = "capacity"


def _capacity(record: dict[str, Any]) -> dict[str, Any] | None:
    value = record.get("capacity")
    return value if isinstance(value, dict) else None


def _policies(capacity: dict[str, Any]) -> list[dict[str, Any]]:
    policies = capacity.get("policies")
    return [value for value in policies.values() if isinstance(value, dict)] if isinstance(policies, dict) else []


def _knobs(policy: dict[str, Any]) -> str:
    knobs = policy.get("knobs") or {}
    return ", ".join(f"{key} {value}" for key, value in knobs.items() if key != "workers")


def _bound(capacity: dict[str, Any]) -> str:
    return f"{capacity.get('percentile', 'p99')} ≤ {number(capacity.get('latency_bound_ms')) or 0:g} ms"


def summary(run: RunData) -> pd.DataFrame:
    """One row per ok capacity cell and serving policy: the confirmed N and how, and the failing N + 1."""
    rows = []
    for record in sort_cells(run.ok):
        capacity = _capacity(record)
        if capacity is None:
            continue
        for policy in _policies(capacity):
            rows.append(
                {
                    "model": record["model"],
                    "cell": cell_label(record),
                    "policy": str(policy.get("policy") or ""),
                    "knobs": _knobs(policy),
                    "camera_fps": number(capacity.get("camera_fps")),
                    "bound": _bound(capacity),
                    "max_cameras": number(policy.get("max_cameras")),
                    "failing_cameras": number(policy.get("failing_cameras")),
                    "failed_on": str(policy.get("failed_on") or ""),
                    "memory_mb": number(dig(policy, "memory.projected_peak_mb")),
                    "how": str(policy.get("how") or policy.get("max_cameras_why") or ""),
                    "best": policy.get("policy") == capacity.get("policy"),
                }
            )
    return pd.DataFrame(rows)


def trials(run: RunData) -> pd.DataFrame:
    """One row per trial of every ok capacity cell's searches, in the order they ran."""
    rows = []
    for record in sort_cells(run.ok):
        capacity = _capacity(record)
        if capacity is None:
            continue
        for policy in _policies(capacity):
            for trial in policy.get("trials") or []:
                if not isinstance(trial, dict):
                    continue
                passed = trial.get("passed")
                rows.append(
                    {
                        "model": record["model"],
                        "cell": cell_label(record),
                        "policy": str(policy.get("policy") or ""),
                        "phase": str(trial.get("phase") or ""),
                        "cameras": number(trial.get("cameras")),
                        "per_camera_fps": number(trial.get("per_camera_fps")),
                        "drop_pct": number(trial.get("drop_pct")),
                        "p50_ms": number(trial.get("p50_ms")),
                        "p95_ms": number(trial.get("p95_ms")),
                        "p99_ms": number(trial.get("p99_ms")),
                        "latency_bound_ms": number(trial.get("latency_bound_ms")),
                        "issue_delay_p99_ms": number(dig(trial, "issue_delay_ms.p99")),
                        "service_p99_ms": number(dig(trial, "service_ms.p99")),
                        "queue_depth_max": number(trial.get("queue_depth_max")),
                        "batch_mean": number(trial.get("batch_mean")),
                        "memory_peak_mb": number(trial.get("memory_peak_mb")),
                        "passed": passed if isinstance(passed, bool) else None,
                        "note": str(trial.get("fail_reason") or ""),
                    }
                )
    return pd.DataFrame(rows)


def plot(run: RunData) -> Plot | None:
    """Cameras against p99 from scheduled arrival and against dropped %, a line per cell and policy (the last trial at
    each N); None when the run has no capacity trials."""
    frame = trials(run)
    if frame.empty:
        return None
    import matplotlib

    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(11, 3.8))
        latency_axis, drops_axis = figure.subplots(1, 2)
        bounds = set()
        for (cell, policy), group in frame.groupby(["cell", "policy"], sort=False):
            last = group.drop_duplicates("cameras", keep="last").sort_values("cameras")
            label = f"{cell}, {policy}"
            latency_axis.plot(last["cameras"], last["p99_ms"], marker="o", label=label)
            drops_axis.plot(last["cameras"], last["drop_pct"], marker="o", label=label)
            bounds.update(value for value in last["latency_bound_ms"] if value is not None)
        for bound in sorted(bounds):
            latency_axis.axhline(bound, color="grey", linestyle="--", linewidth=1)
        latency_axis.set(xlabel="cameras", ylabel="p99 from scheduled arrival (ms)", title="Cameras vs p99")
        drops_axis.set(xlabel="cameras", ylabel="frames dropped (%)", title="Cameras vs dropped frames")
        drops_axis.set_ylim(bottom=0)
        for axis in (latency_axis, drops_axis):
            axis.xaxis.get_major_locator().set_params(integer=True)
        drops_axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
        image = _encode(figure)
    return Plot(
        PLOT_KEY,
        "Cameras vs p99 and dropped frames",
        image,
        "Each line is one cell's serving policy: the last trial at each number of cameras. The dashed line is the "
        "latency bound; a policy keeps up at N when its p99 is under it and it drops nothing.",
    )
