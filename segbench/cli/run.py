"""`segbench run`: a suite (or one built from flags) to a run folder, with progress, a summary and a gate."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from segbench.cli.app import console, errors, user_errors
from segbench.cli.options import (
    LATENCY_PERCENTILE,
    MAX_LATENCY_MS,
    MAX_P99_MS,
    MEMORY_BUDGET,
    MIN_AGREEMENT,
    MIN_MIOU,
    TARGET_FPS,
    absolute_plugin,
    axis_flags_given,
    bounded,
    scenario_overrides,
    suite_from_flags,
    target_fields,
    target_overrides,
    valid_paths,
)
from segbench.cli.quiet import Captured, library_output
from segbench.device import is_device_name
from segbench.errors import SegbenchError
from segbench.report.summary import expectations_table, status_text, summary_table
from segbench.results.devices import measured_on_line
from segbench.run import forkserver
from segbench.run.interruption import RunInterrupted, exit_after_a_stop
from segbench.suite.expectations import evaluate_run
from segbench.system import cache


def end_to_end_overrides(camera_size: str | None, decode: str | None) -> list[str]:
    """--camera-size and --decode as the -s overrides they stand for (the suite's end_to_end block checks them)."""
    given = {"camera_size": camera_size, "decode": decode}
    return [f"end_to_end.{key}={json.dumps(value)}" for key, value in given.items() if value is not None]


class ProgressObserver:
    """Rich progress: cell count, the current cell, elapsed time and an ETA."""

    def __init__(self, progress: Progress, verbose: bool = False):
        self.progress = progress
        self.verbose = verbose
        self.task: Any = None
        self.run_dir: Path | None = None

    def run_started(self, run_dir: Path, cells: list[Any], skipped: int) -> None:
        note = f" ({skipped} already finished, skipped)" if skipped else ""
        self.run_dir = run_dir
        console.print(
            f"run folder: [bold]{escape(str(run_dir))}[/] · {len(cells)} cell(s) to run{note}",
            highlight=False,
            soft_wrap=True,  # a long path never breaks the line: it stays one line to copy and to grep
        )
        self.task = self.progress.add_task("starting", total=len(cells))

    def cell_started(self, cell: Any, index: int) -> None:
        self.progress.update(self.task, description=escape(cell.label))

    def cell_finished(self, cell: Any, record: dict[str, Any]) -> None:
        self.progress.console.print(f"  {escape(cell.label)}: {status_text(record)}", highlight=False)
        if self.verbose and record.get("traceback"):
            self.progress.console.print(record["traceback"], markup=False, highlight=False)
        elif record.get("status") in ("error", "timeout", "oom") and self.run_dir is not None:
            from segbench.run.runner import LOG_DIR  # lazy: the runner (imported by now) imports torch

            card = f"@{record['hardware']}" if record.get("hardware") else ""
            log = self.run_dir / LOG_DIR / f"{record.get('cell_id')}{card}.log"
            self.progress.console.print(
                f"    why: {log} (--verbose prints it here)", markup=False, highlight=False, soft_wrap=True
            )
        self.progress.advance(self.task)


def resume_command(
    suite_path: Path | None,
    run_dir: Path,
    device: str | None,
    executor: str | None,
    address: str | None,
    retry_failed: bool,
    retry_pruned: bool = False,
) -> str:
    """The exact command that continues an interrupted run with the same choices (the run folder keeps its suite)."""
    words = ["segbench", "run", *([str(suite_path)] if suite_path else []), "--resume", str(run_dir)]
    for flag, value in (("--device", device), ("--executor", executor), ("--address", address)):
        if value is not None:
            words += [flag, value]
    flags = (["--retry-failed"] if retry_failed else []) + (["--retry-pruned"] if retry_pruned else [])
    return shlex.join(words + flags)


DRY_RUN_ROWS = 40  # a large matrix is summarised; --verbose lists every cell


def _dry_run_table(plan: Any, verbose: bool) -> Table:
    unsupported = f", {plan.unsupported_count} unsupported on {plan.device}" if plan.unsupported_count else ""
    table = Table(title=f"{len(plan.cells)} cell(s){unsupported}")
    for column in ("#", "cell_id", "model", "resolution", "batch", "precision", "backend", "will run"):
        table.add_column(column)
    shown = plan.cells if verbose else plan.cells[:DRY_RUN_ROWS]
    for index, planned in enumerate(shown, start=1):
        cell = planned.cell
        verdict = (
            "?"
            if plan.device is None
            else f"[yellow]unsupported: {escape(planned.unsupported)}[/]"
            if planned.unsupported
            else f"yes, [yellow]impractical: {escape(planned.impractical)}[/]"
            if planned.impractical
            else "yes"
        )
        table.add_row(
            str(index),
            cell.cell_id,
            escape(cell.model),
            f"{cell.resolution[0]}x{cell.resolution[1]}",
            str(cell.batch_size),
            cell.precision,
            cell.backend,
            verdict,
        )
    if len(shown) < len(plan.cells):
        table.caption = f"… and {len(plan.cells) - len(shown)} more cell(s); --verbose lists them all"
    return table


def _print_dry_run(suite: Any, plan: Any, out: Path, verbose: bool) -> None:
    from segbench.run.dryrun import estimate_wall_time, format_duration  # lazy: imports numpy

    if plan.device_warning:
        errors.print(f"[yellow]warning: {escape(plan.device_warning)}[/]", highlight=False, soft_wrap=True)
    console.print(_dry_run_table(plan, verbose))
    estimate = estimate_wall_time(suite, plan, out)
    console.print(
        f"estimated wall time: [bold]{format_duration(estimate.low_s)} – {format_duration(estimate.high_s)}[/]",
        highlight=False,
    )
    console.print("the estimate rests on: " + "; ".join(escape(part) for part in estimate.basis), highlight=False)
    if suite.search:
        from segbench.run.search import dry_run_lines  # lazy: the runner's side imports torch

        for line in dry_run_lines(suite, [planned.cell for planned in plan.cells if not planned.unsupported]):
            console.print(escape(line), highlight=False, soft_wrap=True)
    if suite.plugins:  # checking a plugin's model names means importing it: a dry run is no sandbox
        console.print(
            f"plugins imported to check their models (their code ran): {escape(', '.join(map(str, suite.plugins)))}",
            highlight=False,
        )


def _suite_for_run(
    suite_path: Path | None,
    resume: Path | None,
    from_flags: dict[str, Any] | None,
    plugins: list[str],
    overrides: list[str],
    on_schema_valid: Callable[[Any], None] | None = None,
) -> tuple[Any, Path | None, str | None]:
    """The suite to run, the file it came from (None when built from flags) and the YAML to keep (None: copy the
    file). `on_schema_valid` runs once the suite's schema holds, before its plugins and names are checked."""
    from segbench.results.store import SUITE_FILE  # lazy: imports pandas
    from segbench.suite.schema import apply_overrides, dump_suite, parse_suite, read_suite_data  # lazy: imports numpy

    if from_flags is not None:
        data, source, base_dir = from_flags, "command line", Path.cwd()
    else:
        if suite_path is None and resume is not None:
            suite_path = resume / SUITE_FILE  # the run folder keeps the suite it ran
        if suite_path is None:
            raise SegbenchError(
                "run: give a SUITE file, or build one from flags: segbench run --model fast-scnn --resolution 512 "
                "--batch 1,4"
            )
        data, source, base_dir = read_suite_data(suite_path), str(suite_path), suite_path.parent
        if plugins and isinstance(data, dict):
            data = {**data, "plugins": [*(data.get("plugins") or []), *plugins]}
    data = apply_overrides(data, overrides)
    suite = parse_suite(data, source, base_dir, on_schema_valid=on_schema_valid)
    changed = from_flags is not None or bool(plugins) or bool(overrides)
    return suite, suite_path if from_flags is None else None, dump_suite(data) if changed else None


def _prestart_local_template(executor: str | None) -> Callable[[Any], None]:
    """Once the schema holds: start the cells' template if they run here (not on Ray workers), so it imports torch
    while the suite's plugins and names are checked (they import torch too)."""

    def prestart(suite: Any) -> None:
        if (executor or suite.executor) == "local":
            forkserver.prestart()

    return prestart


CACHE_DIR_HELP = (
    "where ONNX exports, quantized graphs and inductor's compiled code are kept across runs (default: "
    "$SEGBENCH_CACHE_DIR, else the user cache dir)"
)


NO_CACHE_HELP = "prepare everything afresh: no cache is read or written, inductor's included"


def _configure_cache(cache_dir: Path | None, no_cache: bool) -> None:
    if cache_dir is not None and no_cache:
        raise SegbenchError("--cache-dir and --no-cache: give one or the other (--no-cache uses no cache directory)")
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise SegbenchError(f"--cache-dir: {cache_dir} is a file; give a directory (it is created if missing)")
    cache.configure(cache_dir, disabled=no_cache)
    unusable = cache.fall_back_if_unusable()
    if unusable:
        errors.print(f"warning: {unusable}", markup=False, highlight=False, soft_wrap=True)


def _write_run_log(log_dir: Path, parts: list[Captured]) -> None:
    """What libraries said, into logs/segbench.log (recreated when something deleted logs/ mid-run); a log that
    cannot be written is a warning, never the end of the run before its summary and exit line."""
    try:
        log_dir.mkdir(exist_ok=True)
        for captured in parts:
            captured.write_to(log_dir / "segbench.log")
    except OSError as exc:
        errors.print(
            f"warning: {log_dir / 'segbench.log'}: not written ({exc.strerror or exc}); libraries' output is lost",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@user_errors
def run(
    suite_path: Optional[Path] = typer.Argument(
        None,
        metavar="SUITE",
        help="suite YAML file; leave out to build the suite from --model and the other axis flags",
    ),
    models: Optional[list[str]] = typer.Option(
        None,
        "--model",
        "-m",
        metavar="NAME[=WEIGHTS]",
        help="without SUITE: a registered model to run (repeatable or comma-separated); NAME=WEIGHTS gives that "
        "model its own weights (a file, folder, Hub id or asset name)",
    ),
    resolutions: Optional[list[str]] = typer.Option(
        None,
        "--resolution",
        "-r",
        metavar="SIDE|HxW",
        help="without SUITE: square side or HxW, e.g. 512 or 360x640 (repeatable or comma-separated; default 512)",
    ),
    batches: Optional[list[str]] = typer.Option(
        None, "--batch", "-b", metavar="N", help="without SUITE: batch sizes, e.g. 1,4 (default 1)"
    ),
    precisions: Optional[list[str]] = typer.Option(
        None, "--precision", metavar="NAME", help="without SUITE: precisions, e.g. fp32,fp16,int8 (default fp32)"
    ),
    backends: Optional[list[str]] = typer.Option(
        None, "--backend", metavar="NAME", help="without SUITE: backends, e.g. eager,compile (default eager)"
    ),
    weights: Optional[Path] = typer.Option(
        None,
        "--weights",
        help=(
            "without SUITE: weights for the one --model: a local file or folder, a Hub id, an ultralytics asset or a "
            "torchvision weights name (random weights without it)"
        ),
    ),
    dataset: Optional[Path] = typer.Option(
        None,
        "--dataset",
        help=(
            "a labelled dataset folder (plain, Cityscapes or ADE20K layout): every ok cell gets mIoU, pixel accuracy "
            "and per-class IoU"
        ),
    ),
    camera_size: Optional[str] = typer.Option(
        None,
        "--camera-size",
        metavar="HxW",
        help="end to end starts from frames at a camera's size, resized to the cell's in the clock, e.g. 1080x1920",
    ),
    decode: Optional[str] = typer.Option(
        None,
        "--decode",
        metavar="jpeg|png",
        help="end to end starts from encoded frames, decoded (cv2.imdecode) inside the clock",
    ),
    hardware: Optional[list[str]] = typer.Option(
        None,
        "--hardware",
        metavar="CARD",
        help="without SUITE: card profile whose memory budget to emulate, e.g. rtx3060",
    ),
    plugins: Optional[list[str]] = typer.Option(
        None, "--plugin", metavar="FILE", help="a .py file or module that registers your own models (repeatable)"
    ),
    overrides: Optional[list[str]] = typer.Option(
        None,
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="override a suite field, e.g. -s timing.min_time_s=5 -s batch_sizes=[1,8] (repeatable)",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help=(
            "print the matrix, the cells the device cannot run and a wall-time estimate, then exit (the suite's "
            "plugins are imported, i.e. their code runs: read them first)"
        ),
    ),
    device: Optional[str] = typer.Option(
        None, "--device", help="override the suite's device (cpu, cuda, cuda:N, auto)"
    ),
    out: Path = typer.Option(Path("results"), "--out", help="parent folder of the run folder"),
    resume: Optional[Path] = typer.Option(
        None,
        "--resume",
        help=(
            "continue this run folder, skipping finished cells (SUITE defaults to the suite.yaml it keeps; its plugins "
            "are imported, i.e. their code runs)"
        ),
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="with --resume, rerun cells that did not end ok"),
    search: bool = typer.Option(
        False,
        "--search",
        help="needs targets: run the cells in the order that decides the Answer soonest and prune (record, with the "
        "rule and evidence) those that cannot change it; the same as `search: true` in the suite",
    ),
    retry_pruned: bool = typer.Option(
        False, "--retry-pruned", help="with --resume: measure exactly the cells a search pruned, in full"
    ),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray; overrides the suite's"),
    address: Optional[str] = typer.Option(
        None, "--address", help="with --executor ray: the cluster to join (default: start a local one)"
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="show libraries' warnings on the terminal, every dry-run row and failed cells' full errors",
    ),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help=CACHE_DIR_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help=NO_CACHE_HELP),
    strict: bool = typer.Option(
        False, "--strict", help="also exit 1 when a cell misses a suite target or an expectation is refuted"
    ),
    target_fps: Optional[float] = TARGET_FPS,
    max_latency_ms: Optional[float] = MAX_LATENCY_MS,
    latency_percentile: Optional[str] = LATENCY_PERCENTILE,
    max_p99_ms: Optional[float] = MAX_P99_MS,
    memory_budget: Optional[str] = MEMORY_BUDGET,
    min_agreement: Optional[float] = MIN_AGREEMENT,
    min_miou: Optional[float] = MIN_MIOU,
    profile: bool = typer.Option(
        False,
        "--profile",
        help="a per-operator profile of every cell (the runtime's own profiler, after the timed passes): the same as "
        "-s profile=true",
    ),
    scenario: Optional[str] = typer.Option(
        None, "--scenario", metavar="NAME", help="offline (default), stream or capacity (how many cameras it serves)"
    ),
    camera_fps: Optional[float] = bounded(
        None, "--camera-fps", low=0.001, high=1000, help="with --scenario capacity: each camera's frame rate"
    ),
    all_paths: bool = typer.Option(
        False,
        "--all-paths",
        help="with --model: every precision and backend this device can run for it (emulated formats left out), "
        "instead of --precision / --backend",
    ),
) -> None:
    """Run a suite's matrix, each cell isolated; write results/<suite>-<UTC time>/.

    Exits 1 when any cell ended in error or timeout (oom and unsupported are results); with --strict
    also when a target is missed or an expectation refuted. The last line says why.

    Without a SUITE file the matrix comes from flags, and the run folder keeps the equivalent suite.yaml:
    segbench run --model segformer-b0 --resolution 512 --batch 1,4 --precision fp32,fp16 --device cuda
    """
    from segbench.run.dryrun import plan_cells  # lazy: imports numpy
    from segbench.suite.matrix import expand  # lazy: imports numpy

    if device is not None and not is_device_name(device):
        raise SegbenchError(f"--device: invalid device {device!r}; use auto, cpu, cuda or cuda:N")
    _configure_cache(cache_dir, no_cache)
    axis_flags = axis_flags_given(
        resolution=resolutions,
        batch=batches,
        precision=precisions,
        backend=backends,
        weights=weights,
        hardware=hardware,
    )
    if models and suite_path is not None:
        raise SegbenchError(
            "run: give a SUITE file or --model, not both (change a suite's fields with -s, e.g. -s "
            f"models=[{models[0]}])"
        )
    if axis_flags and not models:
        raise SegbenchError(
            f"{', '.join(axis_flags)}: these build a suite from flags and need --model (with a SUITE file, use -s, "
            "e.g. -s batch_sizes=[1,8])"
        )
    plugin_specs = [absolute_plugin(spec) for spec in plugins or []]
    overrides = [*(overrides or []), *end_to_end_overrides(camera_size, decode), *(["profile=true"] if profile else [])]
    if dataset is not None:  # the same as -s dataset=…, made absolute because the run folder keeps a suite copy
        overrides = [*(overrides or []), f"dataset={json.dumps(str(dataset.expanduser().resolve()))}"]
    # The report's target flags, as -s targets.KEY=VALUE: checked like the file's, kept in the run's suite.yaml.
    targets = target_fields(
        target_fps, max_latency_ms, latency_percentile, max_p99_ms, memory_budget, min_agreement, min_miou
    )
    if scenario == "capacity":  # the latency flags are the capacity criterion's bound (scenario_overrides)
        targets.update(max_latency_ms=None, latency_percentile=None)
    overrides = [
        *(overrides or []),
        *target_overrides(targets),
        *scenario_overrides(scenario, camera_fps, max_p99_ms, max_latency_ms, latency_percentile),
        *(["search=true"] if search else []),
    ]
    from_flags = (
        suite_from_flags(
            models,
            resolutions or [],
            batches or [],
            precisions or [],
            backends or [],
            device,
            weights,
            hardware or [],
            plugin_specs,
        )
        if models
        else None
    )
    if all_paths and (from_flags is None or precisions or backends):
        raise SegbenchError("--all-paths: needs --model and replaces --precision / --backend; give one or the other")
    if from_flags is not None:  # a flags-built matrix holds only pairs that can run here (said, and kept as exclude:)
        for line in valid_paths(from_flags, all_paths):
            console.print(f"left out: {escape(line)}", highlight=False, soft_wrap=True)
    with library_output(verbose) as chatter:
        suite, source_path, suite_text = _suite_for_run(
            suite_path,
            resume,
            from_flags,
            plugin_specs if from_flags is None else [],
            overrides or [],
            on_schema_valid=None if dry_run else _prestart_local_template(executor),
        )
        plan = plan_cells(suite, expand(suite), device) if dry_run else None
    if address is not None and (executor or suite.executor) != "ray":
        raise SegbenchError(
            f"--address: joins a Ray cluster, but this run uses the {executor or suite.executor} executor; add "
            "--executor ray or drop --address"
        )
    if plan is not None:
        _print_dry_run(suite, plan, out, verbose)
        return
    if retry_failed and resume is None:
        raise SegbenchError("--retry-failed needs --resume RUN_DIR (the run whose failed cells to rerun)")
    if retry_pruned and resume is None:
        raise SegbenchError("--retry-pruned needs --resume RUN_DIR (the search run whose pruned cells to measure)")
    # Imported only now: they import torch (seconds), which a bad suite, a flag error or a dry run never needs.
    from segbench.run.executors import get_executor  # lazy: imports numpy
    from segbench.run.runner import LOG_DIR, run_suite  # lazy: imports torch (and pandas, numpy)

    exit_after_a_stop()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    try:
        with (
            library_output(verbose) as more_chatter,
            Progress(*columns, console=console, refresh_per_second=2) as progress,
        ):
            chosen = get_executor(executor or suite.executor, address, suite.ray.cpus_per_cell)
            result = run_suite(
                suite,
                source_path,
                out,
                device,
                resume,
                retry_failed,
                ProgressObserver(progress, verbose),
                chosen,
                executor or suite.executor,
                suite_text,
                retry_pruned=retry_pruned,
            )
    except RunInterrupted as exc:
        errors.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        kept_suite = (
            suite_path if suite_text is None else None
        )  # flags or -s overrides: the run folder keeps the suite that ran
        again = resume_command(kept_suite, exc.run_dir, device, executor, address, retry_failed, retry_pruned)
        errors.print(
            f"resume with: {again}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(exc.exit_code) from None

    # The templates write into a file of their own: they outlive the blocks that capture this process's chatter.
    _write_run_log(result.run_dir / LOG_DIR, [chatter, more_chatter, Captured(forkserver.template_output())])
    from segbench.results.store import read_meta, read_records  # lazy: imports pandas
    from segbench.run.gate import run_gate  # lazy: imports numpy

    records, meta = read_records(result.run_dir), read_meta(result.run_dir)  # resumed cells included
    shown = records if suite.search else result.records  # a search's screenings: only each cell's latest line
    console.print(summary_table(shown, title=f"{suite.name}: {result.run_dir}"))
    measured_on = measured_on_line(records, meta, suite.hardware)
    if measured_on:  # the device whose speed the table shows, and what of the target card was only emulated
        console.print(measured_on, markup=False, highlight=False, soft_wrap=True)
    if suite.expectations:
        console.print(expectations_table(evaluate_run(result.run_dir)))
    gate = run_gate(suite, records, strict, meta)
    console.print(gate.line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"next: {shlex.join(['segbench', 'report', str(result.run_dir)])}", markup=False, highlight=False)
    if gate.exit_code:
        raise typer.Exit(gate.exit_code)
