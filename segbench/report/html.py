"""Self-contained HTML for a run report and a run comparison (jinja2 templates, autoescape on).

Every string from a suite or a results file reaches the page through jinja2's escaping; the only
markup this module produces itself is the template. Plots are base64 PNG, so the file opens
offline, and a Content-Security-Policy in the page forbids any fetch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import jinja2
import pandas as pd

import segbench
from segbench.data.datasets import PROTOCOL_TEXT
from segbench.formatting import fmt_duration, fmt_fixed, fmt_flag, fmt_ms, fmt_time, fmt_yes_no
from segbench.formatting import missing as _missing
from segbench.report import capacity, plots, stream, tables
from segbench.report import profile as profiles
from segbench.report.answer import FPS_SENTENCE, HOW_TO, PERCENTILE_SENTENCE, Answer, answer
from segbench.report.compare import (
    AA_BOUND_SOURCE,
    INDICATIVE_HINT,
    SINGLE_PROCESS_AA_BOUND_PCT,
    Comparison,
    change_text,
    change_tone,
    evidence_text,
    has_capacity,
    min_samples_for_ci,
)
from segbench.report.memory import BREAKDOWN_NOTE, gpu_memory_breakdown
from segbench.report.search import pruned_table
from segbench.results.metrics import METRICS
from segbench.results.runs import RunData, merge_note
from segbench.suite.expectations import evaluate_suite_data, verdict_detail, verdict_label, verdict_note
from segbench.suite.targets import Targets


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    format: Callable[[Any], str] = str
    numeric: bool = False
    sort_key: str | None = None  # another column to sort by (e.g. pixel count for "512x1024")
    help: str = ""
    # A table wider than its frame folds columns (the page's script; a button shows them): `secondary` ones first,
    # then from the right; never the first column nor a `keep` one (what names the configuration).
    keep: bool = False
    secondary: bool = False


def metric_column(key: str, column: str | None = None) -> Column:
    """A table column for a catalogue metric: its label, format and help come from segbench/metrics.py."""
    metric = METRICS[key]
    return Column(column or key, metric.label, metric.format, True, help=metric.help)


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
    note: str = ""  # what a long table left out, and where to find it


# ---- tables ----------------------------------------------------------------------------------------


MAX_TABLE_ROWS = 300  # past this a page of rows is unreadable (and tens of MB): each model keeps its first rows
CSV_HINT = "every row is in the CSV export (segbench report RUN --format csv)"


def shortened(frame: pd.DataFrame, limit: int = MAX_TABLE_ROWS) -> tuple[pd.DataFrame, str]:
    """The frame cut to `limit` rows, each model keeping its first limit / models rows in the table's order (so every
    model is still there), and the sentence that says so; the frame itself and "" when it fits."""
    if len(frame) <= limit:
        return frame, ""
    if "model" in frame.columns:
        per_model = max(1, limit // frame["model"].nunique())
        kept = frame[frame.groupby("model", sort=False).cumcount() < per_model]
        which = f"the first {per_model} of each model's, in the table's order"
    else:
        kept, which = frame.head(limit), "the first ones"
    return kept, f"{len(kept)} of {len(frame)} rows shown ({which}); {CSV_HINT}."


def html_table(frame: pd.DataFrame, columns: list[Column], limit: int = MAX_TABLE_ROWS) -> HtmlTable:
    """Rows of display text plus a machine-sortable value per cell; columns absent from the frame are dropped. Past
    `limit` rows the table is shortened (see `shortened`) and its note says so."""
    frame, note = shortened(frame, limit)
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
            if column.key == "verdict":
                css += f" verdict verdict-{value}"
            cells.append(Cell(column.format(value), "" if _missing(sort_value) else str(sort_value), css.strip()))
        rows.append(Row(str(record.get("model", "")), cells))
    return HtmlTable(present, rows, note)


AXIS_COLUMNS = [
    Column("model", "model", keep=True),
    Column("card", "card", help="the card this cell ran on (a run over several cards)", keep=True),
    Column("resolution", "resolution", sort_key="pixels", help="input height x width", keep=True),
    Column("batch", "batch", numeric=True, keep=True),
    Column("precision", "precision", keep=True),
    Column("backend", "backend", keep=True),
    Column("options", "options", keep=True),
]
LEADERBOARD_COLUMNS = [
    *AXIS_COLUMNS,
    *(metric_column(key) for key in tables.LEADERBOARD_METRICS),
    Column("notes", "notes", help="numbers of the notes listed under the table", secondary=True),
]

QUANTIZATION_COLUMNS = [
    *AXIS_COLUMNS,
    metric_column("median_ms"),
    Column(
        "reference_ms", "fp32 eager ms", fmt_ms, True, help="the fp32 eager cell's forward median", secondary=True
    ),
    metric_column("speedup"),
    metric_column("end_to_end_ms"),
    Column(
        "reference_end_to_end_ms",
        "fp32 eager end-to-end ms",
        fmt_ms,
        True,
        help="the fp32 eager cell's end-to-end median",
        secondary=True,
    ),
    metric_column("end_to_end_speedup"),
    metric_column("memory_saving_pct"),
    *(metric_column(key) for key in tables.FIDELITY_METRICS),
    Column(
        "pareto", "Pareto", fmt_flag, help="on the latency / agreement Pareto front of its model, resolution and batch"
    ),
    Column("fidelity_note", "fidelity note", secondary=True),
]

PRUNED_COLUMNS = [
    Column("model", "model"),
    Column("resolution", "resolution"),
    Column("batch", "batch", numeric=True),
    Column("precision", "precision"),
    Column("backend", "backend"),
    Column("rule", "rule"),
    Column("reason", "why it cannot change the Answer"),
    Column("evidence", "evidence (measured cells)"),
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


ARTEFACTS_SENTENCE = (
    "The file each cell ran, as it was measured (its precision and backend settings baked in). "
    "`segbench export RUN CELL --out DIR` copies it, checked against the cache's checksums, with "
    "segbench-export.json beside it (input size, mean/std, backend settings); `segbench cache` lists what the cache "
    "holds and clears it."
)
ARTEFACT_COLUMNS = [
    Column("cell", "cell"),
    Column("kind", "file", help="what the cell ran: an ONNX export, an int8 graph, OpenVINO IR or a PT2E program"),
    Column("cache_folder", "in the prepare cache"),
    Column("export", "write it out", help="copies the file, checked, with its preprocessing beside it"),
]


STREAM_TRIAL_COLUMNS = [
    Column("cell", "cell"),
    Column("phase", "phase", help="search (bisection), confirm (k in a row at the reported rate) or fixed"),
    Column("target_fps", "camera FPS", fmt_fixed(2), True),
    Column("n", "frames", fmt_fixed(0), True, help="frames processed: the samples the percentile is judged on"),
    Column(
        "percentile", "percentile", lambda v: "–" if _missing(v) else str(v), help="the percentile the criterion judges"
    ),
    Column("latency_quantile_ms", "from schedule ms", fmt_ms, True, help="that percentile, from scheduled arrival"),
    Column("latency_bound_ms", "bound ms", fmt_ms, True),
    metric_column("stream_issue_delay_p99_ms", "issue_delay_p99_ms"),
    metric_column("stream_queue_wait_p99_ms", "queue_wait_p99_ms"),
    metric_column("stream_service_p99_ms", "service_p99_ms"),
    metric_column("stream_drop_pct", "drop_pct"),
    Column("passed", "passed", fmt_yes_no),
    Column("note", "why it failed or stopped"),
]


CAPACITY_COLUMNS = [
    Column("cell", "cell"),
    Column("policy", "policy", help="replicas: k model instances; batched: one model behind a dynamic batcher"),
    Column("knobs", "knobs", help="the policy's own settings"),
    Column("camera_fps", "camera FPS", fmt_fixed(1), True),
    Column("bound", "criterion", help="no frame dropped, and this percentile from scheduled arrival"),
    Column("max_cameras", "cameras", fmt_fixed(0), True, help="the largest N confirmed by k consecutive trials"),
    Column("failing_cameras", "N + 1", fmt_fixed(0), True, help="the N whose trial failed"),
    Column("failed_on", "failed on", help="drops or latency"),
    Column("memory_mb", "memory MiB", fmt_fixed(0), True, help="context + every instance's footprint"),
    Column("how", "how it was confirmed"),
]
CAPACITY_TRIAL_COLUMNS = [
    Column("cell", "cell"),
    Column("policy", "policy"),
    Column("phase", "phase", help="search (doubling, bisection) or confirm (k in a row at the reported N)"),
    Column("cameras", "cameras", fmt_fixed(0), True),
    Column("per_camera_fps", "FPS per camera", fmt_fixed(1), True, help="frames served per camera per second"),
    Column("drop_pct", "dropped %", fmt_fixed(1), True),
    Column("p50_ms", "p50 ms", fmt_ms, True, help="from scheduled arrival"),
    Column("p95_ms", "p95 ms", fmt_ms, True),
    Column("p99_ms", "p99 ms", fmt_ms, True),
    Column("latency_bound_ms", "bound ms", fmt_ms, True),
    Column("issue_delay_p99_ms", "issue delay p99 ms", fmt_ms, True, help="scheduled → put on the queue"),
    Column("service_p99_ms", "service p99 ms", fmt_ms, True, help="taken → class map (a batch's whole call)"),
    Column("queue_depth_max", "queue max", fmt_fixed(0), True),
    Column("batch_mean", "mean batch", fmt_fixed(2), True),
    Column("memory_peak_mb", "peak MiB", fmt_fixed(0), True, help="the process's peak over the trial"),
    Column("passed", "passed", fmt_yes_no),
    Column("note", "why it failed"),
]


def _capacity_tables(run: RunData) -> tuple[HtmlTable | None, HtmlTable | None]:
    found, rows = capacity.summary(run), capacity.trials(run)
    return (
        None if found.empty else html_table(found, CAPACITY_COLUMNS),
        None if rows.empty else html_table(rows, CAPACITY_TRIAL_COLUMNS),
    )


def _stream_trials_table(run: RunData) -> HtmlTable | None:
    frame = stream.trials(run)
    return None if frame.empty else html_table(frame, STREAM_TRIAL_COLUMNS)


def telemetry_columns() -> list[Column]:
    """The telemetry table's columns (tables.telemetry's frame), for the HTML report and the Markdown export."""
    return [
        Column("cell", "cell"),
        *(metric_column(key) for key in tables.TELEMETRY),
        Column("throttle_causes", "throttle causes"),
        Column("energy_note", "energy"),  # why a stored energy figure is withheld (results.runs.energy_problem)
    ]


def _telemetry_table(run: RunData) -> HtmlTable | None:
    frame = tables.telemetry(run)
    return None if frame.empty else html_table(frame, telemetry_columns())


def answer_columns(result: Answer) -> list[Column]:
    percentile = result.targets.latency_percentile if result.targets else "p99"
    return [
        *AXIS_COLUMNS,
        metric_column("achieved_fps"),
        metric_column("fps"),
        metric_column(f"latency_{percentile}_ms"),
        metric_column("latency_n"),
        metric_column("footprint_mb"),
        metric_column("peak_mb"),
        metric_column("pixel_agreement_pct"),
        metric_column("miou_gt_pct"),
        metric_column("miou_delta_pts"),
        Column("status", "status"),
        Column(
            "verdict",
            "verdict",
            help="meets every target, borderline (met, but its 95 % interval straddles a bound), misses one (named, "
            "with the gap), or unknown (the missing figure and why)",
        ),
        Column("detail", "detail"),
    ]


# ---- the run report --------------------------------------------------------------------------------


def memory_breakdown_columns(frame: pd.DataFrame) -> list[Column]:
    """The GPU memory breakdown's columns (gpu_memory_breakdown's frame), for the HTML report and the Markdown
    export."""
    return [
        Column("cell", "cell"),
        *(Column(key, f"{key} MiB", fmt_fixed(0), True) for key in frame.columns if key not in ("model", "cell")),
    ]


def _memory_breakdown_table(run: RunData) -> HtmlTable | None:
    frame = gpu_memory_breakdown(run)
    return None if frame.empty else html_table(frame, memory_breakdown_columns(frame))


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
        (
            "CPU",
            f"{cpu.get('model') or '?'} · {cpu.get('physical_cores') or '?'} cores / {cpu.get('logical_cores') or '?'} "
            "threads"
            if cpu
            else "",
        ),
        ("RAM", f"{fingerprint['ram_gb']} GiB" if fingerprint.get("ram_gb") else ""),
        ("GPUs", "; ".join(f"{g.get('name')} ({(g.get('memory_mb') or 0) / 1024:.1f} GiB)" for g in gpus) or "none"),
        (
            "CUDA",
            f"available: {cuda.get('available')} · torch CUDA build {cuda.get('torch_cuda_build')} · cuDNN "
            f"{cuda.get('cudnn')}"
            if cuda
            else "",
        ),
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
    return (
        f"{who} ran with random weights (fixed seed), not trained ones. Speed and memory do not depend on "
        "the weight values; fidelity figures measure numeric drift against fp32 only, not accuracy."
    )


def memory_note(run: RunData) -> str:
    figures = sorted({tables.peak_memory(r)[1] for r in run.ok if tables.peak_memory(r)[0] is not None})
    if not figures:
        return "No cell recorded a peak-memory figure."
    return (
        f"Peak memory is the {' / '.join(figures)} (MiB): on GPUs NVML's per-process peak, falling back to the "
        "allocator's reserved peak; on CPUs the process's peak resident set size."
    )


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
    measured = [tables.accuracy(r) for r in run.ok if tables.accuracy(r)]
    images = measured[0].get("images")
    protocols = sorted({PROTOCOL_TEXT.get(str(m.get("protocol") or "benchmarked"), "?") for m in measured})
    invalid = sum(int(m.get("invalid_predictions") or 0) for m in measured)
    invalid_text = (
        f" {invalid} labelled pixels were predicted as no class of the model: counted as misses (per cell: the "
        "'invalid px' column), never clamped into a class."
        if invalid
        else ""
    )
    return (
        f"Against the labels of {described.get('path')} ({described.get('layout')} layout, split "
        f"{described.get('split')}, {images} images, ignore index {described.get('ignore_index')}); mIoU "
        f"{' / '.join(protocols)}. Classes absent from both labels and prediction are left out of the mean."
        f"{invalid_text}"
    )


PROFILE_OPERATOR_COLUMNS = [
    Column("operator", "operator"),
    Column("implementation", "implementation / kernel"),
    Column("precision", "precision executed"),
    Column("self_ms", "self ms / forward", fmt_fixed(3), True),
    Column("share_pct", "share %", fmt_fixed(1), True),
    Column("calls", "calls / forward", fmt_fixed(0), True),
]
PROFILE_BLOCK_COLUMNS = [
    Column("block", "block"),
    Column("self_ms", "self ms / forward", fmt_fixed(3), True),
    Column("share_pct", "share %", fmt_fixed(1), True),
    Column("low_precision_pct", "in low precision %", fmt_fixed(0), True),
    Column("precisions", "precisions executed"),
    Column("gflops", "GFLOP / image", fmt_fixed(3), True),
    Column("intensity", "FLOP / byte", fmt_fixed(1), True),
    Column("pct_of_roof", "% of its roof", fmt_fixed(1), True),
    Column("bound", "bound"),
]
PROFILE_PAIR_COLUMNS = [
    Column("block", "block"),
    Column("base_ms", "fp32 ms", fmt_fixed(3), True),
    Column("other_ms", "low precision ms", fmt_fixed(3), True),
    Column("speedup", "speed-up", fmt_fixed(2), True),
    Column("verdict", "block"),
    Column("float_pct", "still in float %", fmt_fixed(0), True),
]


def _profile_context(run: RunData) -> dict[str, Any]:
    """The Profile section: each profiled configuration, the stacked bar, two precisions side by side."""
    sections = profiles.sections(run)
    if not sections:
        return {"profiles": [], "profile_pairs": [], "profile_plot": None}
    return {
        "profiles": [
            {
                "title": section.title,
                "headline": section.headline,
                "how": section.how,
                "operators": html_table(section.operators, PROFILE_OPERATOR_COLUMNS),
                "blocks": html_table(section.blocks, PROFILE_BLOCK_COLUMNS),
            }
            for section in sections
        ],
        "profile_pairs": [
            {
                "title": profiles.pair_title(base, other),
                "line": profiles.pair_line(base, other),
                "table": html_table(profiles.pair_frame(base, other), PROFILE_PAIR_COLUMNS),
            }
            for base, other in profiles.precision_pairs(run)
        ],
        "profile_plot": profiles.stacked_plot(run),
        "profile_note": profiles.PROFILE_NOTE,
    }


def report_context(run: RunData, targets: Targets | None = None) -> dict[str, Any]:
    leaderboard, notes = footnote_notes(tables.leaderboard(run))
    quantization = tables.quantization(run)
    if not quantization.empty and not run.has_fidelity:  # the section's sentence says so once, not per row
        quantization = quantization.drop(columns=["pareto", "fidelity_note"])
    elif not quantization.empty and not quantization["fidelity_note"].any():
        quantization = quantization.drop(columns="fidelity_note")
    failures = tables.failures(run)
    pruned = pruned_table(run)
    artefacts = tables.artefacts(run)
    result = answer(run, targets)
    drawn, pareto = plots.report_plots(run)
    return {
        "run": run,
        "answer": result,
        "answer_table": html_table(result.table, answer_columns(result)) if not result.table.empty else None,
        "how_to": HOW_TO,
        "fps_sentence": FPS_SENTENCE,
        "percentile_sentence": PERCENTILE_SENTENCE,
        "title": f"segbench report: {run.suite_name}",
        "meta": run.meta,
        "start": fmt_time(run.meta.get("start_time")),
        "end": fmt_time(run.meta.get("end_time")),
        "duration": fmt_duration(run.meta.get("duration_s")),
        "cell_counts": _status_counts(run),
        "fingerprint_rows": fingerprint_rows(run.meta),
        "fingerprint_json": json.dumps(run.meta.get("fingerprint") or {}, indent=2, default=str),
        "weights_note": weights_note(run),
        "merge_note": merge_note(run),
        "memory_note": memory_note(run),
        "leaderboard": html_table(leaderboard, LEADERBOARD_COLUMNS) if not leaderboard.empty else None,
        "notes": notes,
        "models": sorted({r["model"] for r in run.ok}),
        "telemetry": _telemetry_table(run),
        "stream_trials": _stream_trials_table(run),
        "stream_criteria": stream.criteria(run),
        "stream_note": stream.TRIALS_NOTE,
        "capacity": _capacity_tables(run),
        "capacity_plot": capacity.plot(run),
        "capacity_note": capacity.NOTE,
        "memory_breakdown": _memory_breakdown_table(run),
        "memory_breakdown_note": BREAKDOWN_NOTE,
        "plots": drawn,
        "quantization": html_table(quantization, QUANTIZATION_COLUMNS) if not quantization.empty else None,
        "has_fidelity": run.has_fidelity,
        "accuracy": _accuracy_table(run),
        "dataset_text": dataset_text(run),
        "pareto": pareto,
        "failures": html_table(failures, FAILURE_COLUMNS) if not failures.empty else None,
        "pruned": html_table(pruned, PRUNED_COLUMNS) if not pruned.empty else None,
        "artefacts": html_table(artefacts, ARTEFACT_COLUMNS) if not artefacts.empty else None,
        "artefacts_sentence": ARTEFACTS_SENTENCE,
        "expectations": expectation_rows(run),
        "verdict_note": verdict_note(),
        "generated": f"segbench {segbench.__version__}",
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **_profile_context(run),
    }


def expectation_rows(run: RunData) -> list[dict[str, Any]]:
    """The suite's claims, each confirmed, refuted or untested against this run's cells, with the reason."""
    rows = evaluate_suite_data(run.suite, run.records, run.meta)
    return [
        {
            **row,
            "measured_text": "–" if row["measured"] is None else f"{row['measured']:.4g}",
            "verdict_text": verdict_label(row),
            "detail": verdict_detail(row),
            "card": row["measured_on"] or "–",
        }
        for row in rows
    ]


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


def render_report(run: RunData, targets: Targets | None = None) -> str:
    return environment().get_template("report.html.j2").render(**report_context(run, targets))


# ---- the comparison --------------------------------------------------------------------------------

COMPARE_METRICS = (
    "median_ms",
    "p95_ms",
    "fps",
    "end_to_end_ms",
    "end_to_end_fps",
    "end_to_end_throughput_fps",
    "peak_mb",
    "footprint_mb",
    "miou_gt_pct",
)


EVIDENCE_HELP = (
    "what the median's verdict rests on: k vs k processes (Welch t-test, significant at the threshold) or one process "
    "(indicative); the p-value is Holm-adjusted across the cells"
)


def comparison_context(comparison: Comparison) -> dict[str, Any]:
    shown = (*COMPARE_METRICS, "max_cameras") if has_capacity(comparison) else COMPARE_METRICS
    rows = []
    for cell in comparison.cells:
        median = cell.metric("median_ms")
        changes = []
        for key in shown:
            metric = cell.metric(key)
            changes.append(
                Cell(
                    change_text(metric, with_ci=key == "median_ms"),
                    "" if metric is None or metric.change_pct is None else f"{metric.change_pct:.4f}",
                    f"num {change_tone(metric)}{' significant' if metric and metric.significant else ''}",
                )
            )
            if key == "median_ms":
                changes.append(Cell(evidence_text(metric), evidence_text(metric), ""))
        rows.append(
            {
                "cell": cell,
                "model": cell.label.split(" ", 1)[0],
                "median_a": Cell(fmt_ms(median.a), "" if _missing(median.a) else str(median.a), "num")
                if median
                else Cell("–", ""),
                "median_b": Cell(fmt_ms(median.b), "" if _missing(median.b) else str(median.b), "num")
                if median
                else Cell("–", ""),
                "changes": changes,
            }
        )
    worse, better = comparison.significant_count
    return {
        "title": f"segbench compare: {comparison.name_b} vs {comparison.name_a}",
        "comparison": comparison,
        "change_columns": [
            column
            for key in shown
            for column in [
                (f"{METRICS[key].name} Δ" + (" [95 % CI]" if key == "median_ms" else ""), METRICS[key].help),
                *([("evidence (Holm p)", EVIDENCE_HELP)] if key == "median_ms" else []),
            ]
        ],
        "rows": rows,
        "worse": worse,
        "better": better,
        "indicative_hint": INDICATIVE_HINT,
        "aa_bound": SINGLE_PROCESS_AA_BOUND_PCT,
        "aa_source": AA_BOUND_SOURCE,
        "min_samples": min_samples_for_ci(50.0),
        "min_samples_p95": min_samples_for_ci(95.0),
        "generated": f"segbench {segbench.__version__}",
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render_comparison(comparison: Comparison) -> str:
    return environment().get_template("compare.html.j2").render(**comparison_context(comparison))
