"""`segbench report` and `segbench compare`: a run's report in a format, and two runs set side by side."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from segbench.cli.app import console, errors, user_errors
from segbench.cli.options import (
    LATENCY_PERCENTILE,
    MAX_LATENCY_MS,
    MAX_P99_MS,
    MEMORY_BUDGET,
    MIN_AGREEMENT,
    MIN_MIOU,
    TARGET_FLAG_OF,
    TARGET_FPS,
    bounded,
    target_fields,
)
from segbench.errors import SegbenchError

MAX_CHANGE_PCT = 100_000.0  # a thousandfold change: any threshold beyond it can never be met


@user_errors
def report(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR...", help="run folder(s) made by `segbench run`; several make one report"
    ),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="file to write (default: reports/<run folder name>.<format>)"
    ),
    fmt: str = typer.Option(
        "html", "--format", help="html (self-contained page), md (Markdown for a pull request) or csv"
    ),
    target_fps: Optional[float] = TARGET_FPS,
    max_latency_ms: Optional[float] = MAX_LATENCY_MS,
    latency_percentile: Optional[str] = LATENCY_PERCENTILE,
    max_p99_ms: Optional[float] = MAX_P99_MS,
    hardware: Optional[str] = typer.Option(
        None, "--hardware", help="target: fit this card profile's memory (e.g. rtx3060)"
    ),
    memory_budget: Optional[str] = MEMORY_BUDGET,
    min_agreement: Optional[float] = MIN_AGREEMENT,
    min_miou: Optional[float] = MIN_MIOU,
) -> None:
    """Write a run's report: the answer (verdicts against targets), leaderboard, plots, quantization, failed cells,
    expectations.

    Targets given here override the suite's `targets:` block field by field.
    """
    from segbench.report.exports import write_report  # lazy: imports matplotlib (and pandas, numpy)
    from segbench.results.store import partial_run_note, read_meta  # lazy: imports pandas

    if hardware and memory_budget:
        raise SegbenchError("--hardware and --memory-budget both set a memory target; give one")
    fields = target_fields(
        target_fps, max_latency_ms, latency_percentile, max_p99_ms, hardware or memory_budget, min_agreement, min_miou
    )
    targets = _report_targets(run_dirs, fields, "--hardware" if hardware else "--memory-budget")
    path = write_report(run_dirs if len(run_dirs) > 1 else run_dirs[0], output, fmt, targets)
    for run_dir in run_dirs:
        note = partial_run_note(run_dir, read_meta(run_dir))
        if note:
            console.print(f"[yellow]note: {escape(note)}[/]", highlight=False)
    console.print(f"report written: [bold]{escape(str(path))}[/]", highlight=False)


def _report_targets(run_dirs: list[Path], options: dict[str, Any], memory_flag: str) -> Any:
    """The run's suite targets with these options applied; None when neither sets any. Bad values are one line."""
    from pydantic import ValidationError

    from segbench.report.answer import run_targets  # lazy: imports pandas
    from segbench.results.runs import RunData  # lazy: imports pandas
    from segbench.results.store import read_suite_copy  # lazy: imports pandas

    flags = {**TARGET_FLAG_OF, "memory": memory_flag}
    try:
        # Targets need only the (first) suite's copy: loading every record here too doubled a large report's read time.
        return run_targets(RunData(run_dirs[0], {}, [], read_suite_copy(run_dirs[0])), options)
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
    threshold: Optional[float] = bounded(
        None,
        "--threshold",
        low=0,
        high=MAX_CHANGE_PCT,
        help="smallest change in % that can count as significant (default: measured from the runs' A/A spread)",
    ),
    fail_on_regression: Optional[float] = bounded(
        None,
        "--fail-on-regression",
        metavar="PCT",
        low=0,
        high=MAX_CHANGE_PCT,
        help=(
            "exit 1 if a cell is significantly slower by PCT % or more, or ran ok in A but not in B; a cell no "
            "statistics can judge (too few samples, drifted, contended) fails when slower by PCT % and the threshold"
        ),
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
    from segbench.results.store import partial_run_note, read_meta, refuse_run_file_as_output  # lazy: imports pandas

    if output is not None:
        refuse_run_file_as_output(output, run_a, run_b)
    comparison = compare_runs(run_a, run_b, threshold=threshold)
    if not comparison.cells:
        raise SegbenchError(
            f"{run_a.name} and {run_b.name} share no cell (same model, resolution, batch, precision and backend), so "
            "there is nothing to compare; compare two runs of one suite, or `segbench report A B` to see both"
        )
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
    if comparison.pruned_note:
        console.print(f"note: {escape(comparison.pruned_note)}", highlight=False)
    if comparison.bootstrap_note:
        console.print(f"note: {escape(comparison.bootstrap_note)}", highlight=False)
    for cell in comparison.cells:  # from the profiles both runs recorded: which part of the model got slower
        if cell.slower_blocks:
            console.print(f"blocks slower in B: {escape(cell.label)}: {escape('; '.join(cell.slower_blocks))}")
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
    """The regression gate's exit code, by the rule in segbench.report.compare's docstring: what it cannot judge
    statistically is judged on size alone (and named), never passed unseen."""
    size_alone = comparison.judged_on_size_alone()
    if size_alone:
        bar = max(fail_on_regression, comparison.threshold_pct)
        listed = "; ".join(f"{cell.label} ({why})" for cell, why in size_alone[:3])
        more = f"; and {len(size_alone) - 3} more" if len(size_alone) > 3 else ""
        errors.print(
            f"warning: {len(size_alone)} cell(s) judged on size alone (no statistics can judge them; slower by "
            f"{bar:.3g} % or more fails): {listed}{more}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    slower = comparison.latency_regressions(fail_on_regression)
    unmeasured = comparison.size_alone_regressions(fail_on_regression)
    broken = comparison.status_regressions
    # Missing or non-finite is a failure of the gate, never a pass: it cannot vouch for what it did not see.
    unjudged, missing = comparison.unjudgeable, comparison.only_in_a
    if slower or unmeasured or broken or unjudged or missing:
        names = [f"{cell.label} ({cell.metric('median_ms').change_pct:+.1f} %)" for cell in slower]  # type: ignore[union-attr]
        names += [
            f"{cell.label} ({cell.metric('median_ms').change_pct:+.1f} %, judged on size alone)"  # type: ignore[union-attr]
            for cell in unmeasured
        ]
        names += [f"{cell.label} ({cell.status_a} → {cell.status_b})" for cell in broken]
        names += [f"{cell.label} (median latency not a finite number)" for cell in unjudged] + [
            f"{label} (no result in B)" for label in missing
        ]
        errors.print(f"regression: {'; '.join(names)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
