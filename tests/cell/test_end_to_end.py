"""The end-to-end pass: the whole pipeline warmed before its clock starts, its cold first call recorded apart."""

from __future__ import annotations

import time
from typing import Any

import torch

from segbench.cell import passes as cell
from segbench.cell.request import CellRequest
from segbench.measure.stats import LatencyStats
from segbench.measure.timing import StopRule
from segbench.models.registry import load_plugin
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import EndToEndConfig, Timing
from tests.helpers import FAST_TIMING, FAULT_PLUGIN

COLD_MS = 500.0  # what test-cold-start's first postprocess sleeps (ColdStartAdapter in tests/fault_models.py)


def _measure(model: str, **timing: Any) -> dict[str, Any]:
    """A cell measured in this process (no fidelity or accuracy: the fp32 eager reference, no dataset)."""
    load_plugin(FAULT_PLUGIN)
    spec = CellSpec(model=model, resolution=(32, 32), batch_size=1, precision="fp32", backend="eager")
    request = CellRequest(
        cell=spec, device="cpu", timing=Timing(**{**FAST_TIMING, **timing}), poll_interval_ms=10, threads=None
    )
    return cell.measure_cell(request)


def test_the_cold_first_call_is_recorded_apart_and_never_an_end_to_end_sample() -> None:
    # Before: no warm-up, so the first end-to-end sample carried the first postprocess and set max and p99 (11 of 12
    # committed H200 claim cells had their maximum first).
    outcome = _measure("test-cold-start")
    assert outcome["first_call_ms"] >= COLD_MS
    assert outcome["end_to_end_ms"]["max"] < outcome["first_call_ms"] / 2  # far below: the sleep is in no sample
    assert outcome["end_to_end_warmup"]["calls"] >= FAST_TIMING["warmup_iters"]


def test_the_pipeline_warm_up_runs_at_least_warmup_iters_calls_and_at_least_warmup_s() -> None:
    by_time = _measure("test-tiny", warmup_iters=1, warmup_s=0.2)["end_to_end_warmup"]
    assert by_time["seconds"] >= 0.2 and by_time["calls"] > 1  # a tiny call takes far less than 0.2 s
    by_count = _measure("test-tiny", warmup_iters=4, warmup_s=0.0)["end_to_end_warmup"]
    assert by_count["calls"] == 4


