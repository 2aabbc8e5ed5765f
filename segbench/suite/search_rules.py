"""The search's rules: which cells can no longer change the Answer, on the evidence of the cells measured so far.

Pure functions of record dicts (measured cells, as results.jsonl holds them), the cells not yet measured (as record
dicts without figures) and the targets, so each rule is tested on constructed records. Each rule is named, prunes only
on measured figures (95 % intervals where the record has them, a noise margin where it does not) and is switched off
for a model whose own measured cells contradict its assumption:

- `memory-monotone`: memory does not fall with batch or pixels (same model, precision, backend): an OOM, or a clear
  miss of the memory target, prunes every cell at least as large in both.
- `resolution-monotone`: more pixels is not faster (same model, batch, precision, backend): a cell that clearly misses
  a speed target (achieved FPS, a latency percentile) prunes the larger resolutions.
- `dominance`: the Answer is the fastest configuration meeting every target; a cell whose speed is bounded (by
  resolution-monotone) below a measured cell that meets every target (plus ANSWER_TOLERANCE, issue 31's 5 %) cannot
  be it, or can beat it by no more than that. It needs no accuracy ranking: with
  accuracy measured (a dataset or an accuracy target) an unmeasured cell's accuracy is unknown, and dominance is off.
- `screening`: a cell is first timed briefly; only a cell whose interval (widened by SCREEN_MARGIN) straddles a
  target, or which could still be the Answer, is timed in full (successive halving). Off for a model where a full
  timing fell outside its widened screening interval: every screened cell of that model is then timed in full.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from segbench.results.labels import axes_label
from segbench.results.metrics import METRICS, interval
from segbench.suite.targets import Requirement, Targets

MEMORY_MONOTONE = "memory-monotone"
RESOLUTION_MONOTONE = "resolution-monotone"
DOMINANCE = "dominance"
SCREENING = "screening"
RULES = (MEMORY_MONOTONE, RESOLUTION_MONOTONE, DOMINANCE, SCREENING)
NOISE = 0.05  # the margin a figure without an interval gets, and the least a contradiction must exceed
# A screening interval rests on few samples: the search reads it widened by this much, and a full timing outside the
# widened interval switches screening off for the model.
SCREEN_MARGIN = 0.10
# Issue 31's bar: the search's Answer is the exhaustive run's, or one within 5 % of its FPS meeting every target. A
# cell bounded below the best measured cell's FPS plus this share cannot beat it by more.
ANSWER_TOLERANCE = 0.05
SPEED_METRICS = ("achieved_fps", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms")
ACCURACY_METRICS = ("pixel_agreement_pct", "miou_gt_pct")
MEASURED = ("ok", "oom")  # statuses whose figures are evidence


@dataclass(frozen=True)
class Prune:
    """A cell the search skips: the rule, one sentence and the measured cells it rests on (ids and figures)."""

    cell_id: str
    rule: str
    reason: str
    evidence: tuple[dict[str, Any], ...]

    def to_search(self) -> dict[str, Any]:
        return {"rule": self.rule, "reason": self.reason, "evidence": list(self.evidence)}


@dataclass
class RulesOff:
    """Rules switched off per model, each with the measured cells that contradict it."""

    by_model: dict[str, dict[str, str]] = field(default_factory=dict)

    def off(self, model: str, rule: str) -> bool:
        return rule in self.by_model.get(model, {}) or rule in self.by_model.get("*", {})

    def switch_off(self, model: str, rule: str, why: str) -> None:
        self.by_model.setdefault(model, {}).setdefault(rule, why)


_REQUIREMENTS: dict[int, tuple[Targets, list[Requirement]]] = {}


def requirements_of(targets: Targets) -> list[Requirement]:
    """The targets' requirements, built once per Targets (a card's memory budget reads its profile's YAML)."""
    cached = _REQUIREMENTS.get(id(targets))
    if cached is None or cached[0] is not targets:
        cached = (targets, targets.requirements())
        _REQUIREMENTS[id(targets)] = cached
    return cached[1]


def meets(record: dict[str, Any], targets: Targets) -> bool:
    """The verdict `meets` (suite/targets.py): ok, every target met, none borderline."""
    if record.get("status") != "ok":
        return False
    checks = [requirement.check(record) for requirement in requirements_of(targets)]
    return all(check.passed for check in checks) and not any(check.borderline for check in checks)


def _judged_ok(record: dict[str, Any], targets: Targets) -> bool:
    """Meets every target or is borderline on one: no target clearly missed, none unknown."""
    if record.get("status") != "ok":
        return False
    return all(requirement.check(record).passed for requirement in requirements_of(targets))


def group(record: dict[str, Any]) -> str:
    """What must match for two cells to be compared along resolution and batch."""
    keys = ("model", "weights", "options", "precision", "backend", "scenario")
    return json.dumps([record.get(key) for key in keys], sort_keys=True, default=str)


