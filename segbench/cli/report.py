"""`segbench report` and `segbench compare`: a run's report in a format, and two runs set side by side."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from segbench.cli.app import console, errors, user_errors
from segbench.errors import SegbenchError


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
    from segbench.report.exports import write_report  # lazy: imports matplotlib (and pandas, numpy)
    from segbench.results.store import partial_run_note, read_meta  # lazy: imports pandas

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

    from segbench.report.answer import run_targets  # lazy: imports pandas
    from segbench.results.runs import load_run  # lazy: imports pandas

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


@user_errors
def compare(
    run_a: Path = typer.Argument(..., metavar="RUN_A", help="baseline run folder"),
    run_b: Path = typer.Argument(..., metavar="RUN_B", help="run folder compared against the baseline"),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="also write the comparison as HTML to this file"
    ),
    threshold: Optional[float] = typer.Option(
        None,
        "--threshold",
        min=0.0,
        help="smallest change in % that can count as significant (default: measured from the runs' A/A spread)",
    ),
    fail_on_regression: Optional[float] = typer.Option(
        None,
        "--fail-on-regression",
        metavar="PCT",
        min=0.0,
        help="exit 1 if a cell is significantly slower by PCT % or more, or ran ok in A but not in B",
    ),
    confirm: bool = typer.Option(
        False,
        "--confirm",
        help="rerun the cells whose median moved beyond the threshold (B's suite, timing.repeats >= 3) and say which "
        "changes held",
    ),
) -> None:
    """Compare two runs cell by cell: % change per metric, its interval, and whether it is real (between-process
    evidence, Holm-corrected); warn when setups differ."""
    from segbench.report.compare import compare_runs  # lazy: imports pandas (and numpy)
    from segbench.results.store import partial_run_note, read_meta  # lazy: imports pandas

    comparison = compare_runs(run_a, run_b, threshold=threshold)
    for run_dir in (run_a, run_b):
        note = partial_run_note(run_dir, read_meta(run_dir))
        if note:
            console.print(f"[yellow]note: {escape(note)}[/]", highlight=False)
    for line in comparison.fingerprint_differences:
        console.print(f"[yellow]warning: fingerprints differ: {escape(line)}[/]", highlight=False)
    for line in comparison.machine_warnings:
        console.print(f"[red]warning: {escape(line)}[/]", highlight=False)
    _print_comparison(comparison)
    for side, labels in (("A", comparison.only_in_a), ("B", comparison.only_in_b)):
        if labels:
            console.print(f"only in {side}: " + "; ".join(escape(label) for label in labels), highlight=False)
    if output is not None:
        _write_comparison(comparison, output)
    if confirm:
        comparison = _confirm(comparison, run_a, run_b, threshold)
    if fail_on_regression is not None:
        _gate(comparison, fail_on_regression)


def _print_comparison(comparison: Any) -> None:
    from segbench.report.compare import INDICATIVE_HINT, comparison_table  # lazy: imports pandas (and numpy)

    console.print(comparison_table(comparison))
    worse, better = comparison.significant_count
    console.print(
        f"{len(comparison.cells)} matched cell(s): {worse} significantly slower, {better} significantly faster "
        f"((!): Holm-adjusted p < 0.05 and |change| > {comparison.threshold_pct:.3g} %, threshold "
        f"{escape(comparison.threshold_source)})",
        highlight=False,
    )
    if comparison.indicative_count:
        console.print(
            f"[yellow]{comparison.indicative_count} cell(s) indicative only ((?) beyond the threshold): "
            f"{escape(INDICATIVE_HINT)}[/]",
            highlight=False,
        )
    if comparison.machine_warnings:
        console.print("[red](!) the measured ceilings differ: these changes compare machines, not code[/]")


def _write_comparison(comparison: Any, output: Path) -> None:
    from segbench.report.exports import save_text  # lazy: imports matplotlib (and pandas, numpy)
    from segbench.report.html import render_comparison  # lazy: imports matplotlib (and pandas, numpy)

    save_text(output, render_comparison(comparison), "the comparison")
    console.print(f"comparison written: [bold]{escape(str(output))}[/]", highlight=False)


CONFIRM_REPEATS = 3


def _confirm(comparison: Any, run_a: Path, run_b: Path, threshold: float | None) -> Any:
    """pyperf-style confirmation: rerun B's flagged cells in >= 3 processes each, compare A with that rerun, and
    say which flagged changes held (same direction, beyond the threshold). Returns the confirming comparison."""
    from segbench.cli.run import _suite_for_run  # lazy: cli.run imports the run machinery's helpers
    from segbench.report.compare import compare_runs  # lazy: imports pandas (and numpy)
    from segbench.results.store import SUITE_FILE  # lazy: imports pandas
    from segbench.run.runner import run_suite  # lazy: imports torch

    flagged = {cell.cell_id: cell for cell in comparison.flagged}
    if not flagged:
        console.print("confirm: no cell moved beyond the threshold; nothing to rerun")
        return comparison
    suite, suite_path, _ = _suite_for_run(run_b / SUITE_FILE, None, None, [], [])
    repeats = max(CONFIRM_REPEATS, suite.timing.repeats)
    overrides = [f"timing.repeats={repeats}", f"name={suite.name}-confirm"]
    suite, suite_path, suite_text = _suite_for_run(run_b / SUITE_FILE, None, None, [], overrides)
    console.print(f"confirm: rerunning {len(flagged)} flagged cell(s) of B in {repeats} processes each")
    rerun = run_suite(
        suite, suite_path, run_b.parent, suite_text=suite_text, only_cells=frozenset(c.split("@")[0] for c in flagged)
    )
    confirmed = compare_runs(run_a, rerun.run_dir, threshold=threshold)
    _print_comparison(confirmed)
    for cell in confirmed.cells:
        if cell.cell_id in flagged:
            console.print(f"confirm: {escape(cell.label)}: {_held(flagged[cell.cell_id], cell)}", highlight=False)
    console.print(f"confirmation run: [bold]{escape(str(rerun.run_dir))}[/]", highlight=False)
    again = {cell.cell_id: cell for cell in confirmed.cells}
    # The gate judges each flagged cell on its confirmation and every other cell as first compared.
    return replace(comparison, cells=tuple(again.get(cell.cell_id, cell) for cell in comparison.cells))


def _held(first: Any, again: Any) -> str:
    before, after = first.metric("median_ms"), again.metric("median_ms")
    if after is None or after.change_pct is None:
        return "no median in the rerun"
    text = f"{before.change_pct:+.1f} % then {after.change_pct:+.1f} %"
    same_way = (after.change_pct > 0) == (before.change_pct > 0)
    if same_way and after.significant:
        return f"confirmed ({text}, significant between processes)"
    if same_way and after.beyond_threshold:
        return f"held, indicative only ({text}; A has one process per cell: rerun A with -s timing.repeats=3)"
    return f"not reproduced ({text}): the first change was noise"


def _gate(comparison: Any, fail_on_regression: float) -> None:
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