class _FrameRecorder:
    """A pipeline that notes which frame each preprocess got."""

    def __init__(self) -> None:
        self.preprocessed: list[int] = []

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        self.preprocessed.append(int(images[0, 0, 0, 0]))
        return images.float()

    def forward_parts(self) -> None:
        return None

    def postprocess(self, outputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return outputs[..., 0].long()

    def detections(self, outputs: torch.Tensor) -> None:
        return None


def test_the_warm_up_goes_over_the_end_to_end_frames_before_the_clock() -> None:
    frames = [torch.full((1, 4, 4, 3), k, dtype=torch.uint8) for k in range(3)]
    recorder = _FrameRecorder()
    run = cell._time_stages(
        recorder,  # type: ignore[arg-type]
        lambda x: x,
        frames,
        StopRule(4, 4, 0.0, 60.0),
        torch.device("cpu"),
        split=False,
        warmup_iters=2,
        warmup_s=0.0,
    )
    assert recorder.preprocessed == [0, 1, 0, 1, 2, 0]  # two warm-up calls, then the timed frames from the first
    assert len(run.samples_ms["end_to_end"]) == 4 and run.warmup["calls"] == 2


def test_undersampled_reads_the_end_to_end_pass_too() -> None:
    # The committed zoo-cpu Mask2Former-Swin-B: the latency pass was flagged (n = 3) but the Answer's end-to-end
    # figures came from n = 2; a short end-to-end pass beside a full latency pass went unflagged.
    timing = Timing(min_iters=10, max_time_s=10.0)
    latency = LatencyStats.from_samples([50.0 + k for k in range(40)])
    end_to_end = LatencyStats.from_samples([2700.0, 2800.0, 2750.0])
    reason = cell.undersampled({"latency pass": latency, "end-to-end pass": end_to_end}, timing)
    assert reason is not None and reason.startswith("end-to-end pass n = 3 < min_iters 10: max_time_s (10 s)")
    assert "latency pass" not in reason
    assert "at 2,750 ms each that is ≥ 28 s: raise timing.max_time_s" in reason  # how long min_iters needs
    assert cell.undersampled({"latency pass": latency, "end-to-end pass": latency}, timing) is None


class _SkewedPipeline(_FrameRecorder):
    """Every fourth frame's postprocess is slow: a skewed series whose median hides the slow calls."""

    def postprocess(self, outputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        time.sleep(0.040 if len(self.preprocessed) % 4 == 0 else 0.002)
        return outputs[..., 0].long()


def test_throughput_is_images_over_wall_time_beside_one_over_the_median() -> None:
    """Guards item 9: FPS was only 1 / median of the sequential pipeline, which a skewed series overstates; the
    record now also gives images / wall time of the pass and the pipelined bound (1 / the slowest stage)."""
    frames = [torch.zeros((2, 4, 4, 3), dtype=torch.uint8)]
    run = cell._time_stages(
        _SkewedPipeline(),  # type: ignore[arg-type]
        lambda x: (time.sleep(0.005), x)[1],
        frames,
        StopRule(12, 12, 0.0, 60.0),
        torch.device("cpu"),
        split=False,
    )
    median_fps = 2 * 1000 / LatencyStats.from_samples(run.samples_ms["end_to_end"]).median
    throughput = run.throughput_fps(batch_size=2)
    assert throughput < 0.7 * median_fps  # three 40 ms calls in twelve: the wall time sees them, the median not
    assert throughput == 2 * 12 / run.wall_s and run.wall_s >= sum(run.samples_ms["end_to_end"]) / 1000 * 0.999
    stages = {stage: LatencyStats.from_samples(run.samples_ms[stage]) for stage in ("preprocess", "forward")}
    stages["postprocess"] = LatencyStats.from_samples(run.samples_ms["postprocess"])
    slowest = max(stats.median for stats in stages.values())
    assert cell.pipelined_bound_fps(stages, 2) == 2 * 1000 / slowest


def test_a_measured_cell_records_throughput_and_the_pipelined_bound() -> None:
    outcome = _measure("test-tiny")
    slowest = max(outcome["stages_ms"][stage]["median"] for stage in ("preprocess", "forward", "postprocess"))
    assert outcome["pipelined_fps_bound"] == 1000 / slowest
    # 1 / mean call against 1 / the slowest stage's median: below it, unless that stage is skewed low
    assert 0 < outcome["end_to_end_throughput_fps"] <= 1.05 * outcome["pipelined_fps_bound"]


def test_end_to_end_covers_what_it_says_and_can_include_decode_and_a_camera_resize() -> None:
    """Guards item 7's scope: end to end silently started from decoded frames at the cell's size; the record now
    says what it covers, and `end_to_end: {decode, camera_size}` times decode and resize as stages of their own."""
    plain = _measure("test-tiny")
    assert plain["end_to_end_covers"]["stages"] == ["preprocess", "forward", "postprocess"]
    assert "no decode, no resize" in plain["end_to_end_covers"]["input"]
    assert "first maximum" in plain["end_to_end_covers"]["class_map"]

    load_plugin(FAULT_PLUGIN)
    spec = CellSpec(model="test-tiny", resolution=(32, 32), batch_size=2, precision="fp32", backend="eager")
    camera = EndToEndConfig(decode="jpeg", camera_size="120x160")
    request = CellRequest(
        cell=spec, device="cpu", timing=Timing(**FAST_TIMING), poll_interval_ms=10, threads=None, end_to_end=camera
    )
    outcome = cell.measure_cell(CellRequest.from_dict(request.to_dict()))  # as it crosses into the cell's process
    covers = outcome["end_to_end_covers"]
    assert covers["stages"] == ["decode", "resize", "preprocess", "forward", "postprocess"]
    assert covers["decode"] == "jpeg" and covers["camera_size"] == [120, 160]
    assert "JPEG bytes at 120x160" in outcome["end_to_end_input"]
    stages = outcome["stages_ms"]
    assert {"decode", "resize"} <= set(stages)
    summed = sum(stages[name]["median"] for name in covers["stages"])
    assert outcome["end_to_end_ms"]["median"] >= 0.8 * summed  # the input stages are inside end to end
