"""The command line: thin typer commands over the library API, rich for progress and tables."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from segbench.errors import SegbenchError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, help="Benchmark semantic-segmentation models: latency, FPS and peak memory you can trust.")
console = Console()
if not console.is_terminal:  # logs and CI: rich would wrap tables at 80 columns
    console = Console(width=160)
errors = Console(stderr=True, width=1000)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(command: F) -> F:
    """A user's mistake prints one line and exits 2; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SegbenchError as exc:
            for line in str(exc).splitlines():
                errors.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


# ---- run ------------------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


class ProgressObserver:
    """Rich progress: cell count, the current cell, elapsed time and an ETA."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task: Any = None

    def run_started(self, run_dir: Path, cells: list[Any], skipped: int) -> None:
        note = f" ({skipped} already finished, skipped)" if skipped else ""
        console.print(f"run folder: [bold]{escape(str(run_dir))}[/] · {len(cells)} cell(s) to run{note}", highlight=False)
        self.task = self.progress.add_task("starting", total=len(cells))

    def cell_started(self, cell: Any, index: int) -> None:
        self.progress.update(self.task, description=escape(cell.label))

    def cell_finished(self, cell: Any, record: dict[str, Any]) -> None:
        from segbench.report.summary import status_text

        self.progress.console.print(f"  {escape(cell.label)}: {status_text(record)}", highlight=False)
        self.progress.advance(self.task)


def _dry_run_table(cells: list[Any]) -> Table:
    table = Table(title=f"{len(cells)} cell(s)")
    for column in ("#", "cell_id", "model", "resolution", "batch", "precision", "backend"):
        table.add_column(column)
    for index, cell in enumerate(cells, start=1):
        table.add_row(*(escape(str(text)) for text in (index, cell.cell_id, cell.model, f"{cell.resolution[0]}x{cell.resolution[1]}", cell.batch_size, cell.precision, cell.backend)))
    return table


@app.command()
@user_errors
def run(
    suite_path: Path = typer.Argument(..., metavar="SUITE", help="suite YAML file"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the matrix and exit"),
    device: Optional[str] = typer.Option(None, "--device", help="override the suite's device (cpu, cuda, cuda:N, auto)"),
    out: Path = typer.Option(Path("results"), "--out", help="parent folder of the run folder"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue this run folder, skipping finished cells"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="with --resume, rerun cells that did not end ok"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray; overrides the suite's"),
    address: Optional[str] = typer.Option(None, "--address", help="with --executor ray: the cluster to join (default: start a local one)"),
) -> None:
    """Run a suite's matrix, each cell isolated; write results/<suite>-<UTC time>/."""
    from segbench.executors import get_executor
    from segbench.matrix import expand
    from segbench.report.summary import summary_table
    from segbench.runner import run_suite
    from segbench.suite import load_suite

    suite = load_suite(suite_path)
    if device is not None and device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise SegbenchError(f"--device: invalid device {device!r}; use auto, cpu, cuda or cuda:N")
    cells = expand(suite)
    if dry_run:
        console.print(_dry_run_table(cells))
        return
    if retry_failed and resume is None:
        raise SegbenchError("--retry-failed needs --resume RUN_DIR (the run whose failed cells to rerun)")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, refresh_per_second=2) as progress:
        chosen = get_executor(executor or suite.executor, address, suite.ray.cpus_per_cell)
        result = run_suite(suite, suite_path, out, device, resume, retry_failed, ProgressObserver(progress), chosen, executor or suite.executor)
    console.print(summary_table(result.records, title=f"{suite.name}: {result.run_dir}"))
    if suite.expectations:
        from segbench.expectations import evaluate_run
        from segbench.report.summary import expectations_table

        console.print(expectations_table(evaluate_run(result.run_dir)))


# ---- env, models, selfcheck ----------------------------------------------------------------------------

