"""A run as one row per cell, with the column names of the report's CSV: `segbench.results.load(run_dir)`.

The CSV export (report/exports.py) builds its rows here and adds only what needs the report's judgement of the suite's
targets (`verdict`, `verdict_detail`), so a DataFrame and a CSV of the same run name every column alike: the cell's
axes (`batch`, `card`), every catalogue metric by its key (`median_ms`, `speedup`), then every other scalar of the
record by its dotted path (`latency_ms.p90`). The frame keeps the raw `samples_ms` list as its last column, which a
CSV cell cannot hold. Both read the run as the reports do (`load_run`: impossible energy withheld, accuracy deltas).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from segbench.results.labels import options_tag, resolution_text
from segbench.results.metrics import (
    CATALOGUE,
    METRICS,
    footprint_mb,
    headline_memory,
    is_reference,
    withhold_percentiles,
)
from segbench.results.runs import RunData, load_run, load_runs, peak_memory, pixels, variant_key
from segbench.system import cache

IDENTITY_COLUMNS = [
    "cell_id",
    "model",
    "card",
    "resolution",
    "batch",
    "precision",
    "backend",
    "options",
    "status",
    "error",
]
BULKY = ("samples_ms", "stage_samples_ms", "traceback", "profile")  # the profile: its few profile_columns
RELATIVE_METRICS = ("speedup", "end_to_end_speedup", "memory_saving_pct")
ARTEFACT_FIELDS = ("artefact_kind", "artefact_folder")  # the file a cell ran (its ONNX, IR, int8 program)
JUDGED = ("verdict", "verdict_detail")  # the report's, against the suite's targets
SAMPLES = "samples_ms"  # the frame's raw samples (a list per cell)


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
        "options": options_tag(record["options"]) if record.get("options") else "",  # the CSV keeps them whole
    }


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


def artefact(record: dict[str, Any]) -> tuple[str, str] | None:
    """The kind and cache folder of the file a cell ran (its ONNX, IR or int8 program), None for a module run in
    PyTorch itself; old records name only the entry's key."""
    event = cache.artefact_event(record.get("cache_events"))
    if event is None:
        return None
    return str(event["kind"]), str(event.get("entry") or f"<cache>/{cache.ENTRIES_DIR}/{event['kind']}/{event['key']}")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Every scalar of a record under its dotted path; lists of scalars as JSON text, lists of objects (trials, series)
    left out."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if name in BULKY:
            continue
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            if all(not isinstance(item, (dict, list)) for item in value):
                flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def cell_rows(run: RunData) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(record, row) per cell, ok or not, in the reports' order; the row has every column but the judged ones."""
    found = references(run)
    rows = []
    for record in sort_cells(run.records):
        row: dict[str, Any] = {key: value for key, value in identity(record).items() if key != "pixels"}
        row["options"] = json.dumps(record["options"], sort_keys=True) if record.get("options") else ""  # whole
        row.update(status=record.get("status"), error=record.get("error"))
        row.update({metric.key: metric.value(record) for metric in CATALOGUE if not metric.relative})
        row.update(relative_values(record, found.get(variant_key(record))))
        row["memory_figure"] = peak_memory(record)[1] if row.get("peak_mb") is not None else None
        ran = artefact(record)
        row.update(artefact_kind=ran[0] if ran else None, artefact_folder=ran[1] if ran else None)
        if record.get("profile"):
            row.update(profile_columns(record))
        for key, value in _flatten(withhold_percentiles(record)).items():  # old records kept a p99 for any n
            row.setdefault(key, value)  # a catalogue key equal to its record path (fps, prepare_s) is the same value
        rows.append((record, row))
    return rows


def profile_columns(record: dict[str, Any]) -> dict[str, Any]:
    """A profiled cell's few flat columns: the top block, its share and bound, the top operator, and the forward's
    share in low precision (the whole profile stays in the record)."""
    profile = record.get("profile") or {}
    blocks = profile.get("blocks") or []
    top = blocks[0] if blocks else {}
    operators = profile.get("operators") or []
    return {
        "profile_top_block": top.get("name"),
        "profile_top_block_share": top.get("share"),
        "profile_top_block_bound": top.get("bound"),
        "profile_top_operator": operators[0]["name"] if operators else None,
        "profile_low_precision_share": profile.get("low_precision_share"),
    }


def ordered(rows: list[dict[str, Any]], judged: bool) -> pd.DataFrame:
    """The rows as a frame with the one column order: axes, catalogue metrics, (judged,) artefact, record paths."""
    named = [*IDENTITY_COLUMNS, *(metric.key for metric in CATALOGUE), "memory_figure"]
    columns = [*named, *(JUDGED if judged else ()), *ARTEFACT_FIELDS]
    frame = pd.DataFrame(rows)
    extra = sorted(c for c in frame.columns if c not in columns) if not frame.empty else []
    return frame.reindex(columns=[*columns, *extra])  # explicit columns: an empty run still gets a header


def load(run_dir: Path | str | list[Path] | list[str]) -> pd.DataFrame:
    """A run's results as a pandas DataFrame, one row per cell (latest attempt), named as the report's CSV names its
    columns; given several run folders, one frame of all their cells with a `run` column naming each cell's folder."""
    run = load_runs(list(run_dir)) if isinstance(run_dir, (list, tuple)) else load_run(run_dir)
    rows = cell_rows(run)
    frame = ordered([row for _, row in rows], judged=False)
    if isinstance(run_dir, (list, tuple)) and "run" not in frame.columns:  # one folder in a list: still named
        frame["run"] = Path(run_dir[0]).name if run_dir else None
    frame[SAMPLES] = pd.Series([record.get(SAMPLES) for record, _ in rows], index=frame.index, dtype=object)
    return frame
