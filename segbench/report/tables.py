"""A run loaded for reporting, and the pandas tables every report format shares.

Each table is built from the records alone; optional fields (fidelity, GFLOPs, telemetry, stages,
quantized share, a memory budget) become columns only when at least one cell has them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from segbench import results
from segbench.metrics import (
    MEMORY_FIGURES,
    METRICS,
    PIPELINE_WHY,
    STREAM,
    TELEMETRY,
    footprint_mb,
    headline_memory,
    is_reference,
    times_whole_pipeline,
)
from segbench.report.summary import measurement_flags

STAGES = ("preprocess", "forward", "postprocess")


@dataclass(frozen=True)
class RunData:
    """Everything a report reads from one run folder."""

    path: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]
    suite: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

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
        return str(self.meta.get("device") or "").startswith("cuda") or any(
            str(r.get("device", "")).startswith("cuda") for r in self.ok
        )

    def device_memory(self) -> tuple[float, str] | None:
        """The memory the headline figure competes for: the GPU's on a CUDA run, host RAM otherwise."""
        if self.is_gpu_run:
            gpus = self.fingerprint.get("gpus") or []
            index = _cuda_index(str(self.meta.get("device") or "cuda"))
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
            if isinstance(cell_budget, dict) and numeric(cell_budget.get("budget_mb")):
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
        from segbench.hardware import list_profiles, load_profile
    except ImportError:  # an older segbench without card profiles
        return None
    return load_profile(target) if target in list_profiles() else None


def _cuda_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index.isdigit() else 0


def _budget_from(source: Any) -> float | None:
    if not isinstance(source, dict):
        return None
    for key, scale in (("budget_mb", 1.0), ("budget_gb", 1024.0)):
        value = source.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value) * scale
    return None


def load_run(run_dir: Path | str) -> RunData:
    """Read a run folder; a missing or corrupt folder raises ResultsError (one line in the CLI)."""
    path = Path(run_dir)
    records = add_accuracy_deltas(_grouped_by_card(results.read_records(path)))
    meta = results.read_meta(path)
    return RunData(path=path.resolve(), meta=meta, records=records, suite=_read_suite(path))


