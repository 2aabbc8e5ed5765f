"""What a search run (`segbench run --search`) spent, against an estimate of what the whole matrix would have cost,
and the `search` field of its records.

Spent: the wall seconds of every cell process the search ran (a screening timing and the full timing after it both
count). A screened cell that promoted itself to full timing in its own process (cell/passes.py) is one process: its
exhaustive cost is its wall time less its screening passes. The exhaustive estimate: each cell's full timing where it
ran; a cell only screened, its wall time with its screening passes scaled by the full/screening ratio of this
model's promoted cells' passes (or, for a screening extended in a second process, the wall-time ratio); a pruned cell
the estimate of its nearest measured neighbour of the same model (a lower bound where the pruned cell is the larger,
as it usually is).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from segbench.results.metrics import number


def phase(record: dict[str, Any]) -> str | None:
    """'screen', 'extend' (the full timing after a screening), 'full', or None outside a search."""
    return (record.get("search") or {}).get("phase")


def searched(outcome: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """A cell's outcome with its `search` field: the step the search asked for, or, where the cell promoted its
    screening to a full timing in its own process, an `extend` step carrying what the screening measured."""
    outcome = dict(outcome)
    screening = outcome.pop("screening", None)
    if screening is None:
        return {**outcome, "search": step}
    if screening.get("promoted") is None:
        return {**outcome, "search": {**step, "screen_passes_s": screening.get("passes_s")}}
    why = f"{screening['promoted']} (timed in full in the screening's own process)"
    return {**outcome, "search": {"phase": "extend", "why": why, "in_process": True, "screen": screening}}


def screened_view(record: dict[str, Any]) -> dict[str, Any] | None:
    """A cell promoted in its own process as its screening read it (its figures, phase `screen`), for the check that
    a full timing falls inside its screening's interval; None for any other record."""
    search = record.get("search") or {}
    if not search.get("in_process"):
        return None
    return {**record, **search["screen"]["figures"], "search": {"phase": "screen"}}


def slim(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its sample lists: what a cell's process needs of the Answer so far to judge itself."""
    return {key: value for key, value in record.items() if not key.endswith("samples_ms")}


def is_pruned(record: dict[str, Any]) -> bool:
    return record.get("status") == "pruned"


def _wall(record: dict[str, Any]) -> float:
    return number(record.get("wall_s")) or 0.0


def _distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    def size(record: dict[str, Any]) -> float:
        height, width = record["resolution"]
        return float(height) * float(width)

    mismatch = (a.get("precision") != b.get("precision")) + (a.get("backend") != b.get("backend"))
    return abs(math.log(size(a) / size(b))) + abs(math.log(a["batch_size"] / b["batch_size"])) + 2.0 * mismatch


def _model_median(ratios: list[tuple[str, float]], model: str) -> float | None:
    """The median of this model's ratios, else of every model's; None where there are none."""
    found = [ratio for owner, ratio in ratios if owner == model] or [ratio for _, ratio in ratios]
    return statistics.median(found) if found else None


def _full_ratio(all_records: list[dict[str, Any]], model: str) -> float:
    """Full timing's wall seconds over the screening's, from this model's cells timed both ways (else any model's)."""
    screens = {r["cell_id"]: _wall(r) for r in all_records if phase(r) == "screen"}
    ratios = [
        (r["model"], _wall(r) / screens[r["cell_id"]])
        for r in all_records
        if phase(r) == "extend" and screens.get(r["cell_id"])
    ]
    found = _model_median(ratios, model)
    return 1.0 if found is None else found


def _passes_ratio(all_records: list[dict[str, Any]], model: str) -> float | None:
    """Full timing's passes over the screening's, from cells promoted in their own process (this model's, else any)."""
    ratios = []
    for record in all_records:
        screen = (record.get("search") or {}).get("screen") or {}
        if screen.get("full_passes_s") and screen.get("passes_s"):
            ratios.append((record["model"], screen["full_passes_s"] / screen["passes_s"]))
    return _model_median(ratios, model)


def _exhaustive_cost(record: dict[str, Any], all_records: list[dict[str, Any]]) -> float:
    """What this measured cell would have cost timed in full once, as the exhaustive run times it."""
    search = record.get("search") or {}
    if search.get("in_process"):
        return max(0.0, _wall(record) - (number(search["screen"].get("passes_s")) or 0.0))
    if phase(record) != "screen":
        return _wall(record)
    screen_s, ratio = number(search.get("screen_passes_s")), _passes_ratio(all_records, record["model"])
    if screen_s is not None and ratio is not None:
        return _wall(record) + screen_s * (ratio - 1.0)
    return _wall(record) * _full_ratio(all_records, record["model"])


def accounting(all_records: list[dict[str, Any]]) -> dict[str, Any]:
    """Device-seconds spent and the exhaustive run's estimate, from every line of a run's results.jsonl."""
    latest: dict[str, dict[str, Any]] = {}
    for record in all_records:
        latest[record["cell_id"]] = record
    spent = sum(_wall(r) for r in all_records if not is_pruned(r))
    full_cost: dict[str, float] = {}
    for cell_id, record in latest.items():
        if not is_pruned(record):
            full_cost[cell_id] = _exhaustive_cost(record, all_records)
    estimate = sum(full_cost.values())
    pruned = [r for r in latest.values() if is_pruned(r)]
    for record in pruned:
        neighbours = [latest[i] for i in full_cost if latest[i]["model"] == record["model"]] or [
            latest[i] for i in full_cost
        ]
        if neighbours:
            nearest = min(neighbours, key=lambda other: _distance(record, other))
            estimate += full_cost[nearest["cell_id"]]
    measured = [r for r in latest.values() if not is_pruned(r)]
    return {
        "cells": len(latest),
        "measured": len(measured),
        "pruned": len(pruned),
        "screened_only": sum(phase(r) == "screen" for r in measured),
        "timed_in_full": sum(phase(r) in ("extend", "full") for r in measured),
        "promoted_in_process": sum(bool((r.get("search") or {}).get("in_process")) for r in measured),
        "spent_s": round(spent, 1),
        "exhaustive_estimate_s": round(estimate, 1),
        "share": round(spent / estimate, 3) if estimate else None,
    }


def search_sentence(figures: dict[str, Any]) -> str:
    """'The Answer came from a search: 14 of 48 cells measured …, 34 pruned; 95 device-seconds against an estimated
    410 for the whole matrix (23 %).'"""
    share = figures.get("share")
    share_text = f" ({share:.0%})" if isinstance(share, (int, float)) else ""
    promoted = figures.get("promoted_in_process") or 0
    in_process = f", {promoted} of them straight after their screening, in its process" if promoted else ""
    return (
        f"The Answer came from a search (segbench run --search): {figures['measured']} of {figures['cells']} cells "
        f"measured ({figures['timed_in_full']} timed in full{in_process}, {figures['screened_only']} decided by a "
        f"brief screening timing), {figures['pruned']} pruned as unable to change the Answer; "
        f"{figures['spent_s']:g} device-seconds "
        f"spent against an estimated {figures['exhaustive_estimate_s']:g} for the whole matrix{share_text}. "
        "Pruned cells and their evidence are listed below; `segbench run --resume RUN --retry-pruned` measures them."
    )
