"""Each figure measures what its name says (issue 27, items 1-3 and 6): the cell's record names its latency timing
and device throughput, flags a latency pass that disagrees with the forward stage, records its cuDNN/matmul flags,
and feeds its memory pass the end-to-end frames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from segbench.cell import passes as cell
from segbench.cell.request import CellRequest
from segbench.measure.timing import BACK_TO_BACK, SYNCHRONOUS
from segbench.models.registry import load_plugin
from segbench.results.metrics import METRICS
from segbench.run.runner import _withheld
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import Timing, load_suite
from tests.helpers import FAST_TIMING, FAULT_PLUGIN, cell_record, segbench


def _measure(**timing: Any) -> dict[str, Any]:
    load_plugin(FAULT_PLUGIN)
    spec = CellSpec(model="test-tiny", resolution=(16, 16), batch_size=2, precision="fp32", backend="eager")
    request = CellRequest(spec, "cpu", Timing(**{**FAST_TIMING, **timing}), 10.0, None)
    return cell.measure_cell(request)


def test_the_record_says_latency_is_synchronous_and_names_device_throughput_apart() -> None:
    """Issue 27 item 1 (CPU side): the record names how latency was timed and keeps device throughput (images / loop
    time) as its own field; on a CPU the latency loop is already back to back and synchronous, so it is that loop."""
    outcome = _measure()
    assert outcome["latency_timing"] == SYNCHRONOUS
    throughput = outcome["device_throughput"]
    assert throughput["iterations"] == outcome["iterations"] and "latency pass's loop" in throughput["loop"]
    assert outcome["device_throughput_fps"] == pytest.approx(2 * outcome["iterations"] / outcome["measured_s"])
    assert METRICS["device_throughput_fps"].value(outcome) == outcome["device_throughput_fps"]
    assert "1/latency" in METRICS["fps"].label and "synchronous" in METRICS["fps"].help
    assert BACK_TO_BACK.startswith("back to back")


def test_the_latency_pass_warms_up_for_warmup_s_too() -> None:
    """Issue 27 item 4 (CPU side): the latency pass's warm-up ran warmup_iters calls only; now ≥ warmup_s as well."""
    warmup = _measure(warmup_iters=1, warmup_s=0.2)["latency_warmup"]
    assert warmup["seconds"] >= 0.2 and warmup["calls"] > 1
    assert warmup["clocks"]["steady"] is None and "CPU" in warmup["clocks"]["reason"]


def test_a_gpu_latency_pass_beyond_15_percent_of_the_forward_stage_is_flagged() -> None:
    """Issue 27 item 2: a latency pass slower than the synchronised forward stage (Mask2Former on the H200, 45.4 ms
    against 26.8 ms) or faster (a pipelined figure: 8.16 against 10.83 ms) only got a note; it is now a flag that
    withholds forward FPS and the roofline."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    slower = cell.inconsistent_forward(45.4, 26.8, cuda)
    assert slower is not None and "1.69x" in slower and "slower" in slower
    faster = cell.inconsistent_forward(8.16, 10.83, cuda)
    assert faster is not None and "faster" in faster
    assert cell.inconsistent_forward(37.25, 37.37, cuda) is None  # GPU-bound YOLOv8x-seg: they agree
    assert cell.inconsistent_forward(11.0, 10.0, cuda) is None  # 10 %: within noise
    assert cell.inconsistent_forward(1.2, 0.9, cuda) is None  # 1.33x, but 0.3 ms: within a launch's jitter
    assert cell.inconsistent_forward(45.4, 26.8, cpu) is None  # CPU passes differ for other reasons (caches, load)

    record = cell_record(inconsistent_forward=slower, fps=37.0)
    assert METRICS["fps"].value(record) is None and "withheld (inconsistent_forward)" in METRICS["fps"].missing_reason(
        record
    )
    roofline = {"achieved_tflops": 1.0, "percent_of_peak": 20.0, "percent_of_ceiling": 50.0, "unavailable": {}}
    withheld = _withheld(roofline, slower)
    assert withheld["percent_of_ceiling"] is None and withheld["unavailable"]["achieved_tflops"] == slower
    assert METRICS["percent_of_ceiling"].missing_reason({**record, "roofline": withheld}) == slower
    assert _withheld(roofline, None) == roofline


def test_cudnn_benchmark_is_a_suite_option_and_every_flag_is_recorded(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    """Issue 27 item 3: torch.backends.cudnn.benchmark was never set and no cuDNN/matmul flag was recorded; the suite's
    timing.cudnn_benchmark now reaches the cell (through CellRequest) and the record keeps every flag."""
    suite_path = write_suite(timing={**FAST_TIMING, "cudnn_benchmark": True})
    assert load_suite(suite_path).timing.cudnn_benchmark is True
    done = segbench("run", str(suite_path), "--out", str(tmp_path / "results"), timeout=240)
    assert done.returncode == 0, done.stderr
    (results,) = (tmp_path / "results").glob("*/results.jsonl")
    flags = json.loads(results.read_text().splitlines()[0])["torch_flags"]
    assert flags["cudnn_benchmark"] is True
    for name in ("cudnn_allow_tf32", "matmul_allow_tf32", "float32_matmul_precision", "deterministic_algorithms"):
        assert name in flags


class _FrameRecorder:
    """A pipeline that notes which frame each preprocess got."""

    def __init__(self) -> None:
        self.preprocessed: list[int] = []
        self.model = torch.nn.Identity()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        self.preprocessed.append(int(images[0, 0, 0, 0]))
        return images.float()

    def postprocess(self, outputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return outputs[..., 0].long()


def test_the_memory_pass_feeds_the_end_to_end_frames() -> None:
    """Issue 27 item 6: the memory pass fed the noise batch while end to end fed the photographs (a detector's
    postprocess memory scales with what it finds); it now feeds every end-to-end frame, in turn."""
    frames = [torch.full((1, 4, 4, 3), k, dtype=torch.uint8) for k in range(3)]
    recorder = _FrameRecorder()
    spec = CellSpec(model="test-tiny", resolution=(4, 4), batch_size=1, precision="fp32", backend="eager")
    request = CellRequest(spec, "cpu", Timing(**{**FAST_TIMING, "memory_iters": 1}), 10.0, None)
    baseline = cell.memory.baseline_mb(torch.device("cpu"))
    cell._memory_pass(recorder, lambda x: x, frames, request, torch.device("cpu"), baseline, 0.0)  # type: ignore[arg-type]
    assert recorder.preprocessed == [0, 1, 2]
