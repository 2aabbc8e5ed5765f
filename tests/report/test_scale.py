"""Reports and comparisons of runs with hundreds of cells (issue 34, "Scale"): they stay readable and say what they
left out, and a large comparison bootstraps only what can decide a verdict, reaching the same verdicts."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from segbench.bench import scale
from segbench.report import compare
from segbench.report.compare import compare_runs, table_rows
from tests.helpers import segbench


@pytest.fixture(scope="module")
def large_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two synthetic runs of 400 cells, written through the record schema (200 samples a cell: enough that a 60 %
    change is decided on its own)."""
    return scale.synthesise(tmp_path_factory.mktemp("scale"), cells=400, samples=200)


def test_a_report_of_hundreds_of_cells_shortens_its_tables_and_plots_and_says_so(
    large_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Guards the defect that a report drew and listed every cell: 10,000 cells took 303 s and 2.5 GB, panels with
    dozens of legend entries collapsed (matplotlib's warning), and every table held every row."""
    run_a, _ = large_runs
    output = tmp_path / "report.html"
    result = segbench("report", str(run_a), "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert "constrained_layout not applied" not in result.stderr  # no panel collapsed under its legend
    page = output.read_text()
    shown = re.findall(r"(\d+) of (\d+) rows shown", page)
    assert shown and all(int(kept) <= 300 < int(total) for kept, total in shown), shown
    assert "segbench report RUN --format csv" in page
    assert re.search(r"\d+ of \d+ cells are not drawn: this plot shows", page)
    leaderboard = page.split('id="leaderboard-table"')[1].split("</table>")[0]
    assert leaderboard.count("<tr data-model=") <= 300


def test_a_large_comparison_bootstraps_only_deciding_changes_and_reaches_the_same_verdicts(
    large_runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the defect that compare block-bootstrapped every single-process cell (2,000 x n a cell: 989 s for two
    runs of 10,000 cells) though a change within the single-process A/A bound can never be significant."""
    run_a, run_b = large_runs
    calls: list[int] = []
    spreads = compare.within_process_spreads

    def counted(samples, quantiles, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(samples))
        return spreads(samples, quantiles, **kwargs)

    monkeypatch.setattr(compare, "within_process_spreads", counted)
    fast = compare_runs(run_a, run_b)
    deciding = sum(
        1
        for cell in fast.cells
        if any(m.change_pct is not None and abs(m.change_pct) > 40 for m in cell.metrics[:5])
        and not cell.flags
    )
    assert fast.bootstrap_note and 0 < len(calls) <= 4 * deciding  # two series a side, each bootstrapped once
    skipped = [m for cell in fast.cells for m in cell.metrics if m.bootstrap_skipped]
    assert skipped and all(abs(m.change_pct) <= 40 and not m.significant for m in skipped if m.change_pct)

    monkeypatch.setattr(compare, "FULL_BOOTSTRAP_MAX_CELLS", 10_000)
    full = compare_runs(run_a, run_b)
    assert not full.bootstrap_note
    verdicts = [[(m.key, m.significant) for m in cell.metrics] for cell in fast.cells]
    assert verdicts == [[(m.key, m.significant) for m in cell.metrics] for cell in full.cells]
    assert full.significant_count == fast.significant_count and sum(fast.significant_count) > 0


def test_a_long_comparison_table_shows_the_notable_cells_and_says_how_many_it_left_out(
    large_runs: tuple[Path, Path],
) -> None:
    """Guards the defect that the terminal printed every matched cell (10,000 rows)."""
    comparison = compare_runs(*large_runs)
    shown, caption = table_rows(comparison, limit=50)
    assert len(shown) <= 50 < len(comparison.cells)
    assert all(cell in comparison.notable for cell in shown)
    assert f"of {len(comparison.cells)} matched cells shown" in caption and "-o FILE.html" in caption
    assert table_rows(comparison, limit=len(comparison.cells)) == (list(comparison.cells), "")


def test_compare_says_which_cells_it_did_not_bootstrap(large_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """The terminal and the HTML say that a large comparison left small single-process changes without an
    interval, and the terminal table says how many cells it left out."""
    result = segbench("compare", *map(str, large_runs), "-o", str(tmp_path / "cmp.html"), env=_wide())
    assert result.returncode == 0, result.stderr
    assert "no within-process interval" in result.stdout and "matched cells shown" in result.stdout
    assert "no within-process interval" in (tmp_path / "cmp.html").read_text()


def _wide() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "300"}


def test_the_scale_benchmark_runs_end_to_end_at_a_tiny_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The benchmark synthesises both runs, times report and compare as subprocesses and prints the table."""
    figures = tmp_path / "scale.json"
    scale.main(["--cells", "50", "--samples", "50", "--out", str(tmp_path / "runs"), "--json", str(figures)])
    printed = capsys.readouterr().out
    assert "CPU:" in printed and "instruction sets:" in printed
    for figure in ("report wall time", "report peak RSS", "compare wall time"):
        assert figure in printed
    assert (tmp_path / "runs" / "report.html").is_file() and (tmp_path / "runs" / "compare.html").is_file()
    runs = json.loads(figures.read_text())["runs"]
    assert [run["returncode"] for run in runs] == [0, 0] and all(run["peak_rss_mb"] > 50 for run in runs)