def pixels(record: dict[str, Any]) -> int:
    height, width = record["resolution"]
    return int(height) * int(width)


def side_text(record: dict[str, Any]) -> str:
    height, width = record["resolution"]
    return f"{height}²" if height == width else f"{height}x{width}"


def _fps(record: dict[str, Any]) -> float | None:
    return METRICS["achieved_fps"].value(record)


def fps_bounds(record: dict[str, Any]) -> tuple[float, float] | None:
    """The achieved FPS's 95 % interval, or the value ± NOISE where none was measured."""
    value = _fps(record)
    if value is None:
        return None
    measured = interval(METRICS["achieved_fps"], record)
    return _widened(record, measured if measured is not None else (value * (1 - NOISE), value * (1 + NOISE)))


def _widened(record: dict[str, Any], bounds: tuple[float, float]) -> tuple[float, float]:
    """A screened cell's interval as the search reads it: SCREEN_MARGIN wider on each side."""
    if (record.get("search") or {}).get("phase") != "screen":
        return bounds
    return bounds[0] * (1 - SCREEN_MARGIN), bounds[1] * (1 + SCREEN_MARGIN)


def _bounds(requirement: Requirement, record: dict[str, Any]) -> tuple[float, float] | None:
    metric = requirement.metric_for(record)
    value = metric.value(record)
    if value is None:
        return None
    measured = interval(metric, record)
    return _widened(record, measured if measured is not None else (value * (1 - NOISE), value * (1 + NOISE)))


def clearly_misses(requirement: Requirement, record: dict[str, Any]) -> bool:
    """The whole interval lies on the wrong side of the bound: no rerun would meet it."""
    bounds = _bounds(requirement, record)
    if bounds is None:
        return False
    low, high = bounds
    return high < requirement.threshold if requirement.kind == "at_least" else low > requirement.threshold


def evidence_of(record: dict[str, Any], *metrics: str) -> dict[str, Any]:
    """A measured cell as evidence: its id, its name, its status and the figures a rule read."""
    figures: dict[str, Any] = {}
    for key in metrics:
        value = METRICS[key].value(record)
        if value is not None:
            figures[key] = round(value, 4)
            bounds = interval(METRICS[key], record)
            if bounds is not None:
                figures[f"{key}_ci95"] = [round(bounds[0], 4), round(bounds[1], 4)]
    return {
        "cell_id": record["cell_id"],
        "cell": axes_label(record),
        "status": record.get("status"),
        "screened": (record.get("search") or {}).get("phase") == "screen",
        "figures": figures,
    }


def _fps_text(record: dict[str, Any]) -> str:
    bounds = interval(METRICS["achieved_fps"], record)
    ci = f" (95 % CI {bounds[0]:.1f}–{bounds[1]:.1f})" if bounds else ""
    return f"{_fps(record):.1f} FPS end to end{ci}"


def target_text(requirement: Requirement) -> str:
    """'30 FPS end to end' for the FPS target, the requirement's own label for any other."""
    if requirement.metric == "achieved_fps":
        return f"{requirement.threshold:g} FPS end to end"
    return requirement.label


def _where(record: dict[str, Any]) -> str:
    return f"batch {record['batch_size']} at {side_text(record)}"


# ---- contradictions: a rule the measured cells refute is switched off for that model --------------------------------


def contradictions(measured: list[dict[str, Any]], targets: Targets, screens: list[dict[str, Any]]) -> RulesOff:
    """Each rule's assumption checked against the measured cells; `screens` are screening records superseded by a full
    timing of the same cell."""
    rules_off = RulesOff()
    ok = [r for r in measured if r.get("status") == "ok"]
    by_group: dict[str, list[dict[str, Any]]] = {}
    for record in measured:
        by_group.setdefault(group(record), []).append(record)
    for records in by_group.values():
        _check_group(records, targets, rules_off)
    _check_screening(measured, screens, rules_off)
    if any(requirement.metric in ACCURACY_METRICS for requirement in requirements_of(targets)) or any(
        r.get("accuracy") for r in ok
    ):
        rules_off.switch_off("*", DOMINANCE, "the run measures accuracy: an unmeasured cell's accuracy is unknown")
    return rules_off


def _check_group(records: list[dict[str, Any]], targets: Targets, rules_off: RulesOff) -> None:
    """Resolution and memory monotonicity checked on every pair of one group's measured cells."""
    ok = [r for r in records if r.get("status") == "ok"]
    for small in ok:
        for large in ok:
            if large is not small:
                _check_resolution(small, large, rules_off)
                _check_memory(small, large, targets, rules_off)
    for oom in (r for r in records if r.get("status") == "oom"):
        for fitted in ok:
            if _at_least_as_large(fitted, oom):
                rules_off.switch_off(
                    oom["model"],
                    MEMORY_MONOTONE,
                    f"{axes_label(fitted)} ran ok although {axes_label(oom)}, no larger, ran out of memory",
                )


