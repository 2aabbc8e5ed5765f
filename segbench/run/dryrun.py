"""`segbench run --dry-run`: which cells will run, which the device cannot run, and about how long it takes.

Support is decided by the precisions' and backends' own `unsupported_reason` (no model is built). The
wall-time estimate adds, per cell, a startup cost (process, imports, build, precision and backend
preparation, memory and fidelity passes) and the timed passes the suite's stop rule allows. Startup
costs come from earlier runs' records (`wall_s` minus the timed passes) in the results folder, per
family, precision and backend, made on this machine only (the same CPU, cores, SIMD flags, RAM and GPUs:
a committed H200 or another Xeon's record says nothing about this one). Where records say whether the
prepare cache was hit, the low estimate takes the hits' startup and the high one the misses'. Without
such records the estimate says so and falls back to a default measured for a small model.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.device import is_gpu
from segbench.errors import SegbenchError
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import Suite
from segbench.system.env import fingerprint, machine_identity, resolve_device

# A cell process that imports torch, builds a small model (Fast-SCNN) and runs its untimed passes took
# 7–9 s on a shared 2-core AMD EPYC (results/quick-*): the fallback when no earlier run knows a family.
DEFAULT_STARTUP_S = 9.0
# A cell refused as unsupported still spawns a process and imports torch before it says so.
DEFAULT_UNSUPPORTED_S = 9.0
TIMED_PASSES = 2  # the latency pass and the per-stage pass each run under the stop rule


@dataclass(frozen=True)
class PlannedCell:
    cell: CellSpec
    family: str
    unsupported: str | None = None  # why the device cannot run it; None when it will run
    impractical: str | None = None  # it runs, but the format is emulated here: no deployment choice


@dataclass(frozen=True)
class DryRunPlan:
    cells: list[PlannedCell]
    device: str | None  # None when the requested device is not available here
    device_warning: str | None = None
    requested: str = "cpu"  # the device asked for (auto, cpu, cuda, cuda:N)

    @property
    def device_kind(self) -> str:
        """cpu or cuda: earlier runs on the other kind say nothing about this run's costs."""
        name = self.device or self.requested
        if name == "auto":
            return "cpu"
        return name.split(":")[0]

    @property
    def unsupported_count(self) -> int:
        return sum(1 for planned in self.cells if planned.unsupported)


@dataclass(frozen=True)
class Estimate:
    low_s: float
    high_s: float
    basis: list[str] = field(default_factory=list)  # what the estimate rests on, in words


def plan_cells(suite: Suite, cells: list[CellSpec], device_override: str | None = None) -> DryRunPlan:
    """Mark each cell the device cannot run, from precision and backend checks alone."""
    import torch

    from segbench.backends import get_backend  # lazy: imports torch
    from segbench.models.registry import get_card  # lazy: imports torch
    from segbench.precision import cell_reason, get_precision  # lazy: imports torch

    requested = device_override or suite.device
    try:
        device: str | None = resolve_device(requested)
    except SegbenchError as exc:
        device, warning = None, f"device {requested!r} is not available here, so the run would stop: {exc}"
    else:
        warning = None
    reasons: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    planned = []
    for cell in cells:
        key = (cell.precision, cell.backend)
        if device is not None and key not in reasons:
            where = torch.device(device)
            impractical = get_precision(cell.precision).impractical_reason(where, get_backend(cell.backend).runtime)
            reasons[key] = (cell_reason(cell.precision, cell.backend, where), impractical)
        unsupported, impractical = reasons.get(key, (None, None))
        planned.append(PlannedCell(cell, get_card(cell.model).family, unsupported, impractical))
    return DryRunPlan(planned, device, warning, requested)


@dataclass(frozen=True)
class History:
    """Earlier finished cell records usable for this estimate, and how many were left out as another machine's."""

    records: list[dict[str, Any]]
    other_machines: int = 0


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


def _history(results_dir: Path, device_kind: str, machine: tuple[Any, ...] | None) -> History:
    """Finished cell records (with wall_s) of earlier runs on this kind of device and on this machine; unreadable
    lines and folders are skipped."""
    records, other_machines = [], 0
    for path in sorted(results_dir.glob("*/results.jsonl")):
        meta = _read_json(path.parent / "meta.json")
        run_fingerprint = meta.get("fingerprint") if isinstance(meta, dict) else None
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            on_kind = isinstance(record, dict) and str(record.get("device") or "cpu").split(":")[0] == device_kind
            if not (on_kind and isinstance(record.get("wall_s"), (int, float))):
                continue
            node = record.get("node") if isinstance(record.get("node"), dict) else {}
            stored = node.get("fingerprint") or run_fingerprint
            if machine is None or not isinstance(stored, dict) or machine_identity(stored) != machine:
                other_machines += 1
                continue
            records.append(record)
    return History(records, other_machines)


StartupKey = tuple[str, ...]


def _startup_costs(records: list[dict[str, Any]]) -> tuple[dict[StartupKey, float], list[float]]:
    """Median startup per (family, precision, backend[, cache state]) and per family, and the unsupported cells'
    walls. A record that says whether its prepare cache was hit also counts under that state."""
    samples: dict[StartupKey, list[float]] = defaultdict(list)
    unsupported = []
    for record in records:
        if record.get("status") == "unsupported":
            unsupported.append(float(record["wall_s"]))
        elif (
            record.get("status") == "ok"
            and isinstance(record.get("measured_s"), (int, float))
            and record.get("scenario", "offline") == "offline"
        ):
            startup = max(0.0, float(record["wall_s"]) - TIMED_PASSES * float(record["measured_s"]))
            family = str(record.get("family"))
            key = (family, str(record.get("precision")), str(record.get("backend")))
            samples[key].append(startup)
            if record.get("prepare_cache") in ("hit", "miss"):
                samples[(*key, str(record["prepare_cache"]))].append(startup)
            samples[(family,)].append(startup)
    return {key: statistics.median(values) for key, values in samples.items()}, unsupported


