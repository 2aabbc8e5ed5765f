"""`segbench export` (the file a cell ran, ready to deploy) and `segbench cache` (what the prepare cache holds)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from segbench.cli.app import console, user_errors
from segbench.errors import SegbenchError
from segbench.system import cache

DAY_S = 86400.0
MAX_ROWS = 40  # entries listed; the total always counts them all


def _size(size_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size_bytes < 1024 or unit == "GiB":
            return f"{size_bytes:.0f} {unit}" if unit == "B" else f"{size_bytes:.1f} {unit}"
        size_bytes /= 1024
    return f"{size_bytes:.1f} GiB"


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return cache_dir.expanduser()
    base = cache.root()
    if base is None:
        raise SegbenchError("the prepare cache is off (SEGBENCH_NO_CACHE is set); unset it or give --cache-dir")
    return base


@user_errors
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="a run folder made by `segbench run`"),
    cell: str = typer.Argument(..., metavar="CELL", help="a cell id (or a unique prefix) or its label from a report"),
    out: Path = typer.Option(..., "--out", "-o", help="folder to write the model file(s) and segbench-export.json to"),
) -> None:
    """Write the model file a cell ran (ONNX, OpenVINO IR, int8 program), exactly as measured, with its precision,
    backend settings and preprocessing in segbench-export.json beside it."""
    from segbench.tools.export import export_cell  # lazy: imports torch (the model registry)

    exported = export_cell(run_dir, cell, out)
    for path in exported.files:
        console.print(f"wrote {escape(str(path))} ({_size(path.stat().st_size)})", highlight=False)
    console.print(
        f"wrote {escape(str(exported.sidecar))} (precision, backend settings, preprocessing)", highlight=False
    )


@user_errors
def cache_command(
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="cache root (default: the one runs use)"),
    clear: bool = typer.Option(
        False, "--clear", help="delete the entries listed (all, or those --kind/--older-than pick)"
    ),
    kind: Optional[str] = typer.Option(
        None, "--kind", help="only entries of this kind (onnx-export, openvino-model, …)"
    ),
    older_than_days: Optional[float] = typer.Option(
        None, "--older-than", min=0.0, max=36500.0, help="only entries created more than this many days ago"
    ),
) -> None:
    """List the prepare cache's entries (exports, quantized graphs, compiled code) with their sizes, or clear them."""
    base = _cache_root(cache_dir)
    entries = cache.list_entries(base) if base.is_dir() else []
    if kind is not None:
        entries = [entry for entry in entries if entry.kind == kind]
    if older_than_days is not None:
        cutoff = time.time() - older_than_days * DAY_S
        entries = [entry for entry in entries if entry.created is not None and entry.created < cutoff]
    total = sum(entry.size_bytes for entry in entries)
    if clear:
        freed = cache.remove_entries(entries)
        console.print(
            f"cleared {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_size(freed)}, "
            f"from {escape(str(base))}",
            highlight=False,
        )
        return
    table = Table(
        title=f"prepare cache {escape(str(base))}: {len(entries)} entries, {_size(total)}", title_justify="left"
    )
    for column in ("kind", "built for", "size", "age"):
        table.add_column(column, no_wrap=column != "built for")
    table.add_column("folder", overflow="fold")
    now = time.time()
    for entry in entries[:MAX_ROWS]:
        age = f"{(now - entry.created) / DAY_S:.1f} d" if entry.created else "?"
        table.add_row(entry.kind, escape(entry.describes), _size(entry.size_bytes), age, escape(str(entry.path)))
    console.print(table)
    if len(entries) > MAX_ROWS:
        console.print(f"{len(entries) - MAX_ROWS} more entries not listed (--kind or --older-than narrow the list)")
    console.print("segbench cache --clear deletes them; --kind / --older-than pick which", highlight=False)