def _at_least_as_large(cell: dict[str, Any], than: dict[str, Any]) -> bool:
    return cell["batch_size"] >= than["batch_size"] and pixels(cell) >= pixels(than)


def _check_resolution(small: dict[str, Any], large: dict[str, Any], rules_off: RulesOff) -> None:
    if small["batch_size"] != large["batch_size"] or pixels(large) <= pixels(small):
        return
    small_fps, large_fps = fps_bounds(small), fps_bounds(large)
    if small_fps is None or large_fps is None:
        return
    # Faster beyond noise: the intervals apart and the medians more than NOISE apart.
    if large_fps[0] > small_fps[1] and (_fps(large) or 0) > (_fps(small) or 0) * (1 + NOISE):
        rules_off.switch_off(
            small["model"],
            RESOLUTION_MONOTONE,
            f"{axes_label(large)} measured {_fps_text(large)}, faster than {axes_label(small)} at {_fps_text(small)}",
        )
        rules_off.switch_off(small["model"], DOMINANCE, f"it rests on {RESOLUTION_MONOTONE}, contradicted here")


def _memory(record: dict[str, Any], targets: Targets) -> float | None:
    memory = [requirement for requirement in requirements_of(targets) if requirement.metric == "memory"]
    metric = memory[0].metric_for(record) if memory else METRICS["footprint_mb"]
    return metric.value(record)


def _check_memory(small: dict[str, Any], large: dict[str, Any], targets: Targets, rules_off: RulesOff) -> None:
    if not _at_least_as_large(large, small) or (pixels(large), large["batch_size"]) == (
        pixels(small),
        small["batch_size"],
    ):
        return
    small_mb, large_mb = _memory(small, targets), _memory(large, targets)
    if small_mb is None or large_mb is None:
        return
    if large_mb < small_mb * (1 - 2 * NOISE) - 1.0:  # well below: one MiB and 10 % of allocator noise allowed
        rules_off.switch_off(
            small["model"],
            MEMORY_MONOTONE,
            f"{axes_label(large)} measured {large_mb:.0f} MiB, less than {axes_label(small)} at {small_mb:.0f} MiB",
        )


def _check_screening(measured: list[dict[str, Any]], screens: list[dict[str, Any]], rules_off: RulesOff) -> None:
    full = {r["cell_id"]: r for r in measured if (r.get("search") or {}).get("phase") == "extend"}
    for screen in screens:
        extended = full.get(screen["cell_id"])
        bounds = fps_bounds(screen)
        value = _fps(extended) if extended else None
        if bounds is None or value is None:
            continue
        low, high = bounds  # already widened by SCREEN_MARGIN
        if not low <= value <= high:
            rules_off.switch_off(
                screen["model"],
                SCREENING,
                f"{axes_label(screen)} screened at {_fps_text(screen)} but measured {value:.1f} FPS in full",
            )


# ---- the prunes ---------------------------------------------------------------------------------------------------


def best_meeting(measured: list[dict[str, Any]], targets: Targets) -> dict[str, dict[str, Any]]:
    """Per model, the fastest measured cell that meets every target (the Answer so far)."""
    best: dict[str, dict[str, Any]] = {}
    for record in measured:
        if not meets(record, targets):
            continue
        current = best.get(record["model"])
        if current is None or (_fps(record) or 0) > (_fps(current) or 0):
            best[record["model"]] = record
    return best


def prune_for(
    cell: dict[str, Any],
    measured: list[dict[str, Any]],
    targets: Targets,
    rules_off: RulesOff,
    best: dict[str, dict[str, Any]],
) -> Prune | None:
    """The first rule that shows this unmeasured cell cannot change the Answer, or None (it must be measured).
    `measured` may be every measured cell or only those of the cell's group (the search passes those)."""
    key = group(cell)
    same = [r for r in measured if r["cell_id"] != cell["cell_id"] and group(r) == key]
    model = cell["model"]
    for rule, find in (
        (MEMORY_MONOTONE, _memory_prune),
        (RESOLUTION_MONOTONE, _resolution_prune),
        (DOMINANCE, _dominance_prune),
    ):
        if rules_off.off(model, rule) or (rule == DOMINANCE and rules_off.off(model, RESOLUTION_MONOTONE)):
            continue
        found = find(cell, same, targets, best.get(model))
        if found is not None:
            return found
    return None


