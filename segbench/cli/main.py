"""The command line: thin typer commands over the library API, rich for progress and tables."""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# Imported for its effect: --help shows boolean flags as flags, not `--dry-run <bool>`.
import segbench.cli.options  # noqa: F401
from segbench.errors import SegbenchError
from segbench.naming import shorten

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Benchmark semantic-segmentation models: latency, FPS and peak memory you can trust.",
)
console = Console()
if not console.is_terminal:  # logs and CI: rich would wrap tables at 80 columns
    console = Console(width=160)
errors = Console(stderr=True, width=1000)
F = TypeVar("F", bound=Callable[..., Any])
MAX_ERROR_LINE = 500  # an error quoting a user's value never floods the terminal (YAML alias bombs)


def user_errors(command: F) -> F:
    """A user's mistake prints one line and exits 2; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SegbenchError as exc:
            for line in str(exc).splitlines():
                errors.print(f"error: {shorten(line, MAX_ERROR_LINE)}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # Ctrl-C outside a run's cells (loading, a report): no traceback
            errors.print("interrupted", markup=False, highlight=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_version(value: bool) -> None:
    if value:
        from segbench import __version__

        console.print(f"segbench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_print_version, is_eager=True, help="print segbench's version and exit"
    ),
) -> None:
    """Benchmark semantic-segmentation models: latency, FPS and peak memory you can trust."""


# ---- run ------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


class ProgressObserver:
    """Rich progress: cell count, the current cell, elapsed time and an ETA."""

    def __init__(self, progress: Progress, verbose: bool = False):
        self.progress = progress
        self.verbose = verbose
        self.task: Any = None

    def run_started(self, run_dir: Path, cells: list[Any], skipped: int) -> None:
        note = f" ({skipped} already finished, skipped)" if skipped else ""
        console.print(
            f"run folder: [bold]{escape(str(run_dir))}[/] · {len(cells)} cell(s) to run{note}",
            highlight=False,
            soft_wrap=True,  # a long path never breaks the line: it stays one line to copy and to grep
        )
        self.task = self.progress.add_task("starting", total=len(cells))

    def cell_started(self, cell: Any, index: int) -> None:
        self.progress.update(self.task, description=escape(cell.label))

    def cell_finished(self, cell: Any, record: dict[str, Any]) -> None:
        from segbench.report.summary import status_text

        self.progress.console.print(f"  {escape(cell.label)}: {status_text(record)}", highlight=False)
        if self.verbose and record.get("traceback"):
            self.progress.console.print(record["traceback"], markup=False, highlight=False)
        self.progress.advance(self.task)


def resume_command(
    suite_path: Path | None,
    run_dir: Path,
    device: str | None,
    executor: str | None,
    address: str | None,
    retry_failed: bool,
) -> str:
    """The exact command that continues an interrupted run with the same choices (the run folder keeps its suite)."""
    words = ["segbench", "run", *([str(suite_path)] if suite_path else []), "--resume", str(run_dir)]
    for flag, value in (("--device", device), ("--executor", executor), ("--address", address)):
        if value is not None:
            words += [flag, value]
    return shlex.join(words + (["--retry-failed"] if retry_failed else []))


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
            else (f"[yellow]unsupported: {escape(planned.unsupported)}[/]" if planned.unsupported else "yes")
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
    from segbench.run.dryrun import estimate_wall_time, format_duration

    if plan.device_warning:
        errors.print(f"[yellow]warning: {escape(plan.device_warning)}[/]", highlight=False, soft_wrap=True)
    console.print(_dry_run_table(plan, verbose))
    estimate = estimate_wall_time(suite, plan, out)
    console.print(
        f"estimated wall time: [bold]{format_duration(estimate.low_s)} – {format_duration(estimate.high_s)}[/]",
        highlight=False,
    )
    console.print("the estimate rests on: " + "; ".join(escape(part) for part in estimate.basis), highlight=False)


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
    from segbench.results.store import SUITE_FILE
    from segbench.suite.schema import apply_overrides, dump_suite, parse_suite, read_suite_data

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
            from segbench.run import forkserver

            forkserver.prestart()

    return prestart


CACHE_DIR_HELP = (
    "where ONNX exports, quantized graphs and inductor's compiled code are kept across runs (default: "
    "$SEGBENCH_CACHE_DIR, else the user cache dir)"
)
NO_CACHE_HELP = "prepare everything afresh: no cache is read or written, inductor's included"


def _configure_cache(cache_dir: Path | None, no_cache: bool) -> None:
    from segbench.system import cache

    if cache_dir is not None and no_cache:
        raise SegbenchError("--cache-dir and --no-cache: give one or the other (--no-cache uses no cache directory)")
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise SegbenchError(f"--cache-dir: {cache_dir} is a file; give a directory (it is created if missing)")
    cache.configure(cache_dir, disabled=no_cache)


@app.command()
@app.command()
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
        metavar="NAME",
        help="without SUITE: a registered model to run (repeatable or comma-separated)",
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
        False, "--dry-run", help="print the matrix, the cells the device cannot run and a wall-time estimate, then exit"
    ),
    device: Optional[str] = typer.Option(
        None, "--device", help="override the suite's device (cpu, cuda, cuda:N, auto)"
    ),
    out: Path = typer.Option(Path("results"), "--out", help="parent folder of the run folder"),
    resume: Optional[Path] = typer.Option(
        None,
        "--resume",
        help="continue this run folder, skipping finished cells (SUITE defaults to the suite.yaml it keeps)",
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="with --resume, rerun cells that did not end ok"),
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
) -> None:
    """Run a suite's matrix, each cell isolated; write results/<suite>-<UTC time>/.

    Exits 1 when any cell ended in error or timeout (oom and unsupported are results); with --strict
    also when a target is missed or an expectation refuted. The last line says why.

    Without a SUITE file the matrix comes from flags, and the run folder keeps the equivalent suite.yaml:
    segbench run --model segformer-b0 --resolution 512 --batch 1,4 --precision fp32,fp16 --device cuda
    """
    from segbench.cli.options import absolute_plugin, axis_flags_given, suite_from_flags
    from segbench.run.dryrun import plan_cells
    from segbench.suite.matrix import expand
    from segbench.cli.quiet import Captured, library_output

    if device is not None and device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
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
    if dataset is not None:  # the same as -s dataset=…, made absolute because the run folder keeps a suite copy
        overrides = [*(overrides or []), f"dataset={json.dumps(str(dataset.expanduser().resolve()))}"]
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
    if plan is not None:
        _print_dry_run(suite, plan, out, verbose)
        return
    if retry_failed and resume is None:
        raise SegbenchError("--retry-failed needs --resume RUN_DIR (the run whose failed cells to rerun)")
    # Imported only now: they import torch (seconds), which a bad suite, a flag error or a dry run never needs.
    from segbench.run.executors import get_executor
    from segbench.run.interruption import RunInterrupted, exit_after_a_stop
    from segbench.report.summary import summary_table
    from segbench.run.runner import LOG_DIR, run_suite

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
            )
    except RunInterrupted as exc:
        errors.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        kept_suite = (
            suite_path if suite_text is None else None
        )  # flags or -s overrides: the run folder keeps the suite that ran
        errors.print(
            f"resume with: {resume_command(kept_suite, exc.run_dir, device, executor, address, retry_failed)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(exc.exit_code) from None
    from segbench.run.forkserver import template_output

    # The templates write into a file of their own: they outlive the blocks that capture this process's chatter.
    for captured in (chatter, more_chatter, Captured(template_output())):
        captured.write_to(result.run_dir / LOG_DIR / "segbench.log")
    console.print(summary_table(result.records, title=f"{suite.name}: {result.run_dir}"))
    if suite.expectations:
        from segbench.suite.expectations import evaluate_run
        from segbench.report.summary import expectations_table

        console.print(expectations_table(evaluate_run(result.run_dir)))
    from segbench.run.gate import run_gate
    from segbench.results.store import read_records

    gate = run_gate(suite, read_records(result.run_dir), strict)  # every cell of the run, resumed ones included
    console.print(gate.line, markup=False, highlight=False, soft_wrap=True)
    if gate.exit_code:
        raise typer.Exit(gate.exit_code)


# ---- env, models, selfcheck ----------------------------------------------------------------------------


@app.command()
@user_errors
def env(as_json: bool = typer.Option(False, "--json", help="print the raw JSON")) -> None:
    """Print the hardware and software fingerprint stored with every run."""
    from segbench.system.env import fingerprint

    data = fingerprint()
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return
    table = Table(show_header=False)
    cpu = data["cpu"]
    rows = [
        ("machine", data["machine"]),
        (
            "cpu",
            f"{cpu['model']} · {cpu['physical_cores']} cores / {cpu['logical_cores']} threads · "
            f"{' '.join(cpu['flags'])}",
        ),
        ("ram", f"{data['ram_gb']} GiB"),
        (
            "gpus",
            "; ".join(
                f"{g['name']} {g['memory_mb'] / 1024:.1f} GiB cc {g['compute_capability']} driver {g['driver']}"
                for g in data["gpus"]
            )
            or "none",
        ),
        ("nvml", data["nvml"]),
        (
            "cuda",
            f"available={data['cuda']['available']} torch build {data['cuda']['torch_cuda_build']} cudnn "
            f"{data['cuda']['cudnn']}",
        ),
        ("torch threads", str(data["torch_threads"])),
        ("packages", ", ".join(f"{k} {v}" for k, v in data["packages"].items() if v)),
        ("segbench", f"{data['segbench']['version']} ({data['segbench']['commit']})"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)


PLUGIN_HELP = "a .py file or module that registers your own models (repeatable); see README, 'Benchmark your own model'"


@app.command()
@user_errors
def models(
    pattern: str = typer.Argument("*", help="wildcard, e.g. 'segformer-*'"),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", metavar="FILE", help=PLUGIN_HELP),
) -> None:
    """List the registered models (exit 1 when none matches the pattern)."""
    from segbench.cli.options import load_plugins
    from segbench.models.registry import get_card, list_models
    from segbench.cli.quiet import library_output

    with library_output():
        load_plugins(plugins)
        names = list_models(pattern)
    if not names:
        errors.print(
            f"no registered model matches {pattern!r}; `segbench models` lists all {len(list_models())}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    table = Table()
    for column in ("name", "family", "source", "classes", "published params (M)", "description"):
        table.add_column(column)
    for name in names:
        card = get_card(name)
        table.add_row(
            *(
                escape(str(text))
                for text in (
                    name,
                    card.family,
                    card.source,
                    card.num_classes,
                    _fmt(card.published_params_m),
                    card.description,
                )
            )
        )
    console.print(table)


@app.command()
@user_errors
def fit(
    model: str = typer.Argument(..., help="registered model name"),
    hardware: str = typer.Option(
        ..., "--hardware", help="target card profile, e.g. rtx3060 (see segbench/hardware/profiles)"
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="precision of every probe, e.g. fp16 or int8 (as a suite's precisions)"
    ),
    backend: str = typer.Option(
        "eager", "--backend", help="backend of every probe, e.g. eager or compile (as a suite's backends)"
    ),
    resolution: list[int] = typer.Option(
        [512, 1024], "--resolution", help="square sides to find the largest batch for (repeatable)"
    ),
    max_batch: int = typer.Option(256, "--max-batch", help="largest batch the search tries"),
    max_side: int = typer.Option(4096, "--max-side", help="largest square side (px) the batch-1 search tries"),
    device: str = typer.Option("auto", "--device", help="where probes run: auto, cpu, cuda or cuda:N"),
    timeout: float = typer.Option(300.0, "--timeout", help="seconds per probe cell"),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", metavar="FILE", help=PLUGIN_HELP),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="show libraries' warnings from the probes on the terminal"
    ),
) -> None:
    """Largest batch per resolution, and largest square side at batch 1, that fit a card's memory budget (isolated
    probes)."""
    from segbench.cell.request import CellRequest
    from segbench.cli.options import load_plugins
    from segbench.system.env import resolve_device
    from segbench.tools.fit import budget_lines, check_fit_options, fit_search, isolated_runner, probe_timing
    from segbench.hardware import load_profile
    from segbench.suite.matrix import CellSpec
    from segbench.models.registry import get_card
    from segbench.cli.quiet import library_output

    with library_output():
        plugin_specs = load_plugins(plugins)
        check_fit_options(
            precision=precision,
            backend=backend,
            resolution=resolution,
            max_batch=max_batch,
            max_side=max_side,
            device=device,
            timeout=timeout,
        )
        get_card(model)
    profile = load_profile(hardware)
    chosen = resolve_device(device)
    timing = probe_timing(timeout)

    def request_for(batch: int, height: int, width: int) -> CellRequest:
        return CellRequest(
            CellSpec(model, (height, width), batch, precision, backend),
            chosen,
            timing,
            10.0,
            None,
            tuple(plugin_specs),
            hardware=hardware,
            probe=True,
        )

    console.print(
        f"fit search: {model} {precision} {backend} on {chosen}, budget of {profile.name} ({profile.memory_gb} GB)"
    )
    for line in budget_lines(profile, backend, chosen):
        console.print(f"[yellow]{line}[/]" if not line.startswith("budget:") else line, markup=True, highlight=False)
    with library_output(verbose):  # probes inherit the captured stderr: their libraries' warnings stay off the terminal
        table_data = fit_search(
            isolated_runner(request_for, timeout),
            [(side, side) for side in resolution],
            max_batch=max_batch,
            max_side=max_side,
        )
    table = Table(title=f"{model} on {profile.name} ({table_data.probe_count} isolated probes)")
    for column in ("resolution", "largest batch", "limited by"):
        table.add_column(column)
    for row in table_data.batches:
        table.add_row(f"{row.height}x{row.width}", str(row.largest_batch), str(row.limited_by))
    console.print(table)
    if table_data.square is not None:
        console.print(
            f"largest square side at batch 1: [bold]{table_data.square.largest_side}[/] px (limited by "
            f"{table_data.square.limited_by})"
        )
    if not table_data.fits_anywhere:
        failure = next((row.limit_error for row in table_data.batches if row.limit_error), None)
        errors.print(
            f"nothing fits: even batch 1 failed ({failure or 'see the table'})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command()
@user_errors
def predict(
    model: str = typer.Argument(..., help="registered model name"),
    images: Optional[list[Path]] = typer.Argument(None, help="one or more image files (or --dataset)"),
    weights: Optional[Path] = typer.Option(
        None,
        "--weights",
        help="local weights, or a Hub id / ultralytics asset / torchvision weights name (random weights without it)",
    ),
    dataset: Optional[Path] = typer.Option(
        None,
        "--dataset",
        help=(
            "a labelled dataset folder: segment its validation images and score them (mIoU, pixel accuracy, per-class "
            "IoU in <out>/accuracy.json)"
        ),
    ),
    out: Path = typer.Option(Path("predictions"), "--out", help="output folder"),
    device: str = typer.Option("auto", "--device", help="where the model runs: auto, cpu, cuda or cuda:N"),
    plugins: Optional[list[str]] = typer.Option(None, "--plugin", metavar="FILE", help=PLUGIN_HELP),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="show libraries' warnings on the terminal instead of <out>/predict.log"
    ),
    max_pixels: int = typer.Option(
        4096 * 4096,
        "--max-pixels",
        min=1,
        help="refuse images with more pixels than this (memory grows with image size)",
    ),
) -> None:
    """Segment real images: class-id map PNG, coloured overlay PNG and a JSON (areas, contours, RLE) per image, with
    per-stage timing."""
    from segbench.cli.options import load_plugins
    from segbench.system.env import resolve_device
    from segbench.tools.predict import RANDOM_WEIGHTS_WARNING, predict as run_predict
    from segbench.cli.quiet import library_output

    if weights is not None and not weights.exists():
        from segbench.models.registry import get_card
        from segbench.models.weights import named_kind

        if named_kind(str(weights), get_card(model).source) is None:
            raise SegbenchError(
                f"--weights: not found: {weights} (a local file or folder, or a Hub id / ultralytics asset / "
                "torchvision weights name)"
            )
    labelled = None
    if dataset is not None:
        from segbench.data.datasets import Dataset, DatasetConfig

        labelled = Dataset(DatasetConfig(path=dataset))
        images = [*(images or []), *labelled.images(labelled.config.split)]
    if not images:
        raise SegbenchError("predict: give one or more image files, or --dataset FOLDER")
    with library_output(verbose) as chatter:
        load_plugins(plugins)
        predictions = run_predict(model, images, out, weights, resolve_device(device), max_pixels=max_pixels)
    for prediction in predictions:
        console.print(
            f"{escape(str(prediction.image))} → {escape(str(prediction.class_map))}, "
            f"{escape(str(prediction.overlay))}, {escape(str(prediction.summary))}",
            highlight=False,
        )
        console.print(f"  {prediction.timing_text()}", highlight=False)
        console.print(f"  largest classes: {escape(prediction.classes_text())}", highlight=False)
    if labelled is not None:
        from segbench.tools.predict import dataset_accuracy

        scored = dataset_accuracy(
            labelled, [p for p in predictions if p.image in set(labelled.images(labelled.config.split))], out
        )
        console.print(
            f"against {escape(str(dataset))}: mIoU {scored['miou'] or 0:.4f}, pixel accuracy "
            f"{scored['pixel_accuracy'] or 0:.4f} "
            f"over {scored['images']} images ({escape(str(out / 'accuracy.json'))})",
            highlight=False,
        )
    if chatter.lines:
        (out / "predict.log").write_text(chatter.text, encoding="utf-8")
        console.print(
            f"{len(chatter.lines)} line(s) of library warnings in {escape(str(out / 'predict.log'))} (--verbose shows "
            "them here)",
            highlight=False,
        )
    if weights is None:
        console.print(f"[yellow]{RANDOM_WEIGHTS_WARNING}[/]")


@app.command()
@user_errors
def selfcheck(
    model: str = typer.Option("fast-scnn", help="registered model to time"),
    resolution: int = typer.Option(256, help="square input side"),
    repeats: int = typer.Option(5, help="repeats of each timing (for the CV of the median)"),
    min_time_s: float = typer.Option(2.0, help="seconds per timing"),
    device: str = typer.Option("auto", help="cpu, cuda or auto"),
) -> None:
    """Time one model with the harness and with a bare inference_mode loop, in one process; print the overhead ratio."""
    from segbench.system.env import resolve_device
    from segbench.tools.selfcheck import run_selfcheck

    report = run_selfcheck(model, resolution, repeats, min_time_s, resolve_device(device))
    table = Table(title=f"selfcheck: {model} {resolution}x{resolution} on {report.device}")
    for column in ("repeat", "harness median ms", "bare median ms", "ratio"):
        table.add_column(column)
    for index, (harness, bare) in enumerate(zip(report.harness_medians, report.bare_medians), start=1):
        table.add_row(str(index), f"{harness:.3f}", f"{bare:.3f}", f"{harness / bare:.4f}")
    console.print(table)
    console.print(
        f"ratio of medians (harness / bare): [bold]{report.ratio:.4f}[/] (target ≤ {report.ratio_target}) · CV of the "
        f"harness median over {repeats} repeats: [bold]{report.cv_of_median * 100:.2f} %[/], of the bare loop's: "
        f"[bold]{report.bare_cv_of_median * 100:.2f} %[/] (target ≤ {report.cv_target * 100:.0f} %)"
    )
    for failure in report.failures:
        console.print(f"[red]FAIL: {escape(failure)}[/]", highlight=False)
    if not report.passed:
        raise typer.Exit(1)


# ---- report, compare -------------------------------------------------------------------------------


@app.command()
@user_errors
def report(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="a run folder made by `segbench run`"),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="file to write (default: reports/<run folder name>.<format>)"
    ),
    fmt: str = typer.Option(
        "html", "--format", help="html (self-contained page), md (Markdown for a pull request) or csv"
    ),
    target_fps: Optional[float] = typer.Option(
        None, "--target-fps", help="target: achieved FPS at least this (end to end; a stream cell's sustained rate)"
    ),
    max_latency_ms: Optional[float] = typer.Option(
        None, "--max-latency-ms", help="target: latency percentile (see --latency-percentile) at most this"
    ),
    latency_percentile: Optional[str] = typer.Option(
        None, "--latency-percentile", help="p50, p90, p95 or p99 (default p99)"
    ),
    max_p99_ms: Optional[float] = typer.Option(
        None, "--max-p99-ms", help="shorthand for --max-latency-ms X --latency-percentile p99"
    ),
    hardware: Optional[str] = typer.Option(
        None, "--hardware", help="target: fit this card profile's memory (e.g. rtx3060)"
    ),
    memory_budget: Optional[str] = typer.Option(
        None, "--memory-budget", help="target: fit this much memory (e.g. 12GiB, 800MiB) instead of a card"
    ),
    min_agreement: Optional[float] = typer.Option(
        None, "--min-agreement", help="target: pixel agreement with fp32 eager at least this many %"
    ),
) -> None:
    """Write a run's report: the answer (verdicts against targets), leaderboard, plots, quantization, failed cells,
    expectations.

    Targets given here override the suite's `targets:` block field by field.
    """
    from segbench.report.exports import write_report
    from segbench.results.store import partial_run_note, read_meta

    targets = _report_targets(
        run_dir, target_fps, max_latency_ms, latency_percentile, max_p99_ms, hardware, memory_budget, min_agreement
    )
    path = write_report(run_dir, output, fmt, targets)
    note = partial_run_note(run_dir, read_meta(run_dir))
    if note:
        console.print(f"[yellow]note: {escape(note)}[/]", highlight=False)
    console.print(f"report written: [bold]{escape(str(path))}[/]", highlight=False)


def _report_targets(
    run_dir: Path,
    fps: float | None,
    max_latency_ms: float | None,
    percentile: str | None,
    max_p99_ms: float | None,
    hardware: str | None,
    memory_budget: str | None,
    min_agreement: float | None,
) -> Any:
    """The run's suite targets with these options applied; None when neither sets any. Bad values are one line."""
    from pydantic import ValidationError

    from segbench.report.answer import run_targets
    from segbench.results.runs import load_run

    if hardware and memory_budget:
        raise SegbenchError("--hardware and --memory-budget both set a memory target; give one")
    if max_p99_ms is not None and (max_latency_ms is not None or percentile not in (None, "p99")):
        raise SegbenchError("--max-p99-ms is --max-latency-ms X --latency-percentile p99; give one of them")
    options = {
        "fps": fps,
        "max_latency_ms": max_latency_ms if max_p99_ms is None else max_p99_ms,
        "latency_percentile": "p99" if max_p99_ms is not None else percentile,
        "memory": hardware or memory_budget,
        "min_agreement": min_agreement,
    }
    flags = {
        "fps": "--target-fps",
        "max_latency_ms": "--max-latency-ms",
        "latency_percentile": "--latency-percentile",
        "memory": "--hardware" if hardware else "--memory-budget",
        "min_agreement": "--min-agreement",
    }
    try:
        return run_targets(load_run(run_dir), options)
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = flags.get(str(error["loc"][0]), str(error["loc"][0])) if error["loc"] else "targets"
        message = error["msg"].removeprefix("Value error, ")
        got = repr(error.get("input"))
        raise SegbenchError(f"{flag}: {message}" + ("" if got in message else f" (got {got})")) from None


