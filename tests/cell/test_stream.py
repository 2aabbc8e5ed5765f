"""The stream scenario: frames on a clock, a bounded queue, drops when the pipeline falls behind."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from segbench.cell.stream import StreamOutcome, confirm_rate, find_max_rate, run_stream
from segbench.data.sources import MovingScene
from segbench.errors import SuiteError
from segbench.models import create_model
from segbench.models.registry import load_plugin
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite
from tests.helpers import FAULT_PLUGIN

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    """A network whose compute is negligible, so the tests' sleeps set the pipeline's speed even on a busy machine."""
    load_plugin(FAULT_PLUGIN)
    adapter = create_model("test-tiny")
    adapter.build(CPU)
    with torch.inference_mode():  # warm up at the stream's shape, as a cell does before it streams
        for _ in range(3):
            adapter.postprocess(
                adapter.forward(adapter.preprocess(torch.zeros(1, 64, 128, 3, dtype=torch.uint8))), (64, 128)
            )
    return adapter


def _stream(adapter, rate: float, seconds: float, delay_s: float = 0.0, overlap: bool = False):
    def forward(inputs: torch.Tensor) -> torch.Tensor:
        if delay_s:
            time.sleep(delay_s)
        return adapter.forward(inputs)

    return run_stream(
        adapter, forward, MovingScene(64, 128).frames(), rate, seconds, CPU, queue_size=2, overlap=overlap
    )


def test_low_rate_keeps_up_with_no_drops(tiny) -> None:
    outcome = _stream(tiny, rate=10, seconds=1.5)
    result = outcome.to_dict()
    assert result["frames_dropped"] == 0 and result["keeps_up"]
    assert result["frames_processed"] == result["frames_offered"] == 15
    assert result["latency_ms"]["n"] == 15  # one latency per frame, from its arrival time
    assert result["sustained_fps"] == pytest.approx(10, rel=0.25)


@pytest.mark.parametrize("overlap", [False, True])
def test_rate_far_above_capacity_drops_frames(tiny, overlap: bool) -> None:
    outcome = _stream(tiny, rate=400, seconds=1.0, delay_s=0.04, overlap=overlap)  # at most ~25 frames/s
    result = outcome.to_dict()
    assert result["frames_dropped"] > 0 and not result["keeps_up"]
    assert result["sustained_fps"] < 40 < 400
    assert result["drop_pct"] > 50
    assert result["queue_depth"]["max"] >= 1


def test_max_rate_search_brackets_the_capacity(tiny) -> None:
    best, trials = find_max_rate(lambda rate: _stream(tiny, rate, 1.0, delay_s=0.1), estimate_fps=20, steps=4)
    # A frame takes at least 100 ms: 10 frames/s, plus the few a 2-deep queue absorbs in a 1 s trial.
    assert 3 < best < 15
    assert len(trials) == 4 and any(not t["keeps_up"] for t in trials)


def _outcome(rate: float, capacity: float) -> StreamOutcome:
    """What a 1 s trial at `rate` gives a pipeline of `capacity` frames/s: drops above it."""
    offered = int(rate)
    processed = min(offered, int(capacity))
    return StreamOutcome(rate, 1.0, offered=offered, dropped=offered - processed, latencies_ms=[10.0] * processed)


def test_a_confirmation_that_drops_steps_down_and_confirms_again() -> None:
    """The search's best rate (say 10) may drop frames when run again: the reported maximum is a rate whose own trial
    kept up."""
    rates: list[float] = []

    def trial(rate: float) -> StreamOutcome:
        rates.append(rate)
        return _outcome(rate, capacity=8.5)

    confirmed, outcome, tries = confirm_rate(trial, 10.0)
    assert confirmed == pytest.approx(8.1) and outcome is not None and outcome.keeps_up
    assert [t["keeps_up"] for t in tries] == [False, False, True] and rates == pytest.approx([10.0, 9.0, 8.1])
    nothing, last, tries = confirm_rate(lambda rate: _outcome(rate, capacity=0.5), 10.0, tries=3)
    assert nothing == 0.0 and last is not None and not last.keeps_up and len(tries) == 3


def test_stream_suite_runs_a_cell_and_records_the_stream(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite_path = write_suite(scenario="stream", stream={"target_fps": 5, "duration_s": 1.0})
    run_dir = run_suite(load_suite(suite_path), suite_path, tmp_path / "results").run_dir
    [record] = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record.get("traceback")
    assert record["scenario"] == "stream" and record["stream"]["keeps_up"]
    assert record["stream"]["frames_offered"] == 5


def test_missing_or_corrupt_video_is_one_line(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"stream.source: video file not found") as caught:
        load_suite(write_suite(scenario="stream", stream={"source": "nope.mp4"}))
    assert len(str(caught.value).splitlines()) == 1
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    with pytest.raises(SuiteError, match=r"stream.source: cannot decode a frame"):
        load_suite(write_suite(scenario="stream", stream={"source": "bad.mp4"}))
    with pytest.raises(SuiteError, match=r"batch_sizes: the stream scenario processes one frame"):
        load_suite(write_suite(scenario="stream", batch_sizes=[2]))


def test_warm_up_is_time_based_and_runs_the_overlap_path(tiny) -> None:
    from segbench.cell.stream import warm_stream

    for overlap in (False, True):
        warmup = warm_stream(tiny, tiny.forward, MovingScene(64, 128).frames(), CPU, seconds=0.3, overlap=overlap)
        assert warmup["seconds"] >= 0.3 and warmup["frames"] >= 1
    once = warm_stream(
        tiny, lambda x: (time.sleep(0.05), tiny.forward(x))[1], MovingScene(64, 128).frames(), CPU, seconds=0.0
    )
    assert once["frames"] == 1  # at least one frame, however short the time


def test_stream_cell_records_its_time_based_warm_up(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite_path = write_suite(
        scenario="stream", stream={"target_fps": 5, "duration_s": 0.5, "warmup_s": 0.4, "overlap": True}
    )
    [record] = run_suite(load_suite(suite_path), suite_path, tmp_path / "results").records
    assert record["status"] == "ok", record.get("traceback")
    assert record["stream"]["warmup"]["seconds"] >= 0.4 and record["stream"]["warmup"]["frames"] >= 1


@pytest.mark.gpu
def test_overlap_on_cuda_preprocesses_on_its_own_stream() -> None:
    load_plugin(FAULT_PLUGIN)
    device = torch.device("cuda", 0)
    adapter = create_model("test-tiny")
    adapter.build(device)
    streams: list[int] = []
    preprocess = adapter.preprocess

    def recording(images: torch.Tensor) -> torch.Tensor:
        streams.append(torch.cuda.current_stream(device).stream_id)
        return preprocess(images)

    adapter.preprocess = recording  # type: ignore[method-assign]
    default = torch.cuda.default_stream(device).stream_id
    outcome = run_stream(adapter, adapter.forward, MovingScene(64, 128).frames(), 20, 0.5, device, overlap=True)
    assert outcome.processed > 0 and streams and all(stream != default for stream in streams)
