"""The stream scenario: frames on a clock, a bounded queue, drops when the pipeline falls behind, latency from the
schedule, and a search that reports only a rate that passed its latency criterion k times in a row."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from segbench.cell.stream import CONFIRM_STEP, Criterion, StreamOutcome, find_max_rate, run_stream
from segbench.data.sources import MovingScene
from segbench.errors import SuiteError
from segbench.models import create_model
from segbench.models.registry import load_plugin
from segbench.run.dryrun import estimate_wall_time, plan_cells
from segbench.run.runner import run_suite
from segbench.suite.matrix import expand
from segbench.suite.schema import load_suite
from tests.helpers import FAULT_PLUGIN

CPU = torch.device("cpu")
LOOSE = Criterion(latency_bound_ms=60_000, min_frames=1)  # judges drops only: these tests are about the queue


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


def _stream(
    adapter,
    rate: float,
    seconds: float,
    delay_s: float = 0.0,
    overlap: bool = False,
    criterion: Criterion | None = None,
):
    def forward(inputs: torch.Tensor) -> torch.Tensor:
        if delay_s:
            time.sleep(delay_s)
        return adapter.forward(inputs)

    return run_stream(
        adapter,
        forward,
        MovingScene(64, 128).frames(),
        rate,
        seconds,
        CPU,
        queue_size=2,
        overlap=overlap,
        criterion=criterion,
    )


def test_low_rate_keeps_up_with_no_drops(tiny) -> None:
    outcome = _stream(tiny, rate=10, seconds=1.5)
    result = outcome.to_dict(LOOSE)
    assert result["frames_dropped"] == 0 and result["keeps_up"]
    assert result["frames_processed"] == result["frames_offered"] == 15
    assert result["latency_ms"]["n"] == 15  # one latency per frame, from its arrival time
    assert result["sustained_fps"] == pytest.approx(10, rel=0.25)


@pytest.mark.parametrize("overlap", [False, True])
def test_rate_far_above_capacity_drops_frames(tiny, overlap: bool) -> None:
    outcome = _stream(tiny, rate=400, seconds=1.0, delay_s=0.04, overlap=overlap)  # at most ~25 frames/s
    result = outcome.to_dict(LOOSE)
    assert result["frames_dropped"] > 0 and not result["keeps_up"]
    assert result["sustained_fps"] < 40 < 400
    assert result["drop_pct"] > 50
    assert result["queue_depth"]["max"] >= 1


def test_max_rate_search_on_a_real_pipeline_stays_below_its_ceiling(tiny) -> None:
    """A frame takes at least 100 ms, so no rate at or above 10 FPS can have each class map ready within its frame
    interval; whatever is reported lies below every rate that failed."""
    criterion = Criterion(quantile=0.9, min_frames=10, min_duration_s=0.5, confirmations=1, budget_s=30)
    search = find_max_rate(
        lambda rate: _stream(tiny, rate, 0.5, delay_s=0.1, criterion=criterion), criterion, estimate_fps=20, steps=3
    )
    failed = [t["target_fps"] for t in search["trials"] if not t["passed"]]
    assert failed and all(t["n"] >= 1 for t in search["trials"])
    best = search["max_sustainable_fps"]
    assert best is None or (best < 10 and best < min(failed))


def test_arrival_is_stamped_at_the_scheduled_time(tiny) -> None:
    """A producer late for every frame (its frame read takes 40 ms against a 20 ms interval) shows as issue delay,
    and each frame's latency runs from its schedule: issue delay + queue wait + service."""
    read_s = 0.04

    def slow_frames():
        for frame in MovingScene(64, 128).frames():
            time.sleep(read_s)
            yield frame

    outcome = run_stream(tiny, tiny.forward, slow_frames(), 50, 0.16, CPU)  # 8 frames due 20 ms apart
    assert outcome.processed == outcome.offered == 8 and outcome.dropped == 0
    for index in range(8):
        # frame i is read after frame i-1 was put, so it is put >= 40 ms * i after the start, due 20 ms * i after it
        assert outcome.issue_delays_ms[index] >= (read_s - 0.02) * 1000 * index - 0.5
        parts = outcome.issue_delays_ms[index] + outcome.queue_waits_ms[index] + outcome.service_ms[index]
        assert outcome.latencies_ms[index] == pytest.approx(parts, abs=1e-6)
        assert outcome.latencies_ms[index] >= outcome.issue_delays_ms[index]
    result = outcome.to_dict(LOOSE)
    assert result["issue_delay_ms"]["n"] == 8 and result["issue_delay_ms"]["median"] > 0
    assert result["latency_ms"]["median"] >= result["issue_delay_ms"]["median"]


