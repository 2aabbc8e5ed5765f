"""GPU memory figures as a first real GPU run (H100 80GB HBM3, the rtx3060-claims suite) showed them:
the split of NVML's per-process peak, and a memory pass that starts from the cell's own working set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from segbench.measure import memory
from segbench.report.html import render_report
from segbench.report.memory import breakdown_row, gpu_memory_breakdown
from segbench.results.runs import RunData
from tests.helpers import REPO

H100_RUN = REPO / "results" / "rtx3060-claims-h100-20261125T224130Z"


def h100_record(**memory_mb: float) -> dict[str, Any]:
    """SegFormer-B2 fp32 at 1024 on the H100, as recorded there (MiB)."""
    figures = {
        "nvml_process_peak": 2876.0,
        "baseline": 520.0,
        "torch_reserved_peak": 2188.0,
        "torch_allocated_peak": 2029.0,
        "weights": 105.0,
    }
    return {
        "model": "segformer-b2",
        "resolution": [1024, 1024],
        "batch_size": 1,
        "precision": "fp32",
        "backend": "eager",
        "device": "cuda:0",
        "status": "ok",
        "memory_mb": {**figures, **memory_mb},
    }


def test_breakdown_parts_add_up_to_the_nvml_process_peak() -> None:
    row = breakdown_row(h100_record())
    assert row is not None
    assert (
        row["baseline (context)"] + row["allocator reserved peak"] + row["outside the allocator"]
        == row["NVML process peak"]
    )
    assert row["cached, not in use"] == 2188.0 - 2029.0 and row["outside the allocator"] == 2876.0 - 520.0 - 2188.0


def test_breakdown_skips_cells_without_nvml_or_allocator_figures() -> None:
    assert breakdown_row(h100_record(nvml_process_peak=None)) is None
    cpu = {**h100_record(), "device": "cpu"}
    assert gpu_memory_breakdown(RunData(Path("x"), {}, [cpu], {})).empty


@pytest.mark.skipif(not H100_RUN.exists(), reason="the committed H100 run is not in this checkout")
def test_report_of_the_h100_run_explains_where_the_memory_went() -> None:
    from segbench.results.runs import load_run

    run = load_run(H100_RUN)
    frame = gpu_memory_breakdown(run)
    assert len(frame) == sum(1 for r in run.ok) and (frame["baseline (context)"] > 0).all()
    page = render_report(run)
    assert 'id="memory-breakdown"' in page and "cuDNN and cuBLAS handles" in page


def test_memory_pass_returns_cached_blocks_before_resetting_peaks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(
        torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset_peak_memory_stats")
    )
    memory.reset_allocator_peaks(torch.device("cuda", 0))
    assert calls == ["synchronize", "empty_cache", "reset_peak_memory_stats"]
    calls.clear()
    memory.reset_allocator_peaks(torch.device("cpu"))
    assert calls == []


def test_breakdown_reads_figures_with_the_reports_one_numeric_check() -> None:
    from segbench.report import memory as report_memory
    from segbench.report import tables
    from segbench.results import metrics

    # One definition of "a recorded figure", not a copy: the catalogue's, which the tables and the breakdown use.
    assert report_memory.number is tables.number is metrics.number
    assert [metrics.number(value) for value in (3, 2.5, True, "3", None, [1])] == [3.0, 2.5, None, None, None, None]
    assert breakdown_row(h100_record(weights=True))["weights"] is None  # a flag is never a figure


@pytest.mark.skipif(not H100_RUN.exists(), reason="the committed H100 run is not in this checkout")
def test_markdown_export_has_the_memory_breakdown_and_telemetry_tables_of_the_html(tmp_path: Path) -> None:
    from segbench.formatting import fmt_fixed
    from segbench.report.exports import render_markdown
    from segbench.report.tables import telemetry
    from segbench.results.runs import load_run

    run = load_run(H100_RUN)  # read only
    lines = render_markdown(run).splitlines()

    def table_after(heading: str) -> list[str]:
        start = lines.index(heading) + 2
        end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
        return lines[start:end]

    breakdown, sampled = gpu_memory_breakdown(run), telemetry(run)
    memory_rows = table_after("### Where the GPU memory went")
    assert len(memory_rows) == 2 + len(breakdown) and "outside the allocator MiB" in memory_rows[0]
    first = breakdown.iloc[0]
    assert memory_rows[2].startswith(f"| {first['cell']} | {fmt_fixed(0)(first['NVML process peak'])} |")
    assert "cuDNN and cuBLAS handles" in "\n".join(lines)
    telemetry_rows = table_after("### Telemetry")
    assert len(telemetry_rows) == 2 + len(sampled) and "throttled % of samples" in telemetry_rows[0]
    # Its energy figures are withheld when read (0 J, or 1,356 W on a 700 W card): the reason is the column instead.
    assert "J / image" not in telemetry_rows[0] and "| energy |" in telemetry_rows[0]
