"""Pipelines as backends: the libraries' own convenience APIs, timed with the same statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from segbench.runner import run_suite
from segbench.suite import load_suite


def test_ultralytics_predict_and_hf_pipeline_cells(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite_path = write_suite(models=["yolov8n-seg", "segformer-b0"], resolutions=[64], backends=["ultralytics-predict", "hf-pipeline"])
    run_dir = run_suite(load_suite(suite_path), suite_path, tmp_path / "results").run_dir
    records = {(r["model"], r["backend"]): r for r in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())}

    yolo = records[("yolov8n-seg", "ultralytics-predict")]
    assert yolo["status"] == "ok", yolo.get("traceback")
    info = yolo["backend_info"]
    assert set(info["own_stage_median_ms"]) == {"preprocess", "inference", "postprocess"}  # ultralytics' own `speed`
    assert info["fused"] is True and info["torch_threads_after"] >= 1  # what predict did is recorded
    assert yolo["fidelity"]["pixel_agreement"] > 0.9  # same model, same convention as the zoo's eager path

    segformer = records[("segformer-b0", "hf-pipeline")]
    assert segformer["status"] == "ok", segformer.get("traceback")
    assert segformer["backend_info"]["processor"] == "SegformerImageProcessor"
    assert segformer["fidelity"]["pixel_agreement"] > 0.9

    assert records[("yolov8n-seg", "hf-pipeline")]["status"] == "unsupported"
    assert records[("segformer-b0", "ultralytics-predict")]["status"] == "unsupported"
