"""Writing a run report to a file: HTML (the full report), Markdown (for a pull request) or CSV (for a sheet)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from segbench.errors import SegbenchError
from segbench.formatting import fmt_duration, fmt_fixed, fmt_time, printable
from segbench.report import capacity, stream, tables
from segbench.report import profile as profiles
from segbench.report.answer import FPS_SENTENCE, HOW_TO, PERCENTILE_SENTENCE, answer
from segbench.report.html import (
    ARTEFACT_COLUMNS,
    ARTEFACTS_SENTENCE,
    CAPACITY_COLUMNS,
    CAPACITY_TRIAL_COLUMNS,
    FAILURE_COLUMNS,
    LEADERBOARD_COLUMNS,
    PROFILE_BLOCK_COLUMNS,
    PROFILE_OPERATOR_COLUMNS,
    PROFILE_PAIR_COLUMNS,
    PRUNED_COLUMNS,
    QUANTIZATION_COLUMNS,
    STREAM_TRIAL_COLUMNS,
    Column,
    answer_columns,
    dataset_text,
    expectation_rows,
    footnote_notes,
    memory_breakdown_columns,
    memory_note,
    render_report,
    telemetry_columns,
    weights_note,
)
from segbench.report.memory import BREAKDOWN_NOTE, gpu_memory_breakdown
from segbench.report.search import pruned_table
from segbench.results import frame
from segbench.results.runs import RunData, load_run, load_runs, merge_note
from segbench.results.schema import STAGES
from segbench.results.store import refuse_run_file_as_output
from segbench.suite.expectations import verdict_note
from segbench.suite.targets import Targets

FORMATS = {"html": ".html", "md": ".md", "csv": ".csv"}
REPORTS_DIR = Path("reports")


RunFolders = Path | str | list[Path] | list[str]
MAX_NAMED_IN_FILE = 3  # run folders a merged report's file name lists before "+N"


def default_output(run_dir: RunFolders, fmt: str = "html") -> Path:
    """reports/<run folder name>.<format suffix>, relative to the current directory; several runs are joined by +."""
    names = [Path(path).resolve().name for path in (run_dir if isinstance(run_dir, list) else [run_dir])]
    stem = "+".join(names) if len(names) <= MAX_NAMED_IN_FILE else f"{names[0]}+{len(names) - 1}-more"
    return REPORTS_DIR / f"{stem}{FORMATS[fmt]}"


def write_report(
    run_dir: RunFolders, output: Path | None = None, fmt: str = "html", targets: Targets | None = None
) -> Path:
    """Render a run (or several, as one report) in the given format and write it; returns the file written.
    `targets` default to the (first) suite's."""
    if fmt not in FORMATS:
        raise SegbenchError(f"--format: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    target = output or default_output(run_dir, fmt)
    for folder in run_dir if isinstance(run_dir, list) else [run_dir]:
        refuse_run_file_as_output(target, folder)  # before anything is read or rendered
    run = load_runs(run_dir) if isinstance(run_dir, list) else load_run(run_dir)
    renderers = {"html": render_report, "md": render_markdown, "csv": render_csv}
    save_text(target, renderers[fmt](run, targets), "the report")
    return target


def save_text(target: Path, text: str, what: str) -> None:
    """Write a report as UTF-8 text with control characters removed (an ESC sequence from a foreign run's meta.json
    would act when the file is shown in a terminal), or one line saying why it cannot be written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(printable(text), encoding="utf-8")
    except OSError as exc:
        raise SegbenchError(f"{target}: cannot write {what} ({exc.strerror or exc})") from None


# ---- Markdown --------------------------------------------------------------------------------------


MARKDOWN_ESCAPED = str.maketrans({char: f"\\{char}" for char in "\\`<>&|"})


def _md_text(value: Any) -> str:
    """Table-safe text: no line breaks, no column breaks, no raw HTML. CommonMark's backslash escapes, not HTML
    entities, so the raw file reads as it renders ('p99 < 50 ms', not 'p99 &lt; 50 ms')."""
    return str(value).replace("\r", " ").replace("\n", " ").translate(MARKDOWN_ESCAPED)


def markdown_table(frame: pd.DataFrame, columns: list[Column]) -> str:
    """A pipe table of the frame's listed columns (the HTML report's columns: label and format); columns the frame lacks
    are left out."""
    present = [column for column in columns if column.key in frame.columns]
    lines = [
        "| " + " | ".join(_md_text(column.label) for column in present) + " |",
        "|" + "|".join("---:" if column.numeric else "---" for column in present) + "|",
    ]
    for record in frame.to_dict("records"):
        lines.append("| " + " | ".join(_md_text(column.format(record[column.key])) for column in present) + " |")
    return "\n".join(lines)


def _md_answer(run: RunData, targets: Targets | None) -> list[str]:
    result = answer(run, targets)
    parts = ["### Answer", ""]
    if result.measured_on:
        parts += [f"**{_md_text(result.measured_on)}**", ""]
    if result.search:
        parts += [f"> {_md_text(result.search)}", ""]
    if result.reliability:
        parts += [f"> {_md_text(result.reliability)}", ""]
    if result.has_targets:
        counts = result.counts
        parts.append(
            f"Targets: **{_md_text(result.target_text)}**. Verdicts: {counts['meets']} of {len(result.verdicts)} meet "
            f"every target, {counts['borderline']} borderline, {counts['misses']} miss, {counts['unknown']} unknown."
        )
    else:
        parts.append(
            _md_text(
                "No targets are set, so there is no verdict: below are the fastest and the lightest configuration per "
                "model. " + HOW_TO
            )
        )
    parts += ["", _md_text(f"{FPS_SENTENCE} {PERCENTILE_SENTENCE}"), ""]
    for item in result.models:
        parts.append(f"- **{_md_text(item.model)}**")
        parts += [f"  - {_md_text(line)}" for line in item.lines]
    if result.has_targets and not result.table.empty:
        parts += ["", markdown_table(result.table, answer_columns(result))]
    return parts


def render_markdown(run: RunData, targets: Targets | None = None) -> str:
    """Every section the HTML report has, as Markdown for a pull request (plots left out)."""
    fingerprint = run.fingerprint
    gpus = ", ".join(str(g.get("name")) for g in fingerprint.get("gpus") or []) or "no GPU"
    torch_version = (fingerprint.get("packages") or {}).get("torch") or "?"
    parts = [
        f"## segbench: {_md_text(run.suite_name)}",
        "",
        f"Run `{_md_text(run.name)}` · {fmt_time(run.meta.get('start_time'))} · "
        f"{fmt_duration(run.meta.get('duration_s'))} · device {_md_text(run.meta.get('device') or '?')} · "
        f"{_md_text(fingerprint.get('machine') or '?')} · {_md_text(gpus)} · torch {_md_text(torch_version)}",
    ]
    for note in (merge_note(run), weights_note(run)):
        if note:
            parts += ["", f"> {_md_text(note)}"]
    parts += ["", *_md_answer(run, targets)]
    leaderboard, notes = footnote_notes(tables.leaderboard(run))
    parts += ["", "### Leaderboard", ""]
    if leaderboard.empty:
        parts.append("No cell finished ok.")
    else:
        parts += [markdown_table(leaderboard, LEADERBOARD_COLUMNS), ""]
        parts += [f"{index}. {_md_text(text)}" for index, text in enumerate(notes, start=1)]
        parts += [
            "",
            _md_text(
                "Latency per batch (forward pass, synchronous: one request at a time); FPS (forward, 1/latency) and "
                "FPS (end to end) side by side, device throughput (images / loop time back to back) where recorded. "
                + memory_note(run)
            ),
        ]
    stage_medians = tables.stages(run)
    if not stage_medians.empty:
        columns = [Column("label", "cell"), *(Column(stage, f"{stage} ms", fmt_fixed(2), True) for stage in STAGES)]
        parts += ["", "### Stage breakdown", "", *(_md_text(line) for line in tables.end_to_end_scope(run)), ""]
        parts.append(markdown_table(stage_medians, columns))
    breakdown = gpu_memory_breakdown(run)
    if not breakdown.empty:
        parts += [
            "",
            "### Where the GPU memory went",
            "",
            markdown_table(breakdown, memory_breakdown_columns(breakdown)),
        ]
        parts += ["", _md_text(BREAKDOWN_NOTE)]
    telemetry = tables.telemetry(run)
    if not telemetry.empty:
        parts += ["", "### Telemetry", "", markdown_table(telemetry, telemetry_columns())]
    trials = stream.trials(run)
    if not trials.empty:
        parts += ["", "### Stream trials", "", *(f"- {_md_text(line)}" for line in stream.criteria(run)), ""]
        parts += [markdown_table(trials, STREAM_TRIAL_COLUMNS), "", _md_text(stream.TRIALS_NOTE)]
    capacity_found = capacity.summary(run)
    if not capacity_found.empty:
        parts += ["", "### Capacity", "", markdown_table(capacity_found, CAPACITY_COLUMNS), ""]
        parts += [markdown_table(capacity.trials(run), CAPACITY_TRIAL_COLUMNS), "", _md_text(capacity.NOTE)]
    parts += _md_profile(run)
    quantization = tables.quantization(run)
    if not quantization.empty:
        parts += ["", "### Quantization and precision", "", markdown_table(quantization, QUANTIZATION_COLUMNS)]
    accuracy = tables.per_class_iou(run)
    if not accuracy.empty:
        columns = [
            Column("cell", "cell"),
            *(Column(key, key, fmt_fixed(2), True) for key in accuracy.columns if key not in ("model", "cell")),
        ]
        parts += [
            "",
            "### Accuracy against the dataset's labels",
            "",
            _md_text(dataset_text(run)),
            "",
            markdown_table(accuracy, columns),
        ]
    pruned = pruned_table(run)
    if not pruned.empty:
        parts += ["", "### Cells the search pruned", "", markdown_table(pruned, PRUNED_COLUMNS)]
    failures = tables.failures(run)
    if not failures.empty:
        parts += ["", "### Cells that did not finish", "", markdown_table(failures, FAILURE_COLUMNS)]
    artefacts = tables.artefacts(run)
    if not artefacts.empty:
        parts += ["", "### Deployable files", "", ARTEFACTS_SENTENCE, "", markdown_table(artefacts, ARTEFACT_COLUMNS)]
    expectations = expectation_rows(run)
    if expectations:
        parts += [
            "",
            "### Expectations",
            "",
            _md_text(verdict_note()),
            "",
            "| claim | metric | expected | measured | verdict | cell and reason |",
            "|---|---|---|---:|---|---|",
        ]
        parts += [
            "| "
            + " | ".join(
                _md_text(value)
                for value in (
                    row["claim"],
                    row["metric"],
                    row["expected"] or "–",
                    row["measured_text"],
                    row["verdict_text"],
                    row["detail"] or "",
                )
            )
            + " |"
            for row in expectations
        ]
    return "\n".join(parts) + "\n"


def _md_profile(run: RunData) -> list[str]:
    """The Profile section: per configuration its headline, blocks and top operators; two precisions side by side."""
    sections = profiles.sections(run)
    if not sections:
        return []
    parts = ["", "### Profile: where the time goes", "", _md_text(profiles.PROFILE_NOTE)]
    for section in sections:
        parts += ["", f"#### {_md_text(section.title)}", "", _md_text(section.headline)]
        parts += ["", f"_{_md_text(section.how)}_"]
        parts += ["", markdown_table(section.blocks, PROFILE_BLOCK_COLUMNS), ""]
        parts += [markdown_table(section.operators, PROFILE_OPERATOR_COLUMNS)]
    for base, other in profiles.precision_pairs(run):
        parts += ["", f"#### {_md_text(profiles.pair_title(base, other))}"]
        parts += ["", _md_text(profiles.pair_line(base, other))]
        parts += ["", markdown_table(profiles.pair_frame(base, other), PROFILE_PAIR_COLUMNS)]
    return parts


# ---- CSV -------------------------------------------------------------------------------------------


def cells_frame(run: RunData, targets: Targets | None = None) -> pd.DataFrame:
    """One row per cell (ok or not), named as `segbench.results.load` names its columns (results/frame.py builds the
    rows): its axes, every catalogue metric (stable keys), the verdict, then every other scalar of the record by its
    dotted path (latency_ms.p90, stream.frames_dropped)."""
    result = answer(run, targets)
    rows = []
    for record, row in frame.cell_rows(run):
        judged = result.verdicts.get(record["cell_id"])
        row.update(verdict=judged.status if judged else None, verdict_detail=judged.text if judged else None)
        if (record.get("search") or {}).get("evidence"):  # a pruned cell's measured cells, whole
            row["search.evidence"] = json.dumps(record["search"]["evidence"], sort_keys=True)
        rows.append(row)
    return frame.ordered(rows, judged=True)


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (`=HYPERLINK(…)`) gets a leading quote, as OWASP advises
    for CSV exports; numbers stay numbers (a negative number is not a formula)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_LEADS) else value


def render_csv(run: RunData, targets: Targets | None = None) -> str:
    return cells_frame(run, targets).map(spreadsheet_safe).to_csv(index=False)