def _fake_trial(service_ms: Callable[[float], float], frames: int = 100) -> Callable[[float], StreamOutcome]:
    """A deterministic pipeline: each frame takes service_ms(rate); above capacity every frame waits longer than the
    last (a queue that grows), below it none waits."""

    def trial(rate: float) -> StreamOutcome:
        interval, service = 1000.0 / rate, service_ms(rate)
        latencies = [service + max(0.0, service - interval) * index for index in range(frames)]
        return StreamOutcome(rate, frames / rate, offered=frames, latencies_ms=latencies, wall_s=frames / rate)

    return trial


def test_the_search_reports_the_highest_rate_meeting_the_bound() -> None:
    """100 ms a frame meets the frame-interval bound up to 10 FPS: bisection from an estimate of 12 gets within its
    resolution below 10, and k confirmations there all pass."""
    criterion = Criterion(confirmations=3, budget_s=10_000)
    steps, estimate = 6, 12.0
    search = find_max_rate(_fake_trial(lambda rate: 100.0), criterion, estimate, steps)
    best = search["max_sustainable_fps"]
    resolution = 1.5 * estimate / 2 ** (steps - 1)
    assert best is not None and 10 - resolution <= best <= 10
    confirms = [t for t in search["trials"] if t["phase"] == "confirm"]
    assert len(confirms) == search["confirmed_trials"] == 3
    assert all(t["passed"] and t["target_fps"] == best and t["n"] == 100 for t in confirms)
    assert all(t["target_fps"] > best for t in search["trials"] if not t["passed"])


def test_an_estimate_far_too_high_is_halved_until_a_rate_passes() -> None:
    """The offline estimate said 1,000 FPS, the pipeline sustains 10 (100 ms a frame): two bisection steps both fail,
    and the search halves until a rate passes instead of stepping down 10 % at a time from a failed one (which, in a
    busy CI run, gave up after five confirmations at 805 FPS)."""
    search = find_max_rate(_fake_trial(lambda rate: 100.0), Criterion(confirmations=3, budget_s=10_000), 1000.0, 2)
    best = search["max_sustainable_fps"]
    assert best is not None and best <= 10 and search["confirmed_trials"] == 3
    assert all(t["target_fps"] > best for t in search["trials"] if not t["passed"])


def test_a_rate_that_fails_a_confirmation_is_never_reported() -> None:
    """Above 12 FPS the pipeline passes every other trial (as 3.72 FPS passed once in the dashcam run after three
    failed confirmations): a rate there that passes once is not reported, since it cannot pass k = 3 in a row; the
    search steps down 10 % at each failure until a rate does."""
    calls: dict[float, int] = {}

    def flaky(rate: float) -> StreamOutcome:
        calls[rate] = calls.get(rate, 0) + 1
        fails = rate > 12 and calls[rate] % 2 == 0
        return _fake_trial(lambda r: 2000.0 / r if fails else 500.0 / r)(rate)

    search = find_max_rate(flaky, Criterion(confirmations=3, budget_s=10_000), estimate_fps=10, steps=4)
    best = search["max_sustainable_fps"]
    assert best is not None and best <= 12 and search["confirmed_trials"] == 3
    failed = [t["target_fps"] for t in search["trials"] if not t["passed"]]
    assert failed and best < min(failed)
    passed_once = {t["target_fps"] for t in search["trials"] if t["passed"]} - {best}
    assert any(rate > best for rate in passed_once)  # passing once was not enough
    assert [(t["phase"], t["target_fps"], t["passed"]) for t in search["trials"][-3:]] == [("confirm", best, True)] * 3
    confirm_rates = sorted({t["target_fps"] for t in search["trials"] if t["phase"] == "confirm"}, reverse=True)
    assert all(lower == pytest.approx(higher * CONFIRM_STEP) for higher, lower in zip(confirm_rates, confirm_rates[1:]))


def test_the_search_stays_within_its_budget_and_says_why_nothing_was_reported() -> None:
    """Trials of 100 frames at ~10 FPS take 10 s each: a 35 s budget fits the first search trial, not three
    confirmations after it."""
    criterion = Criterion(confirmations=3, budget_s=35)
    search = find_max_rate(_fake_trial(lambda rate: 200.0), criterion, estimate_fps=12, steps=6)
    assert search["max_sustainable_fps"] is None and search["search_s"] <= 35
    assert "search budget (35 s) ran out before 3 consecutive passing trials" in search["max_sustainable_fps_why"]


