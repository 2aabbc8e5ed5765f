"""Issue 33.3: the Answer says how much accuracy you lose. With a labelled dataset the Answer quoted pixel agreement
and the speed-vs-quality plot used agreement only; `report` lacked --min-miou and `run` took no target flag. Read
from a committed real run with labels (results/accuracy-demo-20261126T062137Z)."""

from __future__ import annotations

from pathlib import Path

import yaml

from segbench.report.answer import answer
from segbench.report.plots import pareto_plot
from segbench.results.runs import load_run
from segbench.suite.targets import Targets
from tests.helpers import FAST_TIMING, FAULT_PLUGIN, REPO, segbench

LABELLED = REPO / "results" / "accuracy-demo-20261126T062137Z"


def test_the_answer_quotes_miou_and_its_change_vs_fp32() -> None:
    result = answer(load_run(LABELLED), Targets(min_miou=50))
    fast_scnn = next(item for item in result.models if item.model == "fast-scnn")
    assert fast_scnn.lines[0].startswith("Best: ") and "mIoU 7" in fast_scnn.lines[0]
    assert "pts vs fp32 eager)" in fast_scnn.lines[0] and "pixel agreement" not in fast_scnn.lines[0]
    assert {"miou_gt_pct", "miou_delta_pts"} <= set(result.table.columns)


def test_the_pareto_plot_trades_speed_against_miou_when_labels_exist() -> None:
    plot = pareto_plot(load_run(LABELLED))
    assert plot.title == "Latency vs mIoU (GT) (Pareto front)" and plot.image_png is not None
    assert "both speed and mIoU (GT)" in plot.note


def test_report_takes_min_miou(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    done = segbench("report", str(LABELLED), "--min-miou", "50", "--format", "md", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "mIoU (GT) ≥ 50.00 %" in out.read_text()


def test_run_takes_the_reports_target_flags_and_keeps_them_in_its_suite(tmp_path: Path) -> None:
    timing = [f"-s timing.{key}={value}" for key, value in FAST_TIMING.items()]
    done = segbench(
        "run",
        "--plugin",
        FAULT_PLUGIN,
        "--model",
        "test-tiny",
        "-r",
        "16",
        "--target-fps",
        "0.5",
        "--max-p99-ms",
        "5000",
        "--out",
        str(tmp_path),
        "-s",
        "roofline.measure_ceiling=false",
        *[part for item in timing for part in item.split(" ", 1)],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = tmp_path.iterdir()
    kept = yaml.safe_load((run_dir / "suite.yaml").read_text())
    assert kept["targets"] == {"fps": 0.5, "max_latency_ms": 5000, "latency_percentile": "p99"}
    assert "miss a target" not in done.stdout