def _grouped_by_card(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run over several cards: name each model by card, so plots, speed-ups and advice never mix cards."""
    cards = {record.get("hardware") for record in records if record.get("hardware")}
    if len(cards) < 2:
        return records
    return [
        {**record, "model": f"{record['model']} @ {record['hardware']}"} if record.get("hardware") else record
        for record in records
    ]


def _read_suite(path: Path) -> dict[str, Any]:
    """The suite copy is informative only (a budget); a broken one must not stop a report."""
    try:
        data = yaml.safe_load((path / results.SUITE_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


# ---- record accessors: every optional field may be missing or null ------------------------------


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
            value, base = numeric(measured.get(key)), numeric(reference.get(key))
            measured[f"{key}_delta_vs_fp32"] = value - base if value is not None and base is not None else None
    return records


def resolution_text(record: dict[str, Any]) -> str:
    height, width = record["resolution"]
    return f"{height}x{width}"


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


def option_text(record: dict[str, Any]) -> str:
    """precision/backend, plus options and weights when a suite varies them."""
    text = f"{record['precision']} / {record['backend']}"
    if record.get("options"):
        text += " " + json.dumps(record["options"], sort_keys=True)
    if record.get("weights"):
        text += f" [{Path(str(record['weights'])).name}]"
    return text


def cell_label(record: dict[str, Any]) -> str:
    card = (
        f" @{record['hardware']}" if record.get("hardware") else ""
    )  # a run over several cards repeats each cell per card
    return f"{record['model']} {resolution_text(record)} b{record['batch_size']} {option_text(record)}{card}"


def peak_memory(record: dict[str, Any]) -> tuple[float | None, str]:
    """headline_memory with a reader-facing name for the figure."""
    value, name = headline_memory(record)
    return value, MEMORY_FIGURES.get(name, name)


def numeric(value: Any) -> float | None:
    """A recorded figure as a float, or None: text, lists, None and booleans (flags, never figures) are not numbers."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _latency(record: dict[str, Any], key: str) -> float | None:
    return numeric((record.get("latency_ms") or {}).get(key))


# ---- tables -----------------------------------------------------------------------------------------


def sort_cells(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        records,
        key=lambda r: (
            r["model"],
            pixels(r),
            r["batch_size"],
            not is_reference(r),
            r["precision"],
            r["backend"],
            json.dumps(r.get("options") or {}),
        ),
    )


IDENTITY = ("cell_id", "model", "card", "resolution", "pixels", "batch", "precision", "backend", "options")
LEADERBOARD_METRICS = (
    "median_ms",
    "p95_ms",
    "cv_pct",
    "n",
    "fps",
    "end_to_end_ms",
    "end_to_end_fps",
    *STREAM,
    "peak_mb",
    "footprint_mb",
    "params_m",
    "gflops",
    "percent_of_peak",
    "miou_gt_pct",
    "pixel_accuracy_gt_pct",
)
ALWAYS_SHOWN = {"median_ms", "p95_ms", "cv_pct", "n", "fps", "peak_mb"}  # the rest only when some cell has them
RELATIVE_METRICS = ("speedup", "end_to_end_speedup", "memory_saving_pct")


def identity(record: dict[str, Any]) -> dict[str, Any]:
    """The axes that name a cell, as table columns."""
    return {
        "cell_id": record["cell_id"],
        "model": record["model"],
        "card": record.get("hardware") or "",
        "resolution": resolution_text(record),
        "pixels": pixels(record),
        "batch": record["batch_size"],
        "precision": record["precision"],
        "backend": record["backend"],
        "options": json.dumps(record["options"], sort_keys=True) if record.get("options") else "",
    }


def metric_values(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float | None]:
    return {key: METRICS[key].value(record) for key in keys}


def _drop_empty(frame: pd.DataFrame, keep: set[str]) -> pd.DataFrame:
    empty = [c for c in frame.columns if c not in keep and (frame[c].isna().all() or (frame[c] == "").all())]
    return frame.drop(columns=empty)


def leaderboard(run: RunData) -> pd.DataFrame:
    """One row per ok cell, with the figures people choose by (forward and end-to-end FPS side by side)."""
    rows = []
    for record in sort_cells(run.ok):
        _, figure = peak_memory(record)
        rows.append(
            {
                **identity(record),
                **metric_values(record, LEADERBOARD_METRICS),
                "noisy": bool(record.get("noisy")),
                "memory_figure": figure,
                "notes": "; ".join(
                    [
                        *(f"(!) {flag}" for flag in measurement_flags(record) if flag != "noisy"),
                        *(str(n) for n in record.get("notes") or []),
                        *([PIPELINE_WHY] if times_whole_pipeline(record) else []),
                    ]
                ),
            }
        )
    frame = pd.DataFrame(rows)
    return (
        frame
        if frame.empty
        else _drop_empty(frame, {*IDENTITY, *ALWAYS_SHOWN, "noisy", "memory_figure", "notes"} - {"card", "options"})
    )


def relative_values(record: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, float | None]:
    """Speed-ups and memory saving against the fp32 eager cell of the same variant (None without one)."""
    values: dict[str, float | None] = dict.fromkeys(RELATIVE_METRICS)
    if reference is None or is_reference(record):
        return values
    for key, metric in (("speedup", "median_ms"), ("end_to_end_speedup", "end_to_end_ms")):
        mine, theirs = METRICS[metric].value(record), METRICS[metric].value(reference)
        values[key] = theirs / mine if mine and theirs else None
    footprint, reference_footprint = footprint_mb(record), footprint_mb(reference)
    if footprint is not None and reference_footprint and headline_memory(record)[1] == headline_memory(reference)[1]:
        values["memory_saving_pct"] = (1 - footprint / reference_footprint) * 100
    return values


def references(run: RunData) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {variant_key(r): r for r in run.ok if is_reference(r)}


QUANTIZATION_METRICS = (
    "median_ms",
    "end_to_end_ms",
    "pixel_agreement_pct",
    "miou_vs_fp32_pct",
    "max_abs_logit_diff",
    "quantized_share_pct",
    "miou_gt_pct",
    "miou_delta_pts",
)


def quantization(run: RunData) -> pd.DataFrame:
    """Each non-reference cell against fp32 eager on the same model, resolution, batch, weights and options."""
    found = references(run)
    rows = []
    for record in sort_cells(run.ok):
        reference = found.get(variant_key(record))
        if is_reference(record) or reference is None:
            continue
        measured = fidelity(record)
        rows.append(
            {
                **identity(record),
                **metric_values(record, QUANTIZATION_METRICS),
                "reference_ms": METRICS["median_ms"].value(reference),
                "reference_end_to_end_ms": METRICS["end_to_end_ms"].value(reference),
                **relative_values(record, reference),
                "fidelity_note": str(measured.get("agreement_unavailable") or "")
                if measured
                else str(record.get("fidelity_unavailable") or "no fidelity data"),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["pareto"] = frame["cell_id"].isin(pareto_front(run))
    optional = (
        "end_to_end_ms",
        "reference_end_to_end_ms",
        "end_to_end_speedup",
        "memory_saving_pct",
        "pixel_agreement_pct",
        "miou_vs_fp32_pct",
        "max_abs_logit_diff",
        "quantized_share_pct",
        "miou_gt_pct",
        "miou_delta_pts",
    )
    return frame.drop(columns=[c for c in optional if frame[c].isna().all()])


def per_class_iou(run: RunData) -> pd.DataFrame:
    """One row per ok cell with ground-truth figures: mIoU, pixel accuracy, and each class's IoU (%)."""
    rows = []
    for record in sort_cells(run.ok):
        measured = accuracy(record)
        if not measured:
            continue
        rows.append(
            {
                "model": record["model"],
                "cell": cell_label(record),
                "mIoU %": _percent(measured.get("miou")),
                "Δ vs fp32 (pts)": _percent(measured.get("miou_delta_vs_fp32")),
                "pixel acc %": _percent(measured.get("pixel_accuracy")),
                **{f"IoU {name} %": _percent(value) for name, value in (measured.get("per_class_iou") or {}).items()},
            }
        )
    return pd.DataFrame(rows)


def _percent(value: Any) -> float | None:
    number = numeric(value)
    return None if number is None else number * 100


def fidelity_points(run: RunData) -> list[dict[str, Any]]:
    """(end-to-end latency, pixel agreement) per ok cell with fidelity; the fp32 eager reference agrees with itself (100
    %).

    End to end, so a pipeline backend (whose forward is its whole library call) sits on the same axis as the others.
    """
    points = []
    for record in sort_cells(run.ok):
        agreement = numeric(fidelity(record).get("pixel_agreement"))
        if agreement is None and is_reference(record):
            agreement = 1.0
        median = METRICS["end_to_end_ms"].value(record)
        if agreement is not None and median is not None:
            points.append({"record": record, "median_ms": median, "agreement": agreement, "group": variant_key(record)})
    return points


def pareto_front(run: RunData) -> set[str]:
    """Cell ids no other option beats on both latency and agreement, within each model/resolution/batch."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for point in fidelity_points(run):
        groups.setdefault(point["group"], []).append(point)
    front: set[str] = set()
    for points in groups.values():
        if len(points) < 2:
            continue  # a lone reference is no trade-off
        best_agreement = -1.0
        for point in sorted(points, key=lambda p: (p["median_ms"], -p["agreement"])):
            if point["agreement"] > best_agreement:
                front.add(point["record"]["cell_id"])
                best_agreement = point["agreement"]
    return front


def failures(run: RunData) -> pd.DataFrame:
    rows = [
        {
            "cell_id": r["cell_id"],
            "model": r["model"],
            "resolution": resolution_text(r),
            "batch": r["batch_size"],
            "precision": r["precision"],
            "backend": r["backend"],
            "status": r.get("status") or "?",
            "reason": str(r.get("error") or "no reason recorded"),
        }
        for r in sort_cells(run.failed)
    ]
    return pd.DataFrame(rows)


def stages(run: RunData) -> pd.DataFrame:
    """Median time per stage per ok cell that has a stage breakdown."""
    rows = []
    for record in sort_cells(run.ok):
        stage_stats = record.get("stages_ms") or {}
        medians = {stage: numeric((stage_stats.get(stage) or {}).get("median")) for stage in STAGES}
        if all(value is not None for value in medians.values()):
            rows.append({"label": cell_label(record), **medians})
    return pd.DataFrame(rows)


def telemetry(run: RunData) -> pd.DataFrame:
    """GPU telemetry per ok cell (clocks, temperature, power, energy, throttling) where any was sampled; columns are
    catalogue keys."""
    rows = []
    for record in sort_cells(run.ok):
        values = metric_values(record, TELEMETRY)
        if not any(value is not None for value in values.values()):
            continue  # a CPU cell or a GPU without NVML: nothing was sampled
        causes = (record.get("telemetry") or {}).get("throttle_causes") or []
        rows.append(
            {
                "model": record["model"],
                "cell": cell_label(record),
                **values,
                "throttle_causes": ", ".join(str(c) for c in causes),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.drop(columns=[c for c in frame.columns if frame[c].isna().all() or (frame[c] == "").all()])