def test_a_trial_that_has_failed_stops_early(tiny) -> None:
    """Enough frames over the bound (late or dropped: a drop never met its bound) to put the percentile over it end a
    search trial: its verdict is known and the rest would only spend the budget."""
    assert Criterion().late_frames_that_fail(100) == 2  # p99 of 100 frames: two over the bound put it over
    assert Criterion(quantile=0.9).late_frames_that_fail(10) == 2
    criterion = Criterion(min_frames=200, min_duration_s=0.0)

    def slow(inputs: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)  # 50 ms a frame against a 10 ms interval
        return tiny.forward(inputs)

    frames = MovingScene(64, 128).frames()
    dropped = run_stream(tiny, slow, frames, 100, 0.0, CPU, queue_size=2, criterion=criterion)
    assert "dropped" in str(dropped.stopped_early) and dropped.dropped >= 1 and dropped.offered < 200
    late = run_stream(tiny, slow, frames, 100, 0.0, CPU, queue_size=1000, criterion=criterion)
    assert late.dropped == 0 and "frames over the latency bound" in str(late.stopped_early) and late.offered < 200
    assert not late.verdict(criterion)[0] and "> bound 10.0 ms" in str(late.verdict(criterion)[1])
    full = run_stream(tiny, slow, frames, 100, 0.1, CPU, queue_size=2, criterion=criterion, stop_early=False)
    assert full.offered == 200 and full.stopped_early is None  # a fixed-rate trial runs to its end


def test_stream_suite_runs_a_cell_and_records_the_stream(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """A fixed rate runs one trial of max(duration x rate, the percentile's 1 / (1 - q)) frames: 10 for p90."""
    stream = {"target_fps": 5, "duration_s": 1.0, "latency_percentile": "p90", "latency_bound_ms": 5000}
    suite_path = write_suite(scenario="stream", stream=stream)
    run_dir = run_suite(load_suite(suite_path), suite_path, tmp_path / "results").run_dir
    [record] = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record.get("traceback")
    assert record["scenario"] == "stream" and record["stream"]["keeps_up"]
    assert record["stream"]["frames_offered"] == 10 and record["stream"]["criterion"]["min_frames"] == 10
    [trial] = record["stream"]["trials"]
    assert trial["phase"] == "fixed" and trial["passed"] and trial["n"] == 10 and trial["latency_bound_ms"] == 5000


def test_missing_or_corrupt_video_is_one_line(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"stream.source: video file not found") as caught:
        load_suite(write_suite(scenario="stream", stream={"source": "nope.mp4"}))
    assert len(str(caught.value).splitlines()) == 1
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    with pytest.raises(SuiteError, match=r"stream.source: cannot decode a frame"):
        load_suite(write_suite(scenario="stream", stream={"source": "bad.mp4"}))
    with pytest.raises(SuiteError, match=r"batch_sizes: the stream scenario processes one frame"):
        load_suite(write_suite(scenario="stream", batch_sizes=[2]))
    too_long = {"target_fps": "max", "search_budget_s": 900}
    with pytest.raises(SuiteError, match=r"stream.search_budget_s: the search \(900 s\) and its warm-up") as caught:
        load_suite(write_suite(scenario="stream", stream=too_long, timing={"timeout_s": 600}))
    assert len(str(caught.value).splitlines()) == 1
    with pytest.raises(SuiteError, match=r"stream.latency_percentile") as caught:
        load_suite(write_suite(scenario="stream", stream={"latency_percentile": "p98"}))
    assert len(str(caught.value).splitlines()) == 1


def test_the_dry_run_estimate_bounds_a_search_by_its_budget(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """A search costs at least k confirmations of duration_s and at most its budget (half the timeout by default)."""
    stream = {"target_fps": "max", "duration_s": 2.0, "confirmations": 2}
    searching = load_suite(write_suite(scenario="stream", stream=stream, timing={"timeout_s": 100}))
    fixed = load_suite(write_suite(scenario="stream", stream={"target_fps": 10, "duration_s": 1.0}))
    spans = {}
    for name, suite in (("search", searching), ("fixed", fixed)):
        estimate = estimate_wall_time(suite, plan_cells(suite, expand(suite)), tmp_path / "results")
        spans[name] = estimate.high_s - estimate.low_s - 2 * (suite.timing.max_time_s - suite.timing.min_time_s)
        spans[name + " basis"] = " ".join(estimate.basis)
    assert spans["search"] == pytest.approx(50 - 2 * 2.0)  # budget 100 / 2, less the 2 x 2 s the low end counts
    assert "2 confirmation trial(s) of at least 2 s, at most its 50 s budget" in spans["search basis"]
    assert spans["fixed"] == pytest.approx(0) and "a stream trial of 10 s" in spans["fixed basis"]  # 100 frames


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
        scenario="stream",
        stream={"target_fps": 5, "duration_s": 0.5, "min_frames": 3, "warmup_s": 0.4, "overlap": True},
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
