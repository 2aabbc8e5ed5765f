"""Pipelines as backends: the libraries' own convenience APIs, timed with the same statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from segbench.report import tables
from segbench.report.best import best_choices
from segbench.results.runs import load_run
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite


def test_ultralytics_predict_and_hf_pipeline_cells(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite_path = write_suite(
        models=["yolov8n-seg", "segformer-b0"],
        resolutions=[64],
        backends=["eager", "ultralytics-predict", "hf-pipeline"],
    )
    run_dir = run_suite(load_suite(suite_path), suite_path, tmp_path / "results").run_dir
    records = {
        (r["model"], r["backend"]): r for r in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())
    }

    yolo = records[("yolov8n-seg", "ultralytics-predict")]
    assert yolo["status"] == "ok", yolo.get("traceback")
    info = yolo["backend_info"]
    assert set(info["own_stage_median_ms"]) == {"preprocess", "inference", "postprocess"}  # ultralytics' own `speed`
    assert info["fused"] is True and info["torch_threads_chosen_by_ultralytics"] >= 1  # what predict did is recorded
    # Random weights detect nothing: the class maps agree trivially, so agreement is undefined, not 100 %.
    assert yolo["fidelity"]["reference_detections"] == 0 and yolo["fidelity"]["pixel_agreement"] is None
    assert yolo["fidelity"]["agreement_unavailable"] == "reference found no detections: agreement undefined"
    # Instances are counted on ultralytics' own Results too (none here), one count per end-to-end frame.
    for record in (yolo, records[("yolov8n-seg", "eager")]):
        assert record["detections_per_frame"] == [0] * min(8, record["end_to_end_ms"]["n"])
    assert records[("segformer-b0", "eager")]["detections_per_frame"] is None

    segformer = records[("segformer-b0", "hf-pipeline")]
    assert segformer["status"] == "ok", segformer.get("traceback")
    assert segformer["backend_info"]["processor"] == "SegformerImageProcessor"
    assert segformer["fidelity"]["pixel_agreement"] > 0.9

    assert records[("yolov8n-seg", "hf-pipeline")]["status"] == "unsupported"
    assert records[("segformer-b0", "ultralytics-predict")]["status"] == "unsupported"

    # A pipeline's forward is its whole library call: compared end to end, never against eager's forward alone.
    assert yolo["latency_scope"] == "end_to_end" and records[("yolov8n-seg", "eager")]["latency_scope"] == "forward"
    run = load_run(run_dir)
    rows = {(r["model"], r["backend"]): r for r in tables.quantization(run).to_dict("records")}
    pipeline = rows[("yolov8n-seg", "ultralytics-predict")]
    assert pd.isna(pipeline.get("speedup")) and pd.isna(pipeline.get("median_ms"))  # no forward-only comparison
    eager_e2e = records[("yolov8n-seg", "eager")]["end_to_end_ms"]["median"]
    assert pipeline["end_to_end_speedup"] == pytest.approx(eager_e2e / yolo["end_to_end_ms"]["median"])
    board = tables.leaderboard(run).set_index(["model", "backend"])
    assert (
        pd.isna(board.loc[("segformer-b0", "hf-pipeline"), "median_ms"])
        and board.loc[("segformer-b0", "hf-pipeline"), "end_to_end_ms"] > 0
    )
    advice = " ".join(line for entry in best_choices(run) if entry.model == "segformer-b0" for line in entry.lines)
    assert "ms end to end" in advice
