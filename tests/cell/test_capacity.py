"""The capacity scenario: N cameras on their own clocks, drops and latency judged by the schedule, the serving
policies (replicas, a dynamic batcher) giving the N arithmetic predicts for a model whose service time is known, and
a search whose N is confirmed with N + 1 shown to fail."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from segbench.cell.capacity import (
    Arrival,
    CapacityOutcome,
    Dispatch,
    MemoryFit,
    arrival_plan,
    capacity_search,
    find_max_cameras,
)
from segbench.cell.stream import Criterion
from segbench.data.sources import MovingScene
from segbench.models import create_model
from segbench.models.registry import load_plugin
from segbench.suite.schema import CapacityConfig
from tests.helpers import TESTS_DIR

CPU = torch.device("cpu")
PACED_PLUGIN = str(TESTS_DIR / "capacity_models.py")
NO_BUDGET = MemoryFit(None, None, 0.0, None)


def test_uniform_phases_spread_cameras_over_the_frame_interval() -> None:
    plan = arrival_plan(4, CapacityConfig(camera_fps=25), 8)
    assert [round(due * 1000) for due, _, _ in plan] == [0, 10, 20, 30, 40, 50, 60, 70]
    assert [camera for _, _, camera in plan] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert all(round((deadline - due) * 1000) == 40 for due, deadline, _ in plan)  # the camera's next frame


@pytest.mark.parametrize("arrival", ["jitter", "poisson"])
def test_jitter_and_poisson_keep_each_camera_in_order_and_repeat(arrival: str) -> None:
    config = CapacityConfig(camera_fps=25, arrival=arrival, jitter_ms=5)
    plan = arrival_plan(3, config, 300)
    assert plan == arrival_plan(3, config, 300)  # seeded
    for camera in range(3):
        dues = [due for due, _, c in plan if c == camera]
        assert dues == sorted(dues)
    gaps = [b - a for (a, _, _), (b, _, _) in zip(plan, plan[1:])]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 75, rel=0.25)  # 3 cameras x 25 FPS on average


def test_a_frame_is_dropped_by_its_schedule_not_by_the_queue() -> None:
    """Put on an empty queue and taken at once, a frame whose camera's next frame was already due is dropped: the
    producer was late, and the camera has moved on."""
    outcome, failed = CapacityOutcome(1, 25.0), threading.Event()
    dispatch = Dispatch(outcome, failed)
    now = time.perf_counter()
    frame = torch.zeros(8, 8, 3, dtype=torch.uint8)
    dispatch.put(Arrival(0, due=now - 0.05, deadline=now - 0.01, issued=now, frame=frame))  # next frame 10 ms ago
    dispatch.put(Arrival(0, due=now, deadline=now + 10, issued=now, frame=frame))
    dispatch.close()
    batch = dispatch.take(4, 0.0)
    assert batch is not None and [arrival.due for arrival, _ in batch] == [now]
    assert outcome.offered == 2 and outcome.dropped == 1 and failed.is_set()


def _fake_trial(passes: set[tuple[int, int]] | None = None, limit: int = 5):
    """Trials that keep up up to `limit` cameras, except the (N, attempt) pairs in `passes` flipped to fail."""
    attempts: dict[int, int] = {}

    def trial(cameras: int) -> CapacityOutcome:
        attempts[cameras] = attempts.get(cameras, 0) + 1
        outcome = CapacityOutcome(cameras, 25.0, offered=100, wall_s=1.0)
        ok = cameras <= limit and (cameras, attempts[cameras]) not in (passes or set())
        outcome.latencies_ms = [10.0] * 100
        if not ok:
            outcome.dropped = 3
        return outcome

    return trial


CRITERION = Criterion(latency_bound_ms=40.0, min_frames=100, min_duration_s=0.1, confirmations=3)


def test_search_confirms_n_and_keeps_the_failing_n_plus_one() -> None:
    result = find_max_cameras(_fake_trial(), CRITERION, 25.0, estimate=2, max_cameras=64, budget_s=600)
    assert result["max_cameras"] == 5 and result["confirmed"] and result["confirmed_trials"] == 3
    assert result["failing_cameras"] == 6 and result["failed_on"] == "drops"
    confirms = [row for row in result["trials"] if row["phase"] == "confirm"]
    assert [row["cameras"] for row in confirms] == [5, 5, 5] and all(row["passed"] for row in confirms)
    assert "N = 6 failed on drops" in result["how"]


def test_a_failed_confirmation_makes_n_the_failing_one() -> None:
    flaky = _fake_trial(passes={(5, 3)})  # N = 5 passes its search trial and first confirmation, then fails
    result = find_max_cameras(flaky, CRITERION, 25.0, estimate=5, max_cameras=64, budget_s=600)
    assert result["max_cameras"] == 4 and result["failing_cameras"] == 5


def test_the_cap_and_the_budget_are_said() -> None:
    capped = find_max_cameras(_fake_trial(limit=100), CRITERION, 25.0, estimate=4, max_cameras=8, budget_s=600)
    assert capped["max_cameras"] == 8 and capped["capped"] and capped["failing_cameras"] is None
    broke = find_max_cameras(_fake_trial(), CRITERION, 25.0, estimate=1, max_cameras=64, budget_s=3)
    assert broke["max_cameras"] is None and "budget" in broke["max_cameras_why"]
    shaky = find_max_cameras(_fake_trial(passes={(1, 2)}, limit=1), CRITERION, 25.0, 1, 64, 600)
    assert shaky["max_cameras"] is None and "one camera passed 1 of 2 trials" in shaky["max_cameras_why"]


def test_replica_that_does_not_fit_the_card_ends_the_search_with_budget() -> None:
    fit = MemoryFit(footprint_mb=300.0, budget_mb=800.0, context_mb=150.0, target="tiny-card")
    fit.check(2)  # 150 + 2 x 300 = 750 fits; the third is named
    load_plugin(PACED_PLUGIN)
    adapter = create_model("test-paced")
    adapter.build(CPU)
    config = CapacityConfig(policies=["replicas"], replicas=3, warmup_s=0)
    result = capacity_search(config, adapter, adapter.forward, lambda a: a.forward, [], CPU, 10.0, 60, fit)
    replicas = result["policies"]["replicas"]
    assert replicas["status"] == "budget" and replicas["end_reason"] == "budget" and not replicas["trials"]
    assert "replica 3 does not fit tiny-card's 800 MiB" in replicas["max_cameras_why"]
    assert result["max_cameras"] is None


@pytest.fixture(scope="module")
def paced():
    """10 ms per call plus 2 ms per extra frame in a batch (a sleep: the tests hold on a busy machine)."""
    load_plugin(PACED_PLUGIN)
    adapter = create_model("test-paced", options={"base_ms": 10.0, "per_extra_ms": 2.0})
    adapter.build(CPU)
    return adapter


@pytest.mark.alone
def test_policies_serve_the_cameras_arithmetic_predicts(paced) -> None:
    """At 25 FPS (40 ms between a camera's frames; a frame may wait one more, so a hiccup of the busy machine is no
    drop) two replicas of a 10 ms model serve floor(2 x 40 / 10.x) = 7 cameras; a batcher of up to 4 frames (16 ms a
    batch: 250 frames/s) serves floor(250 / 25) - the boundary = 9. One worker would serve 3: the bounds fail a policy
    that does not run its replicas in parallel or does not batch."""
    config = CapacityConfig(
        camera_fps=25, duration_s=0.3, confirmations=2, warmup_s=0.1, max_cameras=16, max_batch=4,
        max_batch_delay_ms=5, latency_bound_ms=40, queue_size=2,
    )  # fmt: skip
    scene = MovingScene(32, 32).frames()
    pool = [next(scene) for _ in range(4)]
    prepare = lambda replica: replica.forward  # noqa: E731 (eager: the model's own forward)
    result = capacity_search(config, paced, paced.forward, prepare, pool, CPU, 11.0, 400, NO_BUDGET)
    replicas, batched = result["policies"]["replicas"], result["policies"]["batched"]
    assert 6 <= replicas["max_cameras"] <= 8, replicas["how"]
    assert 8 <= batched["max_cameras"] <= 10, batched["how"]
    for policy in (replicas, batched):
        assert policy["confirmed"] and policy["failing_cameras"] == policy["max_cameras"] + 1
        assert policy["failed_on"] in ("drops", "latency")
        failing = [row for row in policy["trials"] if row["cameras"] == policy["failing_cameras"]]
        assert failing and not failing[-1]["passed"]
    assert max(int(size) for row in batched["trials"] for size in row["batch_sizes"]) > 1  # batches formed
    assert replicas["knobs"]["replicas"] == 2 and batched["knobs"]["max_batch"] == 4
    row = replicas["trials"][0]
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] and row["per_camera_fps"] == pytest.approx(25, rel=0.3)
    assert result["max_cameras"] == max(replicas["max_cameras"], batched["max_cameras"])