def _startup_range(costs: dict[StartupKey, float], family: str, cell: CellSpec) -> tuple[float, float] | None:
    """Low and high startup of a cell: a warm prepare cache's and a cold one's where records tell them apart."""
    key = (family, cell.precision, cell.backend)
    either = costs.get(key, costs.get((family,)))
    if either is None:
        return None
    return costs.get((*key, "hit"), either), costs.get((*key, "miss"), either)


def _measurement_window(suite: Suite) -> tuple[float, float, str]:
    """Seconds of timed work per cell: the least and the most the stop rule allows."""
    timing = suite.timing
    low, high = TIMED_PASSES * timing.min_time_s, TIMED_PASSES * timing.max_time_s
    words = (
        f"{TIMED_PASSES} timed passes per cell, each between timing.min_time_s={timing.min_time_s:g} s"
        f" and max_time_s={timing.max_time_s:g} s"
    )
    if timing.warmup_s:  # the latency and the end-to-end pass each warm up at least this long before their clocks
        low, high = low + 2 * timing.warmup_s, high + 2 * timing.warmup_s
        words += f", plus a latency and an end-to-end warm-up of at least timing.warmup_s={timing.warmup_s:g} s each"
    if is_gpu(suite.device):  # a back-to-back throughput loop under the stop rule, then the telemetry pass
        low, high = low + timing.min_time_s + timing.telemetry_s, high + timing.max_time_s + timing.telemetry_s
        words += (
            f", plus (GPU) a device-throughput loop and a telemetry pass of timing.telemetry_s={timing.telemetry_s:g} s"
        )
    if suite.scenario == "stream":
        stream = suite.stream
        if stream.target_fps == "max":  # at least k confirmations of duration_s; at most the search budget
            budget = stream.search_budget(timing.timeout_s)
            low, high = low + stream.confirmations * stream.duration_s, high + budget
            words += (
                f", plus a stream search: {stream.confirmations} confirmation trial(s) of at least "
                f"{stream.duration_s:g} s, at most its {budget:g} s budget"
            )
        else:
            seconds = max(stream.duration_s, stream.trial_frames() / stream.target_fps)
            low, high = low + seconds, high + seconds
            words += f", plus a stream trial of {seconds:g} s"
    if suite.scenario == "capacity":  # per policy: at least k confirmations; all policies within the budget
        capacity = suite.capacity
        budget = capacity.search_budget(timing.timeout_s)
        low, high = low + len(capacity.policies) * capacity.confirmations * capacity.duration_s, high + budget
        words += (
            f", plus a capacity search per policy ({', '.join(capacity.policies)}): {capacity.confirmations} "
            f"confirmation trial(s) of at least {capacity.duration_s:g} s each, at most its {budget:g} s budget"
        )
    if suite.cooldown and suite.cooldown.fixed_s:
        low, high = low + suite.cooldown.fixed_s, high + suite.cooldown.fixed_s
        words += f", plus a {suite.cooldown.fixed_s:g} s cooldown"
    return low, high, words


def estimate_wall_time(suite: Suite, plan: DryRunPlan, results_dir: Path) -> Estimate:
    """Low and high wall time of the planned cells, with the figures it rests on."""
    history = _history(results_dir, plan.device_kind, machine_identity(fingerprint()))
    records = history.records
    costs, unsupported_walls = _startup_costs(records)
    unsupported_s = statistics.median(unsupported_walls) if unsupported_walls else DEFAULT_UNSUPPORTED_S
    low_window, high_window, window_words = _measurement_window(suite)
    low = high = 0.0
    from_history: set[str] = set()
    from_default: set[str] = set()
    for planned in plan.cells:
        if planned.unsupported:
            low, high = low + unsupported_s, high + unsupported_s
            continue
        startup = _startup_range(costs, planned.family, planned.cell)
        (from_history if startup is not None else from_default).add(planned.family)
        low_startup, high_startup = (DEFAULT_STARTUP_S, DEFAULT_STARTUP_S) if startup is None else startup
        low, high = low + low_startup + low_window, high + high_startup + high_window
    basis = []
    if from_history:
        basis.append(
            f"startup per cell from {len(records)} earlier {plan.device_kind} cell record(s) made on this machine"
            f" in {results_dir}/ for {', '.join(sorted(from_history))}"
        )
    if history.other_machines:
        basis.append(
            f"{history.other_machines} {plan.device_kind} cell record(s) in {results_dir}/ from other machines left"
            " out (another CPU, core count, RAM or GPU says nothing about this one's start-up)"
        )
    if from_default:
        basis.append(
            f"a default startup of {DEFAULT_STARTUP_S:g} s per cell for {', '.join(sorted(from_default))}"
            f" (no earlier {plan.device_kind} run of that family on this machine in {results_dir}/;"
            " measured for Fast-SCNN on a 2-core CPU)"
        )
    basis.append(window_words)
    if plan.unsupported_count:
        basis.append(
            f"{plan.unsupported_count} unsupported cell(s) at {unsupported_s:.0f} s each"
            " (a process starts to refuse them)"
        )
    if suite.roofline.measure_ceiling:
        low, high = (
            low + suite.roofline.ceiling_seconds + DEFAULT_STARTUP_S,
            high + suite.roofline.ceiling_seconds + DEFAULT_STARTUP_S,
        )
        basis.append(f"the roofline ceiling measurement (~{suite.roofline.ceiling_seconds + DEFAULT_STARTUP_S:g} s)")
    return Estimate(low, high, basis)


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