@app.command()
@user_errors
def env(as_json: bool = typer.Option(False, "--json", help="print the raw JSON")) -> None:
    """Print the hardware and software fingerprint stored with every run."""
    from segbench.env import fingerprint

    data = fingerprint()
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return
    table = Table(show_header=False)
    cpu = data["cpu"]
    rows = [
        ("machine", data["machine"]),
        ("cpu", f"{cpu['model']} · {cpu['physical_cores']} cores / {cpu['logical_cores']} threads · {' '.join(cpu['flags'])}"),
        ("ram", f"{data['ram_gb']} GiB"),
        ("gpus", "; ".join(f"{g['name']} {g['memory_mb'] / 1024:.1f} GiB cc {g['compute_capability']} driver {g['driver']}" for g in data["gpus"]) or "none"),
        ("nvml", data["nvml"]),
        ("cuda", f"available={data['cuda']['available']} torch build {data['cuda']['torch_cuda_build']} cudnn {data['cuda']['cudnn']}"),
        ("torch threads", str(data["torch_threads"])),
        ("packages", ", ".join(f"{k} {v}" for k, v in data["packages"].items() if v)),
        ("segbench", f"{data['segbench']['version']} ({data['segbench']['commit']})"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)


@app.command()
@user_errors
def models(pattern: str = typer.Argument("*", help="wildcard, e.g. 'segformer-*'")) -> None:
    """List the registered models."""
    from segbench.models.registry import get_card, list_models

    table = Table()
    for column in ("name", "family", "source", "classes", "published params (M)", "description"):
        table.add_column(column)
    for name in list_models(pattern):
        card = get_card(name)
        table.add_row(*(escape(str(text)) for text in (name, card.family, card.source, card.num_classes, _fmt(card.published_params_m), card.description)))
    console.print(table)


@app.command()
@user_errors
def fit(
    model: str = typer.Argument(..., help="registered model name"),
    hardware: str = typer.Option(..., "--hardware", help="target card profile, e.g. rtx3060 (see segbench/hardware/profiles)"),
    precision: str = typer.Option("fp32", "--precision"),
    backend: str = typer.Option("eager", "--backend"),
    resolution: list[int] = typer.Option([512, 1024], "--resolution", help="square sides to find the largest batch for (repeatable)"),
    max_batch: int = typer.Option(256, "--max-batch"),
    max_side: int = typer.Option(4096, "--max-side"),
    device: str = typer.Option("auto", "--device"),
    timeout: float = typer.Option(300.0, "--timeout", help="seconds per probe cell"),
) -> None:
    """Largest batch per resolution, and largest square side at batch 1, that fit a card's memory budget (isolated probes)."""
    from segbench.cell import CellRequest
    from segbench.env import resolve_device
    from segbench.fit import budget_lines, fit_search, isolated_runner, probe_timing
    from segbench.hardware import load_profile
    from segbench.matrix import CellSpec
    from segbench.models.registry import get_card

    get_card(model)
    profile = load_profile(hardware)
    chosen = resolve_device(device)
    timing = probe_timing(timeout)

    def request_for(batch: int, height: int, width: int) -> CellRequest:
        return CellRequest(CellSpec(model, (height, width), batch, precision, backend), chosen, timing, 10.0, None, hardware=hardware, probe=True)

    console.print(f"fit search: {model} {precision} {backend} on {chosen}, budget of {profile.name} ({profile.memory_gb} GB)")
    for line in budget_lines(profile, backend, chosen):
        console.print(f"[yellow]{line}[/]" if not line.startswith("budget:") else line, markup=True, highlight=False)
    table_data = fit_search(isolated_runner(request_for, timeout), [(side, side) for side in resolution], max_batch=max_batch, max_side=max_side)
    table = Table(title=f"{model} on {profile.name} ({table_data.probe_count} isolated probes)")
    for column in ("resolution", "largest batch", "limited by"):
        table.add_column(column)
    for row in table_data.batches:
        table.add_row(f"{row.height}x{row.width}", str(row.largest_batch), str(row.limited_by))
    console.print(table)
    if table_data.square is not None:
        console.print(f"largest square side at batch 1: [bold]{table_data.square.largest_side}[/] px (limited by {table_data.square.limited_by})")


@app.command()
@user_errors
def predict(
    model: str = typer.Argument(..., help="registered model name"),
    images: list[Path] = typer.Argument(..., help="one or more image files"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="local weights (random weights without it)"),
    out: Path = typer.Option(Path("predictions"), "--out", help="output folder"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Segment real images: class-id map PNG, coloured overlay PNG and a JSON (areas, contours, RLE) per image."""
    from segbench.env import resolve_device
    from segbench.predict import RANDOM_WEIGHTS_WARNING, predict as run_predict

    if weights is not None and not weights.exists():
        raise SegbenchError(f"--weights: not found: {weights}")
    for prediction in run_predict(model, images, out, weights, resolve_device(device)):
        console.print(escape(f"{prediction.image} → {prediction.class_map}, {prediction.overlay}, {prediction.summary}"), highlight=False)
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
    from segbench.env import resolve_device
    from segbench.selfcheck import run_selfcheck

    report = run_selfcheck(model, resolution, repeats, min_time_s, resolve_device(device))
    table = Table(title=f"selfcheck: {model} {resolution}x{resolution} on {report.device}")
    for column in ("repeat", "harness median ms", "bare median ms", "ratio"):
        table.add_column(column)
    for index, (harness, bare) in enumerate(zip(report.harness_medians, report.bare_medians), start=1):
        table.add_row(str(index), f"{harness:.3f}", f"{bare:.3f}", f"{harness / bare:.4f}")
    console.print(table)
    console.print(
        f"ratio of medians (harness / bare): [bold]{report.ratio:.4f}[/] (target ≤ {report.ratio_target}) · "
        f"CV of the harness median over {repeats} repeats: [bold]{report.cv_of_median * 100:.2f} %[/] (target ≤ {report.cv_target * 100:.0f} %)"
    )
    if not report.passed:
        raise typer.Exit(1)


# ---- report, compare -------------------------------------------------------------------------------

@app.command()
@user_errors
def report(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="a run folder made by `segbench run`"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="file to write (default: reports/<run folder name>.<format>)"),
    fmt: str = typer.Option("html", "--format", help="html (self-contained page), md (Markdown for a pull request) or csv"),
) -> None:
    """Write a run's report: leaderboard, plots, quantization, failed cells and a best-choice summary."""
    from segbench.report.exports import write_report

    path = write_report(run_dir, output, fmt)
    console.print(f"report written: [bold]{escape(str(path))}[/]", highlight=False)


@app.command()
@user_errors
def compare(
    run_a: Path = typer.Argument(..., metavar="RUN_A", help="baseline run folder"),
    run_b: Path = typer.Argument(..., metavar="RUN_B", help="run folder compared against the baseline"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="also write the comparison as HTML to this file"),
    threshold: float = typer.Option(5.0, "--threshold", min=0.0, help="smallest change in % that can count as significant"),
    fail_on_regression: Optional[float] = typer.Option(None, "--fail-on-regression", metavar="PCT", min=0.0, help="exit 1 if a cell is significantly slower by PCT % or more, or ran ok in A but not in B"),
) -> None:
    """Compare two runs cell by cell: % change per metric, bootstrap CI, significance; warn when setups differ."""
    from segbench.report.compare import compare_runs, comparison_table
    from segbench.report.html import render_comparison

    comparison = compare_runs(run_a, run_b, threshold=threshold)
    for line in comparison.fingerprint_differences:
        console.print(f"[yellow]warning: fingerprints differ: {escape(line)}[/]", highlight=False)
    console.print(comparison_table(comparison))
    worse, better = comparison.significant_count
    console.print(f"{len(comparison.cells)} matched cell(s): {worse} significantly slower, {better} significantly faster (!: 95 % CI excludes 0 and |change| > {threshold:g} %)")
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
        if slower or broken:
            names = [f"{cell.label} ({cell.metric('median_ms').change_pct:+.1f} %)" for cell in slower] + [f"{cell.label} ({cell.status_a} → {cell.status_b})" for cell in broken]  # type: ignore[union-attr]
            errors.print(f"regression: {'; '.join(names)}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1)


def main() -> None:
    app()