@app.command()
@user_errors
def compare(
    run_a: Path = typer.Argument(..., metavar="RUN_A", help="baseline run folder"),
    run_b: Path = typer.Argument(..., metavar="RUN_B", help="run folder compared against the baseline"),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="also write the comparison as HTML to this file"
    ),
    threshold: float = typer.Option(
        5.0, "--threshold", min=0.0, help="smallest change in % that can count as significant"
    ),
    fail_on_regression: Optional[float] = typer.Option(
        None,
        "--fail-on-regression",
        metavar="PCT",
        min=0.0,
        help="exit 1 if a cell is significantly slower by PCT % or more, or ran ok in A but not in B",
    ),
) -> None:
    """Compare two runs cell by cell: % change per metric, bootstrap CI, significance; warn when setups differ."""
    from segbench.report.compare import compare_runs, comparison_table
    from segbench.report.html import render_comparison

    from segbench.results.store import partial_run_note, read_meta

    comparison = compare_runs(run_a, run_b, threshold=threshold)
    for run_dir in (run_a, run_b):
        note = partial_run_note(run_dir, read_meta(run_dir))
        if note:
            console.print(f"[yellow]note: {escape(note)}[/]", highlight=False)
    for line in comparison.fingerprint_differences:
        console.print(f"[yellow]warning: fingerprints differ: {escape(line)}[/]", highlight=False)
    for line in comparison.machine_warnings:
        console.print(f"[red]warning: {escape(line)}[/]", highlight=False)
    console.print(comparison_table(comparison))
    worse, better = comparison.significant_count
    console.print(
        f"{len(comparison.cells)} matched cell(s): {worse} significantly slower, {better} significantly faster (!: 95 "
        f"% CI excludes 0 and |change| > {threshold:g} %)"
    )
    if comparison.machine_warnings:
        console.print("[red](!) the measured ceilings differ: these changes compare machines, not code[/]")
    for side, labels in (("A", comparison.only_in_a), ("B", comparison.only_in_b)):
        if labels:
            console.print(f"only in {side}: " + "; ".join(escape(label) for label in labels), highlight=False)
    if output is not None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(render_comparison(comparison), encoding="utf-8")
        except OSError as exc:
            raise SegbenchError(f"{output}: cannot write the comparison ({exc.strerror or exc})") from None
        console.print(f"comparison written: [bold]{escape(str(output))}[/]", highlight=False)
    if fail_on_regression is not None:
        slower = comparison.latency_regressions(fail_on_regression)
        broken = comparison.status_regressions
        # Missing or non-finite is a failure of the gate, never a pass: it cannot vouch for what it did not see.
        unjudged, missing = comparison.unjudgeable, comparison.only_in_a
        if slower or broken or unjudged or missing:
            names = [f"{cell.label} ({cell.metric('median_ms').change_pct:+.1f} %)" for cell in slower] + [
                f"{cell.label} ({cell.status_a} → {cell.status_b})" for cell in broken
            ]  # type: ignore[union-attr]
            names += [f"{cell.label} (median latency not a finite number)" for cell in unjudged] + [
                f"{label} (no result in B)" for label in missing
            ]
            errors.print(f"regression: {'; '.join(names)}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1)


def main() -> None:
    app()
