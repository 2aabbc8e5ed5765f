"""A run folder loaded for reading, and the accessors every view uses to name and read a record.

The parent side (runner, expectations) and the reports read runs the same way: `load_run` repairs and
validates through the store, groups a multi-card run by card and adds accuracy deltas against fp32 eager.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.device import gpu_index, is_gpu
from segbench.measure.telemetry import MIN_WINDOW_S
from segbench.results import store as results
from segbench.results.devices import ran_on
from segbench.results.metrics import MEMORY_FIGURES, headline_memory, is_reference, number


@dataclass(frozen=True)
class RunData:
    """Everything a report reads from one run folder."""

    path: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]
    suite: dict[str, Any] = field(default_factory=dict)
    # A report over several run folders: each folder by name (records say theirs under `run`); empty for one run.
    sources: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return " + ".join(self.sources) if self.sources else self.path.name

    def folder_of(self, record: dict[str, Any]) -> Path:
        """The run folder a record was measured in."""
        return self.sources.get(str(record.get("run")), self.path)

    @property
    def suite_name(self) -> str:
        return str(self.meta.get("suite") or self.suite.get("name") or self.path.name)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.meta.get("fingerprint") or {}

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "ok"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") != "ok"]

    @property
    def has_fidelity(self) -> bool:
        return any(fidelity(r).get("pixel_agreement") is not None for r in self.ok)

    @property
    def random_weight_models(self) -> list[str]:
        """Models that ran without a local weights file (random weights from a fixed seed)."""
        return sorted({r["model"] for r in self.records if not r.get("weights")})

    @property
    def is_gpu_run(self) -> bool:
        return is_gpu(self.meta.get("device")) or any(is_gpu(r.get("device")) for r in self.ok)

    def device_memory(self) -> tuple[float, str] | None:
        """The memory the headline figure competes for: the GPU's on a CUDA run, host RAM otherwise."""
        if self.is_gpu_run:
            gpus = self.fingerprint.get("gpus") or []
            index = gpu_index(self.meta.get("device"))
            if index < len(gpus) and gpus[index].get("memory_mb"):
                gpu = gpus[index]
                return float(gpu["memory_mb"]), f"{gpu.get('name') or 'GPU'} memory"
            return None
        ram_gb = self.fingerprint.get("ram_gb")
        return (float(ram_gb) * 1024, "host RAM") if ram_gb else None

    def budget(self) -> tuple[float, str] | None:
        """The memory budget to draw and judge against, with its label, when the run names one.

        In order: an explicit `budget_mb` in meta.json; the suite's one hardware target (a card
        profile: the total its driver reports, comparable with NVML's per-process peak); the allocator budget a
        cell ran under (`budget.budget_mb`); a `budget_mb`/`budget_gb` in the suite's hardware mapping.
        """
        explicit = _budget_from(self.meta)
        if explicit is not None:
            return explicit, "budget"
        profile = _target_profile(self.meta.get("hardware_target"))
        if profile is not None:
            return float(profile.total_mb), f"{profile.name} budget"
        for record in self.ok:
            cell_budget = record.get("budget")
            if isinstance(cell_budget, dict) and number(cell_budget.get("budget_mb")):
                return float(cell_budget["budget_mb"]), f"{cell_budget.get('target') or 'allocator'} budget"
        from_suite = _budget_from(self.suite.get("hardware"))
        return (from_suite, "budget") if from_suite is not None else None

    def budget_mb(self) -> float | None:
        budget = self.budget()
        return budget[0] if budget else None


def _target_profile(target: Any) -> Any:
    """The hardware profile of a run's single target card, or None (no target, several, or unknown)."""
    if isinstance(target, list):
        target = target[0] if len(target) == 1 else None
    if not isinstance(target, str) or not target:
        return None
    try:
        from segbench.hardware import list_profiles, load_profile  # lazy: imports torch
    except ImportError:  # an older segbench without card profiles
        return None
    return load_profile(target) if target in list_profiles() else None