def _memory_prune(
    cell: dict[str, Any], same: list[dict[str, Any]], targets: Targets, best: dict[str, Any] | None
) -> Prune | None:
    memory = [requirement for requirement in requirements_of(targets) if requirement.metric == "memory"]
    for record in sorted(same, key=lambda r: (pixels(r), r["batch_size"])):
        if not _at_least_as_large(cell, record):
            continue
        if record.get("status") == "oom":
            return Prune(
                cell["cell_id"],
                MEMORY_MONOTONE,
                f"{_where(cell)} cannot fit: {_where(record)} ran out of memory, and memory does not fall with batch "
                "or pixels",
                (evidence_of(record),),
            )
        if record.get("status") == "ok" and memory and clearly_misses(memory[0], record):
            figure = memory[0].metric_for(record)
            return Prune(
                cell["cell_id"],
                MEMORY_MONOTONE,
                f"{_where(cell)} cannot meet {memory[0].label}: {_where(record)} measured {figure.name} "
                f"{figure.show(figure.value(record))}, and memory does not fall with batch or pixels",
                (evidence_of(record, figure.key),),
            )
    return None


def _smaller_same_batch(cell: dict[str, Any], same: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (
            r
            for r in same
            if r.get("status") == "ok" and r["batch_size"] == cell["batch_size"] and pixels(r) < pixels(cell)
        ),
        key=pixels,
        reverse=True,  # the nearest smaller resolution is the tightest bound
    )


def _resolution_prune(
    cell: dict[str, Any], same: list[dict[str, Any]], targets: Targets, best: dict[str, Any] | None
) -> Prune | None:
    speed = [requirement for requirement in requirements_of(targets) if requirement.metric in SPEED_METRICS]
    for record in _smaller_same_batch(cell, same):
        for requirement in speed:
            if clearly_misses(requirement, record):
                metric = requirement.metric_for(record)
                shown = _fps_text(record) if metric.key == "achieved_fps" else metric.show(metric.value(record))
                return Prune(
                    cell["cell_id"],
                    RESOLUTION_MONOTONE,
                    f"{_where(cell)} cannot meet {target_text(requirement)}: {_where(record)} measured {shown}, "
                    "and more pixels is not faster for this model, batch, precision and backend",
                    (evidence_of(record, metric.key),),
                )
    return None


def _dominance_prune(
    cell: dict[str, Any], same: list[dict[str, Any]], targets: Targets, best: dict[str, Any] | None
) -> Prune | None:
    if best is None:
        return None
    best_fps = _fps(best) or 0.0
    for record in _smaller_same_batch(cell, same):
        bounds = fps_bounds(record)
        if bounds is None:
            continue
        if record["cell_id"] == best["cell_id"] or bounds[1] < best_fps * (1 + ANSWER_TOLERANCE):
            return Prune(
                cell["cell_id"],
                DOMINANCE,
                f"{_where(cell)} cannot be the Answer: {_where(record)} measured {_fps_text(record)} and more pixels "
                f"is not faster, while {axes_label(best)} meets every target at {_fps_text(best)}, so it cannot beat "
                f"that by more than {ANSWER_TOLERANCE:.0%} (the Answer is the fastest configuration meeting every "
                "target; this run ranks no accuracy)",
                (evidence_of(record, "achieved_fps"), evidence_of(best, "achieved_fps")),
            )
    return None


# ---- screening: which briefly timed cells are timed in full ---------------------------------------------------------


def needs_full_timing(record: dict[str, Any], targets: Targets, best: dict[str, dict[str, Any]]) -> str | None:
    """Why a screened cell is timed in full (its interval straddles a target, or it could still be the Answer), or
    None: the brief timing decides it."""
    if record.get("status") != "ok" or (record.get("search") or {}).get("phase") != "screen":
        return None
    for requirement in requirements_of(targets):
        bounds = _bounds(requirement, record)
        if bounds is None:
            return f"its screening timing cannot judge {target_text(requirement)} (the figure is missing)"
        if bounds[0] <= requirement.threshold <= bounds[1]:
            return f"its interval straddles {target_text(requirement)}"
    leader = best.get(record["model"])
    if _judged_ok(record, targets) and leader is not None:
        bounds, leader_bounds = fps_bounds(record), fps_bounds(leader)
        if record["cell_id"] == leader["cell_id"]:
            return "it is the Answer so far"
        if bounds is not None and leader_bounds is not None and bounds[1] >= leader_bounds[0]:
            return f"its interval overlaps the Answer so far ({axes_label(leader)})"
    return None


def promotion(record: dict[str, Any], targets: Targets, leader: dict[str, Any] | None) -> str | None:
    """Why a cell screened in its own process is timed in full there, or None (its screening decides it): judged as
    the search's next step would judge it, against the Answer so far and the cell itself, either of which may lead."""
    screened = {**record, "search": {"phase": "screen"}}
    best = best_meeting([r for r in (leader, screened) if r is not None], targets)
    return needs_full_timing(screened, targets, best)
