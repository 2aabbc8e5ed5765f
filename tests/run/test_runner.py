"""Real cells in real spawned processes: ok, timeout, crash by signal, out-of-memory, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import segbench.results
from segbench.cell import passes as cell_module
from segbench.data.images import evaluation_batches
from segbench.measure.timing import StopRule
from segbench.results import store as results
from segbench.run.runner import run_suite
from segbench.suite.matrix import CellSpec, expand
from segbench.suite.schema import load_suite

REQUIRED_FIELDS = (
    "cell_id",
    "status",
    "model",
    "resolution",
    "batch_size",
    "precision",
    "backend",
    "device",
    "latency_ms",
    "fps",
    "memory_mb",
    "error",
)
LATENCY_FIELDS = ("mean", "median", "p90", "p95", "p99", "min", "max", "std", "cv", "ci95")
MEMORY_FIELDS = (
    "nvml_device_peak",
    "nvml_process_peak",
    "torch_allocated_peak",
    "torch_reserved_peak",
    "rss_peak",
    "baseline",
)


def _run(suite_path: Path, out: Path, **kwargs: Any) -> results.Path:
    return run_suite(load_suite(suite_path), suite_path, out, **kwargs).run_dir


def _lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / results.RESULTS_FILE).read_text().splitlines()]


def test_real_fast_scnn_cell_writes_valid_results(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite_path = write_suite(models=["fast-scnn"], resolutions=[[64, 128]], batch_sizes=[2])
    run_dir = _run(suite_path, tmp_path / "results")
    [record] = _lines(run_dir)
    assert record["status"] == "ok", record.get("traceback") or record["error"]
    for name in REQUIRED_FIELDS:
        assert name in record
    assert set(LATENCY_FIELDS) <= set(record["latency_ms"])
    assert set(MEMORY_FIELDS) <= set(record["memory_mb"])
    latency = record["latency_ms"]
    assert latency["min"] <= latency["median"] <= (latency["p95"] or latency["median"]) <= latency["max"]
    assert (latency["p95"] is None) == (latency["n"] < 20)  # a p95 needs 20 samples (measure/quantiles.py)
    # The cold first call is its own figure, never an end-to-end sample; the pass was warmed before its clock.
    assert record["first_call_ms"] > 0 and record["end_to_end_warmup"]["calls"] >= 1
    assert len(record["samples_ms"]) == latency["n"] == record["iterations"] >= 1
    assert record["fps"] == pytest.approx(2 * 1000 / latency["median"])
    assert record["resolution"] == [64, 128] and record["batch_size"] == 2 and record["device"] == "cpu"
    assert record["memory_mb"]["rss_peak"] >= record["memory_mb"]["baseline"] > 0
    assert record["memory_mb"]["nvml_device_peak"] is None and "nvml_device_peak" in record["memory_unavailable"]
    assert set(record["stages_ms"]) == {"preprocess", "forward", "postprocess"}
    assert record["end_to_end_input"] == "8 held-out photographs in turn, 64x128"
    assert record["detections_per_frame"] is None  # a dense head has no instances to count
    assert record["params"] == pytest.approx(1.11e6, rel=0.03)
    assert record["threads"] >= 1
    assert record["gflops"] > 0 and record["roofline"]["achieved_tflops"] > 0
    assert record["telemetry"]["unavailable"] and record["budget"] is None and record["throttled"] is None
    meta = results.read_meta(run_dir)
    assert meta["status"] == "complete" and meta["device"] == "cpu" and meta["fingerprint"]["cpu"]["logical_cores"] >= 1
    assert (run_dir / results.SUITE_FILE).read_text() == suite_path.read_text()
    frame = segbench.results.load(run_dir)
    assert frame.loc[0, "latency_ms.median"] == latency["median"] and frame.loc[0, "status"] == "ok"


def test_failures_are_results_and_the_run_goes_on(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    models = ["test-segfault", "test-oom", "test-raise", "test-tiny"]
    run_dir = _run(write_suite(models=models), tmp_path / "results")
    by_model = {r["model"]: r for r in _lines(run_dir)}
    assert list(by_model) == models  # every cell recorded, in order, after the failures
    assert by_model["test-segfault"]["status"] == "error" and "SIGSEGV" in by_model["test-segfault"]["error"]
    assert by_model["test-oom"]["status"] == "oom" and "allocate" in by_model["test-oom"]["error"]
    assert by_model["test-raise"]["status"] == "error"
    assert by_model["test-raise"]["error"] == "ValueError: the last line of a multi-line failure"
    assert "Traceback" in by_model["test-raise"]["traceback"]
    assert by_model["test-tiny"]["status"] == "ok"


def test_hanging_cell_is_killed_at_its_timeout(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    timing = {
        "warmup_iters": 1,
        "min_iters": 3,
        "max_iters": 20,
        "min_time_s": 0.05,
        "warmup_s": 0.0,
        "max_time_s": 1.0,
        "timeout_s": 10,
    }
    started = time.monotonic()
    run_dir = _run(write_suite(models=["test-hang"], timing=timing), tmp_path / "results")
    [record] = _lines(run_dir)
    assert record["status"] == "timeout" and "timeout_s=10" in record["error"]
    assert time.monotonic() - started < 60  # killed, not waited out (the cell sleeps an hour)


def test_unsupported_precision_is_recorded_with_reason(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    run_dir = _run(write_suite(precisions=["tf32", "fp32"]), tmp_path / "results")
    tf32, fp32 = _lines(run_dir)
    assert tf32["status"] == "unsupported" and "NVIDIA GPU" in tf32["error"]
    assert fp32["status"] == "ok"


def _wait_for_lines(path: Path, count: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach {count} lines")


def test_resume_after_sigkill_loses_and_repeats_nothing(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    # Each cell sleeps in forward, so the kill lands while a cell is in flight.
    models = [{"name": "test-tiny", "options": {"sleep_ms": 30}}]
    suite_path = write_suite(models=models, batch_sizes=[1, 2, 3, 4])
    out = tmp_path / "results"
    process = subprocess.Popen(
        [sys.executable, "-m", "segbench", "run", str(suite_path), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("*/results.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.2)
        [results_file] = out.glob("*/results.jsonl")
        _wait_for_lines(results_file, 1, 60)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    run_dir = results_file.parent
    before = {r["cell_id"] for r in _lines(run_dir)}
    assert 1 <= len(before) < 4

    resumed = _run(suite_path, out, resume=run_dir)
    assert resumed == run_dir
    ids = [r["cell_id"] for r in _lines(run_dir)]
    expected = {cell.cell_id for cell in expand(load_suite(suite_path))}
    assert sorted(ids) == sorted(expected)  # each cell exactly once
    assert results.read_meta(run_dir)["status"] == "complete"


def test_retry_failed_reruns_only_failed_cells(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite_path = write_suite(models=["test-tiny", "test-raise"])
    run_dir = _run(suite_path, tmp_path / "results")
    _run(suite_path, tmp_path / "results", resume=run_dir)  # nothing left to do
    assert len(_lines(run_dir)) == 2
    _run(suite_path, tmp_path / "results", resume=run_dir, retry_failed=True)
    lines = _lines(run_dir)
    assert [r["model"] for r in lines] == ["test-tiny", "test-raise", "test-raise"]
    assert len(results.read_records(run_dir)) == 2  # the latest attempt per cell


def test_fidelity_against_fp32_is_recorded_for_other_precisions(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    suite_path = write_suite(models=["fast-scnn"], resolutions=[[64, 128]], precisions=["fp32", "bf16"])
    fp32, bf16 = _lines(_run(suite_path, tmp_path / "results"))
    assert fp32["fidelity"] is None and "reference" in fp32["fidelity_unavailable"]
    assert bf16["status"] == "ok", bf16.get("traceback")
    fidelity = bf16["fidelity"]
    assert 0.5 < fidelity["pixel_agreement"] <= 1.0  # bf16 rounding flips only near-tied pixels
    assert 0.0 < fidelity["miou_vs_fp32"] <= 1.0
    assert 0.0 < fidelity["max_abs_logit_diff"] < 10.0
    assert fidelity["images"] >= 8 and "random weights" in fidelity["note"]


class _CountingDetector:
    """Stands in for a detector adapter: records what the pipeline fed it; frame k holds k instances."""

    def __init__(self) -> None:
        self.preprocessed: list[int] = []
        self.detections_calls = 0

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        self.preprocessed.append(int(images[0, 0, 0, 0]))
        return images.float()

    def forward_parts(self) -> None:
        return None

    def postprocess(self, outputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return outputs[..., 0].long()

    def detections(self, outputs: torch.Tensor) -> int:
        self.detections_calls += 1
        return int(outputs[0, 0, 0, 0])


def test_end_to_end_feeds_every_frame_in_turn_and_counts_each_frames_instances_once() -> None:
    # The end-to-end pass used to feed one noise batch: an int8 YOLOv8n-seg found 30 instances in it where fp32 found
    # 1, so its postprocess (127 against 33 ms) was a property of the noise, not of what a camera shows.
    frames = [torch.full((1, 4, 4, 3), k, dtype=torch.uint8) for k in range(3)]
    detector = _CountingDetector()
    run = cell_module._time_stages(
        detector,  # type: ignore[arg-type]
        lambda x: x,
        frames,
        StopRule(7, 7, 0.0, 60.0),
        torch.device("cpu"),
        split=False,
    )
    assert detector.preprocessed == [0, 1, 2, 0, 1, 2, 0]
    assert run.detections == [0, 1, 2] and detector.detections_calls == 3  # counted once per frame
    assert len(run.samples_ms["end_to_end"]) == 7


def test_end_to_end_frames_are_the_held_out_photographs() -> None:
    cell = CellSpec(model="fast-scnn", resolution=(48, 64), batch_size=2, precision="fp32", backend="eager")
    frames = cell_module.end_to_end_frames(cell, torch.device("cpu"))
    assert [tuple(frame.shape) for frame in frames] == [(2, 48, 64, 3)] * 4
    assert torch.equal(torch.cat(frames), torch.cat(evaluation_batches(48, 64, 2)))
