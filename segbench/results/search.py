"""What a search run (`segbench run --search`) spent, against an estimate of what the whole matrix would have cost.

Spent: the wall seconds of every cell process the search ran (a screening timing and the full timing after it both
count). The exhaustive estimate: each cell's full timing where it ran, a screened cell's screening scaled by the
full/screening ratio measured on this model's extended cells, and a pruned cell the estimate of its nearest measured
neighbour of the same model (a lower bound where the pruned cell is the larger, as it usually is).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from segbench.results.metrics import number


def phase(record: dict[str, Any]) -> str | None:
    """'screen', 'extend' (the full timing after a screening), 'full', or None outside a search."""
    return (record.get("search") or {}).get("phase")


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


def _full_ratio(all_records: list[dict[str, Any]], model: str) -> float:
    """Full timing's wall seconds over the screening's, from this model's cells timed both ways (else any model's)."""
    screens = {r["cell_id"]: _wall(r) for r in all_records if phase(r) == "screen"}

    def ratios(only: str | None) -> list[float]:
        return [
            _wall(r) / screens[r["cell_id"]]
            for r in all_records
            if phase(r) == "extend" and screens.get(r["cell_id"]) and (only is None or r["model"] == only)
        ]

    found = ratios(model) or ratios(None)
    return statistics.median(found) if found else 1.0


def accounting(all_records: list[dict[str, Any]]) -> dict[str, Any]:
    """Device-seconds spent and the exhaustive run's estimate, from every line of a run's results.jsonl."""
    latest: dict[str, dict[str, Any]] = {}
    for record in all_records:
        latest[record["cell_id"]] = record
    spent = sum(_wall(r) for r in all_records if not is_pruned(r))
    full_cost: dict[str, float] = {}
    for cell_id, record in latest.items():
        if is_pruned(record):
            continue
        scale = _full_ratio(all_records, record["model"]) if phase(record) == "screen" else 1.0
        full_cost[cell_id] = _wall(record) * scale
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
        "spent_s": round(spent, 1),
        "exhaustive_estimate_s": round(estimate, 1),
        "share": round(spent / estimate, 3) if estimate else None,
    }


def search_sentence(figures: dict[str, Any]) -> str:
    """'The Answer came from a search: 14 of 48 cells measured …, 34 pruned; 95 device-seconds against an estimated
    410 for the whole matrix (23 %).'"""
    share = figures.get("share")
    share_text = f" ({share:.0%})" if isinstance(share, (int, float)) else ""
    return (
        f"The Answer came from a search (segbench run --search): {figures['measured']} of {figures['cells']} cells "
        f"measured ({figures['timed_in_full']} timed in full, {figures['screened_only']} decided by a brief screening "
        f"timing), {figures['pruned']} pruned as unable to change the Answer; {figures['spent_s']:g} device-seconds "
        f"spent against an estimated {figures['exhaustive_estimate_s']:g} for the whole matrix{share_text}. "
        "Pruned cells and their evidence are listed below; `segbench run --resume RUN --retry-pruned` measures them."
    )
