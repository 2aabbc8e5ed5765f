"""The stream scenario's trials and the criterion each stream cell was judged by, for every report format.

Records written before the latency criterion hold `search` and `confirmations` lists (rate, drops, kept
up) and no criterion: their trials still show, with the figures they lack as not measured.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from segbench.report.tables import sort_cells
from segbench.results.labels import cell_label
from segbench.results.metrics import dig, number
from segbench.results.runs import RunData

LEGACY_CRITERION = (
    "recorded before the latency criterion: a rate passed on one trial that dropped no frame, with latency counted "
    "from the frame's put on the queue (not its schedule); issue delay, queue wait and service time were not measured"
)
TRIALS_NOTE = (
    "Latency runs from a frame's scheduled arrival (the camera's clock) to its class map, and splits into issue "
    "delay (scheduled → put on the queue: the producer or host was late), queue wait (put → taken off the queue: "
    "frames come faster than they are served) and service time (taken → class map: the model itself; compare it "
    "with the offline end-to-end latency). A trial stops early once it has failed. – : not measured."
)


def _stream(record: dict[str, Any]) -> dict[str, Any] | None:
    value = record.get("stream")
    return value if isinstance(value, dict) else None


def _trials(stream: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's trials; an old record's search and confirmation rows, marked with their phase."""
    if isinstance(stream.get("trials"), list):
        return [row for row in stream["trials"] if isinstance(row, dict)]
    legacy = []
    for phase, key in (("search", "search"), ("confirm", "confirmations")):
        for row in stream.get(key) or []:
            if isinstance(row, dict):
                legacy.append({**row, "phase": phase, "passed": row.get("keeps_up")})
    return legacy


def trials(run: RunData) -> pd.DataFrame:
    """One row per trial of every ok stream cell, in the order they ran."""
    rows = []
    for record in sort_cells(run.ok):
        stream = _stream(record)
        if stream is None:
            continue
        percentile = dig(stream, "criterion.percentile")
        for trial in _trials(stream):
            passed = trial.get("passed")
            rows.append(
                {
                    "model": record["model"],
                    "cell": cell_label(record),
                    "phase": str(trial.get("phase") or ""),
                    "target_fps": number(trial.get("target_fps")),
                    "n": number(trial.get("n")),
                    "percentile": str(percentile) if percentile else None,
                    "latency_quantile_ms": number(trial.get("latency_quantile_ms")),
                    "latency_bound_ms": number(trial.get("latency_bound_ms")),
                    "issue_delay_p99_ms": number(dig(trial, "issue_delay_ms.p99")),
                    "queue_wait_p99_ms": number(dig(trial, "queue_wait_ms.p99")),
                    "service_p99_ms": number(dig(trial, "service_ms.p99")),
                    "drop_pct": number(trial.get("drop_pct")),
                    "passed": passed if isinstance(passed, bool) else None,
                    "note": str(trial.get("fail_reason") or trial.get("stopped_early") or ""),
                }
            )
    return pd.DataFrame(rows)


def _reported(stream: dict[str, Any]) -> str:
    rate = number(stream.get("max_sustainable_fps"))
    if "max_sustainable_fps" not in stream:
        verdict = "passed" if stream.get("keeps_up") else f"failed ({stream.get('fail_reason') or 'frames dropped'})"
        return f"One trial at {number(stream.get('target_fps')) or 0:.2f} FPS: {verdict}."
    if "confirmed_trials" in stream:
        if rate is None:
            return f"No rate reported: {stream.get('max_sustainable_fps_why') or 'none was confirmed'}."
        return f"Reported {rate:.2f} FPS after {stream['confirmed_trials']} consecutive passing trials."
    if not rate or not stream.get("keeps_up"):
        return "No rate reported: no confirmation trial kept up with no dropped frame."
    return f"Reported {rate:.2f} FPS after one trial with no dropped frame."


def criteria(run: RunData) -> list[str]:
    """Per ok stream cell: the rule its trials were judged by, and the rate it reports."""
    lines = []
    for record in sort_cells(run.ok):
        stream = _stream(record)
        if stream is None:
            continue
        text = dig(stream, "criterion.text") or LEGACY_CRITERION
        lines.append(f"{cell_label(record)}: {text}. {_reported(stream)}")
    return lines
