"""The profile in the reports: a Profile section per configuration (HTML and Markdown), fp32 and int8 of one model
side by side, the CSV's columns, and `compare` naming the block that got slower."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.report.exports import write_report
from tests.helpers import cell_record


def _profile(head_ms: float, neck_ms: float, head_precision: str) -> dict[str, Any]:
    total = head_ms + neck_ms
    return {
        "profiler": "torch.profiler",
        "iters": 5,
        "forward_ms": total * 1.1,
        "attributed_ms": total,
        "coverage": 0.91,
        "low_precision_share": head_ms / total if head_precision == "int8" else 0.0,
        "grouping": "module ranges (forward hooks)",
        "operators": [
            {"name": "aten::conv2d", "implementation": "conv-kernel", "precision": head_precision,
             "self_ms": head_ms, "share": head_ms / total, "calls": 10.0},
            {"name": "aten::upsample", "implementation": "up-kernel", "precision": "fp32",
             "self_ms": neck_ms, "share": neck_ms / total, "calls": 2.0},
        ],
        "blocks": sorted([
            {"name": "head", "self_ms": head_ms, "share": head_ms / total,
             "precision_share": {head_precision: 1.0}, "low_precision_share": 1.0 if head_precision == "int8" else 0,
             "flops": 2e9, "arithmetic_intensity": 12.0, "percent_of_attainable": 40.0, "bound": "compute"},
            {"name": "neck", "self_ms": neck_ms, "share": neck_ms / total, "precision_share": {"fp32": 1.0},
             "low_precision_share": 0.0, "bound": "memory"},
        ], key=lambda block: -block["self_ms"]),  # as the pass orders them
    }  # fmt: skip


def _record(cell_id: str, precision: str, head_ms: float, neck_ms: float) -> dict[str, Any]:
    stages = {stage: {"median": ms} for stage, ms in (("preprocess", 1.0), ("forward", 10.0), ("postprocess", 2.0))}
    return cell_record(
        cell_id, median=head_ms + neck_ms, model="m", precision=precision, stages_ms=stages,
        profile=_profile(head_ms, neck_ms, "int8" if precision == "int8" else "fp32"),
    )  # fmt: skip


def _run(folder: Path, records: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True)
    meta = {"suite": "profiled", "device": "cpu", "status": "complete"}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


def test_the_reports_show_each_profile_and_two_precisions_side_by_side(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", [_record("a", "fp32", 6.0, 4.0), _record("b", "int8", 2.0, 4.0)])
    for fmt in ("html", "md", "csv"):
        write_report(run, tmp_path / f"report.{fmt}", fmt)
    html = (tmp_path / "report.html").read_text()
    assert 'id="profile"' in html and 'id="plot-profile"' in html and "profile-pair-table" in html
    markdown = (tmp_path / "report.md").read_text()
    assert "### Profile: where the time goes" in markdown
    assert "head: 60%, 100% of it in fp32, compute-bound" in markdown  # the fp32 cell's headline
    assert "head: 33%, 0% of it still in float" in markdown  # the int8 cell's: its head ran in int8
    assert "faster in head; not faster in neck" in markdown  # int8 against fp32, block by block
    csv = pd.read_csv(tmp_path / "report.csv").set_index("cell_id")
    assert csv.loc["a", "profile_top_block"] == "head" and csv.loc["b", "profile_top_block"] == "neck"
    assert csv.loc["b", "profile_low_precision_share"] > 0


def test_compare_names_the_block_that_got_slower(tmp_path: Path) -> None:
    before = _run(tmp_path / "a", [_record("a", "fp32", 6.0, 4.0)])
    after = _run(tmp_path / "b", [_record("a", "fp32", 6.0, 8.0)])
    done = CliRunner().invoke(app, ["compare", str(before), str(after), "--output", str(tmp_path / "compare.html")])
    assert done.exit_code == 0, done.output
    [line] = [line for line in done.output.splitlines() if line.startswith("blocks slower in B: ")]
    assert line.endswith("neck 4 -> 8 ms (+100%)") and "head" not in line.split(": ", 2)[2]
    assert "neck 4 -&gt; 8 ms" in (tmp_path / "compare.html").read_text()
