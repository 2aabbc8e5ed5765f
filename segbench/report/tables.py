"""A run loaded for reporting, and the pandas tables every report format shares.

Each table is built from the records alone; optional fields (fidelity, GFLOPs, telemetry, stages,
quantized share, a memory budget) become columns only when at least one cell has them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from segbench.report.summary import measurement_flags
from segbench.results.frame import (  # the CSV's and load()'s rows use them too
    artefact,
    identity,
    references,
    relative_values,
    sort_cells,
)
from segbench.results.labels import cell_label, resolution_text
from segbench.results.metrics import (
    METRICS,
    PIPELINE_WHY,
    STREAM,
    TELEMETRY,
    is_reference,
    number,
    times_whole_pipeline,
)
from segbench.results.runs import RunData, accuracy, fidelity, peak_memory, variant_key
from segbench.results.schema import STAGES

# ---- record accessors: every optional field may be missing or null ------------------------------


def _latency(record: dict[str, Any], key: str) -> float | None:
    return number((record.get("latency_ms") or {}).get(key))


# ---- tables -----------------------------------------------------------------------------------------




IDENTITY = ("cell_id", "model", "card", "resolution", "pixels", "batch", "precision", "backend", "options")
LEADERBOARD_METRICS = (
    "median_ms",
    "p95_ms",
    "n",  # beside the percentile it supports
    "cv_pct",
    "fps",
    "device_throughput_fps",
    "end_to_end_ms",
    "end_to_end_fps",
    "end_to_end_throughput_fps",
    "pipelined_fps_bound",
    "first_call_ms",
    *STREAM,
    "peak_mb",
    "footprint_mb",
    "params_m",
    "gflops",
    "percent_of_peak",
    "percent_of_attainable",
    "miou_gt_pct",
    "pixel_accuracy_gt_pct",
)
ALWAYS_SHOWN = {"median_ms", "p95_ms", "cv_pct", "n", "fps", "peak_mb"}  # the rest only when some cell has them




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






# What the quantization table shows of a cell beside its speed: fidelity to fp32 eager and against ground truth.
FIDELITY_METRICS = (
    "pixel_agreement_pct",
    "miou_vs_fp32_pct",
    "max_abs_logit_diff",
    "drift_snr_db",
    "quantized_share_pct",
    "miou_gt_pct",
    "miou_delta_pts",
)
QUANTIZATION_METRICS = ("median_ms", "end_to_end_ms", *FIDELITY_METRICS)


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
    optional = ("end_to_end_ms", "reference_end_to_end_ms", "end_to_end_speedup", "memory_saving_pct")
    optional += FIDELITY_METRICS
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
                "invalid px": number(measured.get("invalid_predictions")),
                **{f"IoU {name} %": _percent(value) for name, value in (measured.get("per_class_iou") or {}).items()},
            }
        )
    frame = pd.DataFrame(rows)
    # Shown where some cell predicted ids outside its classes (records before the count have none: no column).
    return frame if frame.empty or frame["invalid px"].fillna(0).any() else frame.drop(columns=["invalid px"])


def _percent(value: Any) -> float | None:
    fraction = number(value)
    return None if fraction is None else fraction * 100


def labelled(run: RunData) -> bool:
    """Whether the run measured accuracy against a dataset's labels: then quality is mIoU (GT), not agreement."""
    return any(number(accuracy(record).get("miou")) is not None for record in run.ok)


def quality_axis(run: RunData) -> tuple[str, str]:
    """What the speed-vs-quality view trades speed against: (what, axis label)."""
    if labelled(run):
        return "mIoU (GT)", "mIoU against the labels (%)"
    return "pixel agreement", "pixel agreement with fp32 (%)"


def fidelity_points(run: RunData) -> list[dict[str, Any]]:
    """(end-to-end latency, quality) per ok cell: quality is mIoU against the labels where the run has them, else pixel
    agreement with fp32 eager (the reference agrees with itself: 100 %).

    End to end, so a pipeline backend (whose forward is its whole library call) sits on the same axis as the others.
    """
    points = []
    use_labels = labelled(run)
    for record in sort_cells(run.ok):
        if use_labels:
            quality = number(accuracy(record).get("miou"))
        else:
            quality = number(fidelity(record).get("pixel_agreement"))
            if quality is None and is_reference(record):
                quality = 1.0
        median = METRICS["end_to_end_ms"].value(record)
        if quality is not None and median is not None:
            points.append({"record": record, "median_ms": median, "quality": quality, "group": variant_key(record)})
    return points


def pareto_front(run: RunData) -> set[str]:
    """Cell ids no other option beats on both latency and quality, within each model/resolution/batch."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for point in fidelity_points(run):
        groups.setdefault(point["group"], []).append(point)
    front: set[str] = set()
    for points in groups.values():
        if len(points) < 2:
            continue  # a lone reference is no trade-off
        best_quality = -1.0
        for point in sorted(points, key=lambda p: (p["median_ms"], -p["quality"])):
            if point["quality"] > best_quality:
                front.add(point["record"]["cell_id"])
                best_quality = point["quality"]
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
        if r.get("status") != "pruned"  # never run: the pruned section lists them with their evidence
    ]
    return pd.DataFrame(rows)




def artefacts(run: RunData) -> pd.DataFrame:
    """Per ok cell that ran a file: the file's kind, where it sits and the command that writes it out."""
    rows = []
    for record in sort_cells(run.ok):
        found = artefact(record)
        if found is not None:
            kind, folder = found
            cell_id = str(record["cell_id"]).split("@")[0]  # a merged report tells apart a cell two runs share
            export = f"segbench export {run.folder_of(record)} {cell_id} --out <folder>"
            rows.append({"cell": cell_label(record), "kind": kind, "cache_folder": folder, "export": export})
    return pd.DataFrame(rows)


# What records made before `end_to_end_covers` timed (segbench's own class map was then argmax into int64).
LEGACY_COVERS = (
    "preprocess → forward → postprocess, from decoded uint8 frames at the cell's resolution (no decode, no resize "
    "from a camera's size); class map: float32 upsample, argmax, int64 on the host (recorded before end_to_end_covers)"
)


def end_to_end_scope(run: RunData) -> list[str]:
    """What the end-to-end figures cover, one sentence per distinct scope among the ok cells (with how many)."""
    counts: dict[str, int] = {}
    for record in run.ok:
        covers = record.get("end_to_end_covers")
        if isinstance(covers, dict):
            stages = " → ".join(str(stage) for stage in covers.get("stages") or STAGES)
            text = f"{stages}, from {covers.get('input')}; class map: {covers.get('class_map')}"
            if covers.get("host_threads") is not None:
                text += f"; host stages on {covers['host_threads']} torch thread(s)"
        else:
            text = LEGACY_COVERS
        counts[text] = counts.get(text, 0) + 1
    if len(counts) == 1:
        return [f"End to end covers {text}." for text in counts]
    return [f"End to end covers, in {n} cell(s): {text}." for text, n in counts.items()]


def stages(run: RunData) -> pd.DataFrame:
    """Median time per stage per ok cell that has a stage breakdown."""
    rows = []
    for record in sort_cells(run.ok):
        stage_stats = record.get("stages_ms") or {}
        medians = {stage: number((stage_stats.get(stage) or {}).get("median")) for stage in STAGES}
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
                "energy_note": str((record.get("telemetry") or {}).get("energy_withheld") or ""),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.drop(columns=[c for c in frame.columns if frame[c].isna().all() or (frame[c] == "").all()])
