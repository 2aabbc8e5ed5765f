"""`segbench export RUN CELL --out DIR`: the file a measured cell ran (ONNX, OpenVINO IR, a PT2E int8 program), with
what a deployment needs to feed it recorded beside it.

The file is the prepare cache's entry the cell used (`cache_events` in its record), checked against the entry's
checksums; nothing is rebuilt, so what is written is exactly what was measured. A cell that ran the PyTorch module
itself (eager, channels-last, compile) has no such file: the error says which backends make one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segbench import __version__
from segbench.errors import SegbenchError
from segbench.models.registry import adapter_class
from segbench.results.labels import cell_label
from segbench.results.store import read_records
from segbench.system import cache

SIDECAR = "segbench-export.json"
MAX_LISTED = 8  # cells named when a CELL matches several or none


@dataclass(frozen=True)
class Exported:
    record: dict[str, Any]
    kind: str
    files: list[Path]
    sidecar: Path


def find_cell(records: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """The record a CELL argument names: its cell id (or a unique prefix) or its label as reports print it."""
    text = wanted.strip()
    matches = [record for record in records if str(record.get("cell_id", "")).startswith(text)] if text else []
    if not matches:
        matches = [record for record in records if cell_label(record) == text]
    if not matches:
        matches = [record for record in records if text and text in cell_label(record)]
    if len(matches) == 1:
        return matches[0]
    shown = matches or records
    listing = "; ".join(f"{record.get('cell_id')} = {cell_label(record)}" for record in shown[:MAX_LISTED])
    more = f" (and {len(shown) - MAX_LISTED} more)" if len(shown) > MAX_LISTED else ""
    why = f"matches {len(matches)} cells" if matches else "matches no cell"
    raise SegbenchError(f"CELL {wanted!r} {why}; give a cell id or its full label: {listing}{more}")


def _entry_dir(event: dict[str, Any]) -> Path:
    """Where the entry is: the path the record names, else under this machine's configured cache root."""
    if event.get("entry"):
        return Path(str(event["entry"]))
    base = cache.root()
    if base is None:
        raise SegbenchError("the prepare cache is off (--no-cache / SEGBENCH_NO_CACHE): no cached file to export")
    return base / cache.ENTRIES_DIR / str(event["kind"]) / str(event["key"])


def _preprocessing(record: dict[str, Any]) -> dict[str, Any]:
    """How a frame becomes the model's input, from the model's adapter (mean/std on 0–1 RGB, NCHW)."""
    try:
        adapter = adapter_class(str(record["model"]))
    except SegbenchError:
        return {"known": False, "why": f"{record['model']} is not registered here (a plugin model?)"}
    height, width = record["resolution"]
    return {
        "input": f"float32 NCHW, RGB, {height}x{width}, batch {record['batch_size']}",
        "scale": "pixel / 255",
        "mean": list(adapter.mean),
        "std": list(adapter.std),
        "output": "per-class scores (logits) at the input's or a lower resolution; the class map is their argmax",
    }


def _sidecar(record: dict[str, Any], kind: str, event: dict[str, Any], files: list[str]) -> dict[str, Any]:
    return {
        "exported_by": f"segbench {__version__}",
        "cell_id": record.get("cell_id"),
        "cell": cell_label(record),
        "model": record.get("model"),
        "weights": record.get("weights"),
        "resolution": record.get("resolution"),
        "batch_size": record.get("batch_size"),
        "precision": record.get("precision"),
        "backend": record.get("backend"),
        "backend_info": record.get("backend_info"),
        "kind": kind,
        "cache_key": event.get("key"),
        "files": files,
        "preprocessing": _preprocessing(record),
        "measured": {"fps": record.get("fps"), "end_to_end_fps": record.get("end_to_end_fps")},
    }


def export_cell(run_dir: Path, wanted: str, out: Path) -> Exported:
    """Copy the file the cell ran into `out`, with a sidecar JSON; one-line errors for every way it cannot."""
    record = find_cell(read_records(run_dir), wanted)
    event = cache.artefact_event(record.get("cache_events"))
    if event is None:
        raise SegbenchError(
            f"{cell_label(record)} ran {record.get('precision')} on {record.get('backend')}, which makes no file to "
            "deploy (the PyTorch module ran itself); an onnxruntime, openvino, ort-int8, ov-int8 or int8 cell does"
        )
    entry = _entry_dir(event)
    try:
        files = cache.artefact_files(entry)
    except ValueError as exc:
        raise SegbenchError(f"{exc}; rerun the cell (segbench run … --resume) to rebuild it") from None
    if out.exists() and not out.is_dir():
        raise SegbenchError(f"--out {out}: is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = [Path(shutil.copyfile(source, out / name)) for name, source in files.items()]
        sidecar = out / SIDECAR
        document = _sidecar(record, str(event["kind"]), event, sorted(files))
        sidecar.write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SegbenchError(f"--out {out}: cannot write ({exc.strerror or exc}); choose a writable folder") from None
    return Exported(record, str(event["kind"]), written, sidecar)
