"""`segbench profile MODEL`: one configuration as an isolated cell with its profile pass, printed as tables (blocks,
top operators), in a run folder `segbench report` reads like any other."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from segbench.cli.app import console, errors, user_errors
from segbench.cli.options import absolute_plugin, bounded, suite_from_flags, valid_paths
from segbench.cli.quiet import library_output
from segbench.cli.run import ProgressObserver, _configure_cache, _suite_for_run
from segbench.device import is_device_name
from segbench.errors import SegbenchError
from segbench.formatting import fmt_fixed

TOP_PRINTED = 15


def _table(title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str, bool]]) -> Table:
    table = Table(title=title, title_justify="left")
    for _, label, numeric in columns:
        table.add_column(label, justify="right" if numeric else "left")
    for row in rows:
        cells = []
        for key, _, numeric in columns:
            value = row.get(key)
            cells.append(fmt_fixed(3 if key.endswith("_ms") else 1)(value) if numeric else escape(str(value or "")))
        table.add_row(*cells)
    return table


def profile_tables(record: dict[str, Any]) -> list[Table]:
    """The blocks and the top operators of one profiled record, as rich tables."""
    profile = record["profile"]
    blocks = [
        {
            **block,
            "share_pct": 100 * block["share"],
            "low_pct": 100 * (block.get("low_precision_share") or 0),
            "precisions": ", ".join(f"{k} {v:.0%}" for k, v in (block.get("precision_share") or {}).items()),
        }
        for block in profile["blocks"]
    ]
    operators = [{**row, "share_pct": 100 * row["share"]} for row in profile["operators"][:TOP_PRINTED]]
    return [
        _table(
            "blocks",
            blocks,
            [
                ("name", "block", False),
                ("self_ms", "self ms / forward", True),
                ("share_pct", "share %", True),
                ("low_pct", "low precision %", True),
                ("precisions", "precisions executed", False),
                ("bound", "bound", False),
            ],
        ),
        _table(
            f"top {len(operators)} operators",
            operators,
            [
                ("name", "operator", False),
                ("implementation", "implementation / kernel", False),
                ("precision", "precision", False),
                ("self_ms", "self ms / forward", True),
                ("share_pct", "share %", True),
                ("calls", "calls / forward", True),
            ],
        ),
    ]


@user_errors
def profile(
    model: str = typer.Argument(..., help="a registered model, e.g. fast-scnn (segbench models lists them)"),
    resolution: str = typer.Option("512", "--resolution", "-r", help="SIDE or HxW, e.g. 512 or 512x1024"),
    batch: str = typer.Option("1", "--batch", help="batch size"),
    precision: str = typer.Option("fp32", "--precision", help="e.g. fp32, bf16, int8, ort-int8, ov-int8"),
    backend: str = typer.Option("eager", "--backend", help="e.g. eager, compile, onnxruntime, openvino"),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu, cuda or cuda:N"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="a checkpoint for the model"),
    iters: int = bounded(10, "--iters", low=1, high=1000, help="forwards the profiler records"),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", metavar="FILE", help="a file registering models"),
    overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="suite field overrides, KEY=VALUE"),
    out: Path = typer.Option(Path("results"), "--out", help="parent folder of the run folder"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="libraries' own output on the terminal"),
) -> None:
    """Profile one configuration: where a forward's time goes, per operator and per model block.

    The cell runs isolated like any `segbench run` cell (timed passes first, the profiler in a pass of its own after
    them) and its run folder works with `segbench report`:
    segbench profile yolov8n-seg -r 640 --precision ov-int8 --backend openvino --device cpu
    """
    if device is not None and not is_device_name(device):
        raise SegbenchError(f"--device: invalid device {device!r}; use auto, cpu, cuda or cuda:N")
    _configure_cache(None, False)
    specs = [absolute_plugin(spec) for spec in plugins or []]
    data = suite_from_flags([model], [resolution], [batch], [precision], [backend], device, weights, [], specs)
    data["description"] = "built by segbench profile"
    left_out = valid_paths(data, False)
    if left_out:
        raise SegbenchError(f"profile: {left_out[0]}")
    data["profile"] = {"iters": iters}
    from segbench.run.executors import get_executor  # lazy: imports numpy
    from segbench.run.runner import run_suite  # lazy: imports torch

    with library_output(verbose):
        suite, _, suite_text = _suite_for_run(None, None, data, [], overrides or [])
        with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
            result = run_suite(
                suite, None, out, device, None, False, ProgressObserver(progress, verbose), get_executor("local"),
                "local", suite_text,
            )  # fmt: skip
    record = result.records[0] if result.records else {}
    if record.get("status") != "ok" or not record.get("profile"):
        why = record.get("error") or record.get("profile_unavailable") or "no record"
        errors.print(f"profile: the cell ended {record.get('status')}: {why}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    from segbench.report.profile import headline  # lazy: imports matplotlib

    console.print(f"{record['model']} {precision} {backend}: {headline(record)}", markup=False, soft_wrap=True)
    for table in profile_tables(record):
        console.print(table)
    console.print(f"next: {shlex.join(['segbench', 'report', str(result.run_dir)])}", markup=False, highlight=False)
