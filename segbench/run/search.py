"""`segbench run --search`: cells in the order that decides the Answer soonest, skipping those that cannot change it.

Every step is derived afresh from results.jsonl (so `--resume` continues a search where it stopped, and no cell is
measured twice): the rules (suite/search_rules.py) are checked against the measured cells, every cell they show cannot
change the Answer is recorded `pruned` with its rule and evidence, and the next cell runs. The order is Model
Analyzer's and successive halving's: the cheapest resolution first (the fastest cells, which the Answer prefers, and
the tightest bounds on the larger ones), each cell briefly timed (screening) and timed in full only where its interval
straddles a target or it could still be the Answer. A pruned cell whose rule the measured cells later contradict is
measured after all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from segbench.cell.request import ScreeningPlan
from segbench.results import store as results
from segbench.results.labels import axes_label
from segbench.results.search import accounting, phase, screened_view, slim
from segbench.run.executors.base import Job
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import Suite, Timing
from segbench.suite.search_rules import (
    RULES,
    SCREENING,
    Prune,
    RulesOff,
    best_meeting,
    contradictions,
    group,
    needs_full_timing,
    pixels,
    prune_for,
)
from segbench.suite.targets import Targets

SCREEN_SHARE = 0.25  # a screening timing's share of the suite's timing (successive halving's first rung)
FAILED = ("error", "timeout", "unsupported")


def screening_timing(timing: Timing) -> Timing:
    """The suite's timing cut to a quarter: enough samples for an interval, a fraction of the seconds. The warm-up is
    the suite's own: a shorter one measured cold (fast-scnn 128x128 screened at 77 FPS, 115 in full), a bias no
    interval covers."""
    min_time = timing.min_time_s * SCREEN_SHARE
    return timing.model_copy(
        update={
            "min_time_s": min_time,
            "max_time_s": max(min_time, timing.max_time_s * SCREEN_SHARE),
            "min_iters": max(min(5, timing.min_iters), timing.min_iters // 2),  # never more than the suite asks
            "telemetry_s": timing.telemetry_s * SCREEN_SHARE,
        }
    )


@dataclass(frozen=True)
class Step:
    cell_id: str
    phase: str  # "screen", "full" (screening off) or "extend" (full timing after a screening)
    why: str


@dataclass
class Decision:
    prunes: list[Prune] = field(default_factory=list)  # newly pruned: to record
    next: Step | None = None
    rules_off: RulesOff = field(default_factory=RulesOff)
    queued: int = 0  # cells still to measure (the next included)
    best: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model, the Answer so far


def _order(cell: dict[str, Any], phase_rank: int, index: dict[str, int]) -> tuple[Any, ...]:
    """Cheapest resolution first; within it, every screening before the full timings it decides, small batches first,
    then the suite's order."""
    return (pixels(cell), phase_rank, cell["batch_size"], index[cell["cell_id"]])


def decide(
    cells: list[dict[str, Any]],
    all_records: list[dict[str, Any]],
    targets: Targets,
    screening: bool = True,
    retry: frozenset[str] = frozenset(),
) -> Decision:
    """The prunes to record and the next cell to run, from the cells of the matrix and every record so far; `retry`
    names failed cells to measure again (--retry-failed)."""
    wanted = {cell["cell_id"] for cell in cells}
    latest: dict[str, dict[str, Any]] = {}
    for record in all_records:
        if record.get("cell_id") in wanted:
            latest[record["cell_id"]] = record
    retried = {cell_id for cell_id in retry if latest.get(cell_id, {}).get("status") in FAILED}
    measured = [r for r in latest.values() if r.get("status") != "pruned" and r["cell_id"] not in retried]
    screens = [r for r in all_records if phase(r) == "screen" and phase(latest.get(r["cell_id"], {})) == "extend"]
    screens += [view for view in map(screened_view, measured) if view is not None]  # promoted in their process
    rules_off = contradictions(measured, targets, screens)
    best = best_meeting(measured, targets)
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in measured:
        by_group[group(record)].append(record)
    measured_ids = {r["cell_id"] for r in measured}
    index = {cell["cell_id"]: position for position, cell in enumerate(cells)}
    decision = Decision(rules_off=rules_off, best=best)
    queue: list[tuple[tuple[Any, ...], Step]] = []
    for cell in cells:
        cell_id = cell["cell_id"]
        if cell_id in measured_ids:
            why = needs_full_timing(latest[cell_id], targets, best)
            if why is None and rules_off.off(cell["model"], SCREENING) and phase(latest[cell_id]) == "screen":
                why = "screening is off for this model (a full timing fell outside its screening interval)"
            if why is not None and latest[cell_id].get("status") == "ok":
                queue.append((_order(cell, 1, index), Step(cell_id, "extend", why)))
            continue
        found = prune_for(cell, by_group[group(cell)], targets, rules_off, best)
        if found is not None:
            if latest.get(cell_id, {}).get("status") != "pruned":
                decision.prunes.append(found)
            continue
        was_pruned = latest.get(cell_id, {}).get("status") == "pruned"
        screen = screening and not rules_off.off(cell["model"], SCREENING)
        why = "its rule no longer holds on the cells measured" if was_pruned else "no rule prunes it yet"
        queue.append((_order(cell, 0, index), Step(cell_id, "screen" if screen else "full", why)))
    queue.sort(key=lambda item: item[0])
    decision.queued = len(queue)
    decision.next = queue[0][1] if queue else None
    return decision


