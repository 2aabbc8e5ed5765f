"""Self-contained HTML for a run report and a run comparison (jinja2 templates, autoescape on).

Every string from a suite or a results file reaches the page through jinja2's escaping; the only
markup this module produces itself is the template. Plots are base64 PNG, so the file opens
offline, and a Content-Security-Policy in the page forbids any fetch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import jinja2
import pandas as pd

import segbench
from segbench.report import best, plots, tables
from segbench.report.memory import BREAKDOWN_NOTE, gpu_memory_breakdown
from segbench.report.compare import Comparison, change_text, change_tone, min_samples_for_ci
from segbench.report.tables import RunData


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    format: Callable[[Any], str] = str
    numeric: bool = False
    sort_key: str | None = None  # another column to sort by (e.g. pixel count for "512x1024")
    help: str = ""


@dataclass(frozen=True)
class Cell:
    text: str
    sort: str
    css: str = ""


@dataclass(frozen=True)
class Row:
    model: str
    cells: list[Cell]


@dataclass(frozen=True)
class HtmlTable:
    columns: list[Column]
    rows: list[Row]


# ---- number formats --------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_ms(value: Any) -> str:
    if _missing(value):
        return "–"
    digits = 3 if value < 1 else 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:,.{digits}f}"


def fmt_fixed(digits: int) -> Callable[[Any], str]:
    return lambda value: "–" if _missing(value) else f"{value:,.{digits}f}"


def fmt_significant(value: Any) -> str:
    """Three significant digits: GFLOPs run from 0.0005 (a test net) to thousands."""
    if _missing(value):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:,.3g}" if value < 1000 else f"{value:,.0f}"


def fmt_signed_pct(value: Any) -> str:
    return "–" if _missing(value) else f"{value:+.1f} %"


def fmt_speedup(value: Any) -> str:
    return "–" if _missing(value) else f"{value:.2f}×"


def fmt_params(millions: Any) -> str:
    """Millions with two decimals; tiny models as a plain count, so they do not all read 0.00."""
    if _missing(millions):
        return "–"
    return f"{millions:,.2f} M" if millions >= 0.01 else f"{millions * 1e6:,.0f}"


def fmt_flag(value: Any) -> str:
    return "✓" if value else ""


def fmt_duration(seconds: Any) -> str:
    if _missing(seconds):
        return "unknown"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def fmt_time(text: Any) -> str:
    if not text:
        return "unknown"
    try:
        return datetime.fromisoformat(str(text)).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(text)


# ---- tables ----------------------------------------------------------------------------------------

def html_table(frame: pd.DataFrame, columns: list[Column]) -> HtmlTable:
    """Rows of display text plus a machine-sortable value per cell; columns absent from the frame are dropped."""
    present = [c for c in columns if c.key in frame.columns]
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for column in present:
            value = record[column.key]
            sort_value = record[column.sort_key] if column.sort_key else value
            css = "num" if column.numeric else ""
            if column.key == "cv_pct" and record.get("noisy"):
                css += " noisy"
            cells.append(Cell(column.format(value), "" if _missing(sort_value) else str(sort_value), css.strip()))
        rows.append(Row(str(record.get("model", "")), cells))
    return HtmlTable(present, rows)


LEADERBOARD_COLUMNS = [
    Column("model", "model"),
    Column("card", "card", help="the card this cell ran on (a run over several cards)"),
    Column("resolution", "resolution", sort_key="pixels", help="input height x width"),
    Column("batch", "batch", numeric=True),
    Column("precision", "precision"),
    Column("backend", "backend"),
    Column("options", "options"),
    Column("median_ms", "median ms", fmt_ms, True, help="median forward latency per batch"),
    Column("p95_ms", "p95 ms", fmt_ms, True),
    Column("cv_pct", "CV %", fmt_fixed(1), True, help="coefficient of variation of the samples; marked when above 10 %"),
    Column("fps", "FPS", fmt_fixed(1), True, help="images per second: batch x 1000 / median ms"),
    Column("end_to_end_ms", "end-to-end ms", fmt_ms, True, help="median of preprocess + forward + postprocess"),
    Column("peak_mb", "peak MiB", fmt_fixed(0), True),
    Column("params_m", "params", fmt_params, True),
    Column("gflops", "GFLOPs / image", fmt_significant, True),
    Column("percent_of_peak", "% of peak", fmt_fixed(1), True, help="achieved TFLOPS as a share of the published peak, for this precision, of the card the cell ran on (roofline.peak_card; never an emulated target)"),
    Column("miou_gt_pct", "mIoU (GT) %", fmt_fixed(2), True, help="mean IoU against the dataset's labels"),
    Column("pixel_accuracy_gt_pct", "pixel acc (GT) %", fmt_fixed(2), True, help="labelled pixels classified correctly"),
    Column("notes", "notes", help="numbers of the notes listed under the table"),
]

QUANTIZATION_COLUMNS = [
    Column("model", "model"),
    Column("resolution", "resolution"),
    Column("batch", "batch", numeric=True),
    Column("precision", "precision"),
    Column("backend", "backend"),
    Column("median_ms", "median ms", fmt_ms, True),
    Column("reference_ms", "fp32 eager ms", fmt_ms, True),
    Column("speedup", "speed-up", fmt_speedup, True, help="fp32 eager median / this median; below 1x is slower than fp32 eager"),
    Column("memory_saving_pct", "memory saving", fmt_signed_pct, True, help="1 - peak / fp32 eager peak (negative: uses more)"),
    Column("pixel_agreement_pct", "agreement %", fmt_fixed(2), True, help="pixels whose class matches fp32 eager"),
    Column("miou_vs_fp32_pct", "mIoU vs fp32 %", fmt_fixed(2), True),
    Column("max_abs_logit_diff", "max |Δ logit|", fmt_fixed(3), True, help="largest absolute difference of a logit against fp32 eager"),
    Column("quantized_share_pct", "quantized %", fmt_fixed(1), True, help="share of parameters the conversion changed"),
    Column("miou_gt_pct", "mIoU (GT) %", fmt_fixed(2), True, help="mean IoU against the dataset's labels"),
    Column("miou_delta_pts", "Δ vs fp32", fmt_fixed(2), True, help="mIoU (GT) minus fp32 eager's, in percentage points"),
    Column("pareto", "Pareto", fmt_flag, help="on the latency / agreement Pareto front of its model, resolution and batch"),
    Column("fidelity_note", "fidelity note"),
]

FAILURE_COLUMNS = [
    Column("model", "model"),
    Column("resolution", "resolution"),
    Column("batch", "batch", numeric=True),
    Column("precision", "precision"),
    Column("backend", "backend"),
    Column("status", "status"),
    Column("reason", "reason"),
]


def _telemetry_table(run: RunData) -> HtmlTable | None:
    frame = tables.telemetry(run)
    if frame.empty:
        return None
    columns = [Column("cell", "cell"), Column("throttle causes", "throttle causes")]
    columns[1:1] = [Column(key, key, fmt_fixed(2) if key == "J / image" else fmt_fixed(0), True) for key in frame.columns if key not in ("model", "cell", "throttle causes")]
    return html_table(frame, columns)


# ---- the run report --------------------------------------------------------------------------------

def _memory_breakdown_table(run: RunData) -> HtmlTable | None:
    frame = gpu_memory_breakdown(run)
    if frame.empty:
        return None
    return html_table(frame, [Column("cell", "cell"), *(Column(key, f"{key} MiB", fmt_fixed(0), True) for key in frame.columns if key not in ("model", "cell"))])


def fingerprint_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The fingerprint as short labelled lines; the full JSON goes in a collapsed block next to it."""
    fingerprint = meta.get("fingerprint") or {}
    cpu = fingerprint.get("cpu") or {}
    cuda = fingerprint.get("cuda") or {}
    gpus = fingerprint.get("gpus") or []
    packages = fingerprint.get("packages") or {}
    own = fingerprint.get("segbench") or {}
    rows = [
        ("device", str(meta.get("device") or "unknown")),
        ("hardware target", str(meta.get("hardware_target") or "")),
        ("machine", str(fingerprint.get("machine") or "")),
        ("CPU", f"{cpu.get('model') or '?'} · {cpu.get('physical_cores') or '?'} cores / {cpu.get('logical_cores') or '?'} threads" if cpu else ""),
        ("RAM", f"{fingerprint['ram_gb']} GiB" if fingerprint.get("ram_gb") else ""),
        ("GPUs", "; ".join(f"{g.get('name')} ({(g.get('memory_mb') or 0) / 1024:.1f} GiB)" for g in gpus) or "none"),
        ("CUDA", f"available: {cuda.get('available')} · torch CUDA build {cuda.get('torch_cuda_build')} · cuDNN {cuda.get('cudnn')}" if cuda else ""),
        ("NVML", str(fingerprint.get("nvml") or "")),
        ("Python", str(fingerprint.get("python") or "")),
        ("packages", ", ".join(f"{name} {version}" for name, version in packages.items() if version)),
        ("segbench", f"{own.get('version') or '?'} (commit {own.get('commit') or 'unknown'})" if own else ""),
    ]
    return [(label, value) for label, value in rows if value]


