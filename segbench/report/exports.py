"""Writing a run report to a file: HTML (the full report), Markdown (for a pull request) or CSV (for a sheet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from segbench.errors import SegbenchError
from segbench.report import best, tables
from segbench.report.html import fmt_duration, fmt_fixed, fmt_ms, fmt_significant, fmt_time, render_report, weights_note
from segbench.report.tables import RunData, load_run

FORMATS = {"html": ".html", "md": ".md", "csv": ".csv"}
REPORTS_DIR = Path("reports")


def default_output(run_dir: Path | str, fmt: str = "html") -> Path:
    """reports/<run folder name>.<format suffix>, relative to the current directory."""
    return REPORTS_DIR / f"{Path(run_dir).resolve().name}{FORMATS[fmt]}"


def write_report(run_dir: Path | str, output: Path | None = None, fmt: str = "html") -> Path:
    """Render a run in the given format and write it; returns the file written."""
    if fmt not in FORMATS:
        raise SegbenchError(f"--format: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    run = load_run(run_dir)
    target = output or default_output(run_dir, fmt)
    renderers = {"html": render_report, "md": render_markdown, "csv": render_csv}
    text = renderers[fmt](run)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SegbenchError(f"{target}: cannot write the report ({exc.strerror or exc})") from None
    return target


# ---- Markdown --------------------------------------------------------------------------------------

def _md_text(value: Any) -> str:
    """Table-safe text: no line breaks, no column breaks, no raw HTML."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, columns: dict[str, tuple[str, Any]]) -> str:
    """A pipe table of the frame's listed columns (label, formatter); columns the frame lacks are left out."""
    present = {key: spec for key, spec in columns.items() if key in frame.columns}
    lines = ["| " + " | ".join(_md_text(label) for label, _ in present.values()) + " |",
             "|" + "|".join("---:" if key not in TEXT_COLUMNS else "---" for key in present) + "|"]
    for record in frame.to_dict("records"):
        lines.append("| " + " | ".join(_md_text(fmt(record[key])) for key, (_, fmt) in present.items()) + " |")
    return "\n".join(lines)


TEXT_COLUMNS = {"model", "resolution", "precision", "backend", "status", "reason", "memory_figure"}
MD_LEADERBOARD = {
    "model": ("model", str),
    "resolution": ("resolution", str),
    "batch": ("batch", str),
    "precision": ("precision", str),
    "backend": ("backend", str),
    "median_ms": ("median ms", fmt_ms),
    "p95_ms": ("p95 ms", fmt_ms),
    "fps": ("FPS", fmt_fixed(1)),
    "peak_mb": ("peak MiB", fmt_fixed(0)),
    "params_m": ("params (M)", fmt_fixed(2)),
    "gflops": ("GFLOPs", fmt_significant),
    "miou_gt_pct": ("mIoU (GT) %", fmt_fixed(2)),
}
MD_FAILURES = {key: (key, str) for key in ("model", "resolution", "batch", "precision", "backend", "status", "reason")}


def render_markdown(run: RunData) -> str:
    fingerprint = run.fingerprint
    gpus = ", ".join(str(g.get("name")) for g in fingerprint.get("gpus") or []) or "no GPU"
    torch_version = (fingerprint.get("packages") or {}).get("torch") or "?"
    parts = [
        f"## segbench: {_md_text(run.suite_name)}",
        "",
        f"Run `{_md_text(run.name)}` · {fmt_time(run.meta.get('start_time'))} · {fmt_duration(run.meta.get('duration_s'))} · "
        f"device {_md_text(run.meta.get('device') or '?')} · {_md_text(fingerprint.get('machine') or '?')} · {_md_text(gpus)} · torch {_md_text(torch_version)}",
    ]
    note = weights_note(run)
    if note:
        parts += ["", f"> {_md_text(note)}"]
    leaderboard = tables.leaderboard(run)
    parts += ["", "### Leaderboard", ""]
    if leaderboard.empty:
        parts.append("No cell finished ok.")
    else:
        figures = ", ".join(sorted(set(leaderboard["memory_figure"])))
        parts += [markdown_table(leaderboard, MD_LEADERBOARD), "", f"Latency per batch (forward pass); peak memory: {_md_text(figures)}."]
    failures = tables.failures(run)
    if not failures.empty:
        parts += ["", "### Cells that did not finish", "", markdown_table(failures, MD_FAILURES)]
    parts += ["", "### Best choice", "", _md_text(best.assumption_text(run)), ""]
    for advice in best.best_choices(run):
        parts.append(f"- **{_md_text(advice.model)}**")
        parts += [f"  - {_md_text(line)}" for line in advice.lines]
    return "\n".join(parts) + "\n"


# ---- CSV -------------------------------------------------------------------------------------------

CSV_COLUMNS = ["cell_id", "model", "resolution", "batch", "precision", "backend", "status", "median_ms", "p95_ms", "cv", "fps",
               "end_to_end_median_ms", "peak_mb", "memory_figure", "params", "gflops", "pixel_agreement", "miou_vs_fp32",
               "miou_gt", "pixel_accuracy_gt", "miou_delta_vs_fp32", "error"]

def cells_frame(run: RunData) -> pd.DataFrame:
    """Every cell (ok or not), one row each, with the headline figures and the failure reason."""
    rows = []
    for record in tables.sort_cells(run.records):
        latency = record.get("latency_ms") or {}
        peak, figure = tables.peak_memory(record)
        measured = tables.fidelity(record)
        rows.append({
            "cell_id": record["cell_id"],
            "model": record["model"],
            "resolution": tables.resolution_text(record),
            "batch": record["batch_size"],
            "precision": record["precision"],
            "backend": record["backend"],
            "status": record.get("status"),
            "median_ms": latency.get("median"),
            "p95_ms": latency.get("p95"),
            "cv": latency.get("cv"),
            "fps": record.get("fps"),
            "end_to_end_median_ms": (record.get("end_to_end_ms") or {}).get("median"),
            "peak_mb": peak,
            "memory_figure": figure if peak is not None else None,
            "params": record.get("params"),
            "gflops": record.get("gflops"),
            "pixel_agreement": measured.get("pixel_agreement"),
            "miou_vs_fp32": measured.get("miou_vs_fp32"),
            "miou_gt": tables.accuracy(record).get("miou"),
            "pixel_accuracy_gt": tables.accuracy(record).get("pixel_accuracy"),
            "miou_delta_vs_fp32": tables.accuracy(record).get("miou_delta_vs_fp32"),
            "error": record.get("error"),
        })
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS)  # explicit columns: an empty run still gets a header
    optional = ("gflops", "pixel_agreement", "miou_vs_fp32", "miou_gt", "pixel_accuracy_gt", "miou_delta_vs_fp32")
    return frame.drop(columns=[c for c in optional if frame[c].isna().all()])


def render_csv(run: RunData) -> str:
    return cells_frame(run).to_csv(index=False)