def _budget_from(source: Any) -> float | None:
    if not isinstance(source, dict):
        return None
    for key, scale in (("budget_mb", 1.0), ("budget_gb", 1024.0)):
        value = source.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value) * scale
    return None


# A card draws at most its TDP; NVML readings above this multiple of it are the measurement's, not the card's.
POWER_OVER_TDP = 1.5
ENERGY_FIELDS = ("energy_j", "energy_source", "joules_per_image")


def _tdp_w(record: dict[str, Any], meta: dict[str, Any]) -> float | None:
    """The TDP of the card the cell ran on, from its hardware profile; None on a CPU or a card without one."""
    if not is_gpu(record.get("device") or meta.get("device")):
        return None
    from segbench.hardware import profile_for_device  # lazy: imports torch, only for a GPU record with energy

    profile = profile_for_device(ran_on(record, meta))
    return number(profile.tdp_w) if profile is not None else None


def energy_problem(record: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """Why a record's energy cannot be right, or None: a power above 1.5 x the card's TDP, 0 J over a window that
    lasted, or a window shorter than NVML's power averaging (records from before segbench withheld those)."""
    telemetry = record.get("telemetry")
    energy = number(telemetry.get("energy_j")) if isinstance(telemetry, dict) else None
    if energy is None:
        return None
    window = number(telemetry.get("window_s"))
    if window and window > 0:
        tdp = _tdp_w(record, meta)
        if tdp and energy / window > POWER_OVER_TDP * tdp:
            return (
                f"energy withheld: {energy:g} J over {window:.3f} s implies {energy / window:,.0f} W, above "
                f"{POWER_OVER_TDP:g} x the card's {tdp:g} W TDP"
            )
        if energy == 0:
            return f"energy withheld: 0 J over a {window:.3f} s window (the energy counter did not advance)"
    if window is not None and window < MIN_WINDOW_S:
        return (
            f"energy withheld: measured over {window:.3f} s, under NVML's {MIN_WINDOW_S:g} s power averaging (recorded "
            "before segbench withheld such windows)"
        )
    return None


def withhold_impossible_energy(record: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The record with its energy figures nulled, the reason under telemetry.unavailable and telemetry.energy_withheld,
    where `energy_problem` finds one; the stored file is never changed."""
    problem = energy_problem(record, meta)
    if problem is None:
        return record
    telemetry = dict(record["telemetry"])
    telemetry.update(dict.fromkeys(ENERGY_FIELDS), energy_withheld=problem)
    telemetry["unavailable"] = {**(telemetry.get("unavailable") or {}), **dict.fromkeys(ENERGY_FIELDS, problem)}
    return {**record, "telemetry": telemetry}


def load_run(run_dir: Path | str) -> RunData:
    """Read a run folder; a missing or corrupt folder raises ResultsError (one line in the CLI)."""
    path = Path(run_dir)
    stored = results.read_records(path)  # first: its error names a folder that is no run
    meta = results.read_meta(path)
    records = add_accuracy_deltas(_grouped_by_card([withhold_impossible_energy(record, meta) for record in stored]))
    return RunData(path=path.resolve(), meta=meta, records=records, suite=results.read_suite_copy(path))


def load_runs(run_dirs: list[Path] | list[str]) -> RunData:
    """Several run folders read as one (a report over runs of different models, each with its own weights): every
    record names its folder under `run`; a cell measured in more than one of them is named by run, like a card, so
    nothing is dropped. The first folder's meta and suite head the report; `merge_note` says what differs."""
    if len(run_dirs) == 1:
        return load_run(run_dirs[0])
    runs = [load_run(path) for path in run_dirs]
    names = [run.name for run in runs]
    if len(set(names)) < len(names):
        raise results.ResultsError(f"run folders {', '.join(names)}: two share a name; give each run once")
    seen: dict[str, int] = {}
    for run in runs:
        for record in run.records:
            seen[record["cell_id"]] = seen.get(record["cell_id"], 0) + 1
    records = []
    for run in runs:
        for record in run.records:
            tagged = {**record, "run": run.name}
            if seen[record["cell_id"]] > 1:  # the same cell in two runs: both kept, told apart by run
                tagged |= {"cell_id": f"{record['cell_id']}@{run.name}", "model": f"{record['model']} [{run.name}]"}
            records.append(tagged)
    first = runs[0]
    meta = {**first.meta, "suite": " + ".join(run.suite_name for run in runs), "merged_runs": _merged(runs)}
    return RunData(first.path, meta, records, first.suite, {run.name: run.path for run in runs})


def _merged(runs: list[RunData]) -> list[dict[str, Any]]:
    return [
        {
            "run": run.name,
            "path": str(run.path),
            "suite": run.suite_name,
            "status": run.meta.get("status"),
            "cells": len(run.records),
            "machine": run.fingerprint.get("machine"),
            "cpu": (run.fingerprint.get("cpu") or {}).get("model"),
        }
        for run in runs
    ]


def merge_note(run: RunData) -> str | None:
    """A sentence for a report over several runs: which they are, and whether one machine measured them all."""
    merged = run.meta.get("merged_runs")
    if not isinstance(merged, list) or len(merged) < 2:
        return None
    listed = "; ".join(f"{item['run']} ({item['cells']} cells, {item['suite']})" for item in merged)
    machines = sorted({str(item.get("machine")) for item in merged})
    where = (
        f"all measured on {machines[0]}"
        if len(machines) == 1
        else f"measured on different machines ({', '.join(machines)}): figures from two machines are not comparable"
    )
    return f"One report over {len(merged)} runs: {listed}; {where}. The header's machine is the first run's."


def _grouped_by_card(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run over several cards: name each model by card, so plots, speed-ups and advice never mix cards."""
    cards = {record.get("hardware") for record in records if record.get("hardware")}
    if len(cards) < 2:
        return records
    return [
        {**record, "model": f"{record['model']} @ {record['hardware']}"} if record.get("hardware") else record
        for record in records
    ]


def fidelity(record: dict[str, Any]) -> dict[str, Any]:
    value = record.get("fidelity")
    return value if isinstance(value, dict) else {}


def accuracy(record: dict[str, Any]) -> dict[str, Any]:
    """Ground-truth figures of a cell run with a dataset (empty without one)."""
    value = record.get("accuracy")
    return value if isinstance(value, dict) else {}


def add_accuracy_deltas(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each ok cell with ground-truth figures its change against the fp32 eager cell of the same variant.

    `accuracy.miou_delta_vs_fp32` and `accuracy.pixel_accuracy_delta_vs_fp32` are differences of fractions
    (negative: worse than fp32 eager); 0 on the reference itself. Records are updated in place and returned.
    """
    references = {
        variant_key(r): accuracy(r) for r in records if r.get("status") == "ok" and is_reference(r) and accuracy(r)
    }
    for record in records:
        measured = accuracy(record)
        reference = references.get(variant_key(record)) if measured and record.get("status") == "ok" else None
        if not reference:
            continue
        for key in ("miou", "pixel_accuracy"):
            value, base = number(measured.get(key)), number(reference.get(key))
            measured[f"{key}_delta_vs_fp32"] = value - base if value is not None and base is not None else None
    return records


def pixels(record: dict[str, Any]) -> int:
    height, width = record["resolution"]
    return int(height) * int(width)


def variant_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """The axes that a precision/backend comparison holds fixed."""
    return (
        record["model"],
        tuple(record["resolution"]),
        record["batch_size"],
        record.get("weights"),
        json.dumps(record.get("options") or {}, sort_keys=True),
        record.get("hardware"),
    )


def peak_memory(record: dict[str, Any]) -> tuple[float | None, str]:
    """headline_memory with a reader-facing name for the figure."""
    value, name = headline_memory(record)
    return value, MEMORY_FIGURES.get(name, name)