def weights_note(run: RunData) -> str:
    models = run.random_weight_models
    if not models:
        return ""
    every = len(models) == len({r["model"] for r in run.records})
    who = "Every model" if every else "These models: " + ", ".join(models) + ";"
    return (f"{who} ran with random weights (fixed seed), not trained ones. Speed and memory do not depend on "
            "the weight values; fidelity figures measure numeric drift against fp32 only, not accuracy.")


def memory_note(run: RunData) -> str:
    figures = sorted({tables.peak_memory(r)[1] for r in run.ok if tables.peak_memory(r)[0] is not None})
    if not figures:
        return "No cell recorded a peak-memory figure."
    return (f"Peak memory is the {' / '.join(figures)} (MiB): on GPUs NVML's per-process peak, falling back to the "
            "allocator's reserved peak; on CPUs the process's peak resident set size.")


def footnote_notes(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Cell notes repeat (one per precision); the table shows numbers and the text is listed once below."""
    if frame.empty or "notes" not in frame.columns:
        return frame, []
    notes: list[str] = []
    markers = []
    for text in frame["notes"]:
        if not text:
            markers.append("")
            continue
        if text not in notes:
            notes.append(text)
        markers.append(f"[{notes.index(text) + 1}]")
    frame = frame.assign(notes=markers)
    return (frame, notes) if notes else (frame.drop(columns="notes"), [])


def _accuracy_table(run: RunData) -> HtmlTable | None:
    frame = tables.per_class_iou(run)
    if frame.empty:
        return None
    columns = [Column("cell", "cell")]
    columns += [Column(key, key, fmt_fixed(2), True) for key in frame.columns if key not in ("model", "cell")]
    return html_table(frame, columns)


def dataset_text(run: RunData) -> str:
    """Which labelled images the accuracy figures come from."""
    described = next((tables.accuracy(r).get("dataset") for r in run.ok if tables.accuracy(r).get("dataset")), None)
    if not described:
        return ""
    images = next(tables.accuracy(r).get("images") for r in run.ok if tables.accuracy(r))
    return (f"Against the labels of {described.get('path')} ({described.get('layout')} layout, split {described.get('split')}, "
            f"{images} images, ignore index {described.get('ignore_index')}); each image is resized to the cell's resolution "
            "and its class map resized back to the label's size (nearest). Classes absent from both labels and prediction "
            "are left out of the mean.")


def report_context(run: RunData) -> dict[str, Any]:
    leaderboard, notes = footnote_notes(tables.leaderboard(run))
    quantization = tables.quantization(run)
    if not quantization.empty and not run.has_fidelity:  # the section's sentence says so once, not per row
        quantization = quantization.drop(columns=["pareto", "fidelity_note"])
    elif not quantization.empty and not quantization["fidelity_note"].any():
        quantization = quantization.drop(columns="fidelity_note")
    failures = tables.failures(run)
    return {
        "run": run,
        "title": f"segbench report: {run.suite_name}",
        "meta": run.meta,
        "start": fmt_time(run.meta.get("start_time")),
        "end": fmt_time(run.meta.get("end_time")),
        "duration": fmt_duration(run.meta.get("duration_s")),
        "cell_counts": _status_counts(run),
        "fingerprint_rows": fingerprint_rows(run.meta),
        "fingerprint_json": json.dumps(run.meta.get("fingerprint") or {}, indent=2, default=str),
        "weights_note": weights_note(run),
        "memory_note": memory_note(run),
        "leaderboard": html_table(leaderboard, LEADERBOARD_COLUMNS) if not leaderboard.empty else None,
        "notes": notes,
        "models": sorted({r["model"] for r in run.ok}),
        "telemetry": _telemetry_table(run),
        "memory_breakdown": _memory_breakdown_table(run),
        "memory_breakdown_note": BREAKDOWN_NOTE,
        "plots": plots.all_plots(run),
        "quantization": html_table(quantization, QUANTIZATION_COLUMNS) if not quantization.empty else None,
        "has_fidelity": run.has_fidelity,
        "accuracy": _accuracy_table(run),
        "dataset_text": dataset_text(run),
        "pareto": plots.pareto_plot(run),
        "failures": html_table(failures, FAILURE_COLUMNS) if not failures.empty else None,
        "advice": best.best_choices(run),
        "expectations": _expectation_rows(run),
        "assumption": best.assumption_text(run),
        "generated": f"segbench {segbench.__version__}",
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _expectation_rows(run: RunData) -> list[dict[str, Any]]:
    """The suite's claims, each confirmed, refuted or untested against this run's cells."""
    from segbench.expectations import evaluate_suite_data

    rows = evaluate_suite_data(run.suite, run.records)
    card = run.meta.get("fingerprint", {}).get("machine", "")
    return [{**row, "measured_text": "–" if row["measured"] is None else f"{row['measured']:.4g}", "card": card} for row in rows]


def _status_counts(run: RunData) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for record in run.records:
        counts[str(record.get("status"))] = counts.get(str(record.get("status")), 0) + 1
    return sorted(counts.items(), key=lambda item: (item[0] != "ok", item[0]))


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("segbench.report", "templates"),
        autoescape=True,  # every value is escaped; nothing from a suite or results file can add markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(run: RunData) -> str:
    return environment().get_template("report.html.j2").render(**report_context(run))


# ---- the comparison --------------------------------------------------------------------------------

COMPARE_METRICS = ("median_ms", "p95_ms", "fps", "end_to_end_ms", "peak_mb", "miou_gt")


def comparison_context(comparison: Comparison) -> dict[str, Any]:
    rows = []
    for cell in comparison.cells:
        median = cell.metric("median_ms")
        changes = []
        for key in COMPARE_METRICS:
            metric = cell.metric(key)
            changes.append(Cell(change_text(metric, with_ci=key == "median_ms"), "" if metric is None or metric.change_pct is None else f"{metric.change_pct:.4f}",
                                f"num {change_tone(metric)}{' significant' if metric and metric.significant else ''}"))
        rows.append({
            "cell": cell,
            "model": cell.label.split(" ", 1)[0],
            "median_a": Cell(fmt_ms(median.a), "" if _missing(median.a) else str(median.a), "num") if median else Cell("–", ""),
            "median_b": Cell(fmt_ms(median.b), "" if _missing(median.b) else str(median.b), "num") if median else Cell("–", ""),
            "changes": changes,
        })
    worse, better = comparison.significant_count
    return {
        "title": f"segbench compare: {comparison.name_b} vs {comparison.name_a}",
        "comparison": comparison,
        "rows": rows,
        "worse": worse,
        "better": better,
        "min_samples": min_samples_for_ci(50.0),
        "min_samples_p95": min_samples_for_ci(95.0),
        "generated": f"segbench {segbench.__version__}",
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render_comparison(comparison: Comparison) -> str:
    return environment().get_template("compare.html.j2").render(**comparison_context(comparison))