def search_meta(decision: Decision, all_records: list[dict[str, Any]], screening: bool) -> dict[str, Any]:
    """The search's state for meta.json: the rules switched off (with the contradicting cells) and what it spent."""
    return {
        "screening": screening,
        "rules_off": decision.rules_off.by_model,
        **accounting(all_records),
    }


def _records(run_dir: Path) -> list[dict[str, Any]]:
    """Every line so far, superseded screenings included (none before the first cell ends)."""
    if not (run_dir / results.RESULTS_FILE).is_file():
        return []
    return results.read_records(run_dir, latest_only=False)


def run_search(
    jobs: list[Job],
    run_dir: Path,
    targets: Targets,
    execute: Callable[[Job, dict[str, Any]], None],
    record_pruned: Callable[[Job, dict[str, Any]], None],
    write_meta: Callable[[dict[str, Any]], None],
    screening: bool = True,
    retry_failed: bool = False,
) -> None:
    """Measure and prune until every cell of `jobs` is decided; each step is written before the next starts."""
    by_id = {job.key: job for job in jobs}
    cells = [{**job.request.cell.to_dict(), "cell_id": job.key} for job in jobs]
    measured_here: set[tuple[str, str]] = set()
    earlier = _records(run_dir) if retry_failed else []
    retry = {r["cell_id"] for r in earlier if r.get("status") in FAILED}  # each retried once, in this run
    while True:
        all_records = _records(run_dir)
        decision = decide(cells, all_records, targets, screening, frozenset(retry))
        for prune in decision.prunes:
            record_pruned(by_id[prune.cell_id], prune.to_search())
        if decision.prunes:
            all_records = _records(run_dir)
        write_meta(search_meta(decision, all_records, screening))
        step = decision.next
        if step is None:
            return
        if (step.cell_id, step.phase) in measured_here:  # a guard: the rules never ask twice, a bug must not loop
            raise RuntimeError(f"the search asked for {step.cell_id} ({step.phase}) twice")
        measured_here.add((step.cell_id, step.phase))
        job = by_id[step.cell_id]
        if step.phase == "screen":
            leader = decision.best.get(job.request.cell.model)
            plan = ScreeningPlan(job.request.timing, targets, slim(leader) if leader else None)
            job = replace(
                job, request=replace(job.request, timing=screening_timing(job.request.timing), screening=plan)
            )
        retry.discard(step.cell_id)
        execute(job, {"phase": step.phase, "why": step.why})


def dry_run_lines(suite: Suite, cells: list[CellSpec], shown: int = 8) -> list[str]:
    """What `run --search --dry-run` says: the order the search starts in and what it may prune (no cell is measured,
    so no cell is pruned yet)."""
    plain = [{**cell.to_dict(), "cell_id": cell.cell_id} for cell in cells]
    index = {cell["cell_id"]: position for position, cell in enumerate(plain)}
    ordered = sorted(plain, key=lambda cell: _order(cell, 0, index))
    timing = screening_timing(suite.timing) if suite.search_screening else suite.timing
    first = ", ".join(axes_label(cell) for cell in ordered[:shown])
    more = f", … ({len(ordered) - shown} more)" if len(ordered) > shown else ""
    screened = (
        f"each cell first screened with a quarter of the timing (min_time_s {timing.min_time_s:g}, max_time_s "
        f"{timing.max_time_s:g}) and timed in full only where its interval straddles a target or it could still be "
        "the Answer"
        if suite.search_screening
        else "each cell timed in full (search_screening: false)"
    )
    return [
        f"search: {len(cells)} cell(s), cheapest resolution first: {first}{more}",
        f"search: {screened}; cells the measured ones show cannot change the Answer are pruned (rules: "
        f"{', '.join(RULES)}), so the estimate above is the most it can spend (plus the full timings of extended "
        "cells); how many are pruned depends on what the first cells measure",
    ]
