"""`segbench run --search` (issue 31): each rule prunes on constructed records and refuses when the measured cells
contradict it; a real search records pruned cells with rule and evidence, resumes after Ctrl-C without measuring a cell
twice, and `--retry-pruned` measures exactly the pruned cells."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from segbench.errors import SegbenchError
from segbench.report.compare import compare_runs
from segbench.report.exports import render_csv
from segbench.results import store as results
from segbench.results.runs import load_run
from segbench.results.search import accounting, screened_view, searched
from segbench.run.search import decide, screening_timing
from segbench.suite.schema import Timing, parse_suite
from segbench.suite.search_rules import (
    DOMINANCE,
    MEMORY_MONOTONE,
    RESOLUTION_MONOTONE,
    SCREENING,
    best_meeting,
    contradictions,
    needs_full_timing,
    promotion,
    prune_for,
)
from segbench.suite.targets import Targets
from tests.helpers import segbench

FPS_30 = Targets(fps=30)


def cell(side: int, batch: int = 1, backend: str = "eager", model: str = "m") -> dict[str, Any]:
    """A cell of the matrix not yet measured, as the search sees it."""
    return {
        "cell_id": f"{model}-{backend}-{side}-b{batch}",
        "model": model,
        "weights": None,
        "options": {},
        "resolution": [side, side],
        "batch_size": batch,
        "precision": "fp32",
        "backend": backend,
        "scenario": "offline",
    }


def measured(
    side: int,
    batch: int = 1,
    fps: float | None = 10.0,
    spread: float = 0.02,
    status: str = "ok",
    footprint: float | None = None,
    phase: str | None = None,
    **axes: Any,
) -> dict[str, Any]:
    """A measured cell: achieved FPS `fps` with a 95 % interval of ± `spread` of it (the end-to-end median's)."""
    record = {**cell(side, batch, **axes), "status": status}
    if status == "ok" and fps is not None:
        median = batch * 1000.0 / fps
        record |= {
            "latency_ms": {"median": median},
            "fps": fps,
            "end_to_end_fps": fps,
            "end_to_end_ms": {"median": median, "ci95": [median * (1 - spread), median * (1 + spread)]},
        }
    if footprint is not None:
        record["memory_mb"] = {"rss_peak": 500.0 + footprint, "baseline": 500.0}
    if phase:
        record["search"] = {"phase": phase}
    return record


def prune(target: dict[str, Any], records: list[dict[str, Any]], targets: Targets = FPS_30) -> Any:
    rules_off = contradictions(records, targets, [])
    return prune_for(target, records, targets, rules_off, best_meeting(records, targets))


# ---- resolution-monotone ----------------------------------------------------------------------------------------


def test_resolution_monotone_prunes_larger_resolutions_of_a_clear_miss_with_its_evidence() -> None:
    small = measured(16, fps=10.0)
    found = prune(cell(32), [small])
    assert found is not None and found.rule == RESOLUTION_MONOTONE
    assert found.evidence[0]["cell_id"] == small["cell_id"]
    assert found.evidence[0]["figures"]["achieved_fps"] == 10.0
    assert "cannot meet 30 FPS end to end" in found.reason and "measured 10.0 FPS end to end" in found.reason
    assert prune(cell(32, batch=2), [small]) is None  # another batch: no evidence
    assert prune(cell(8), [small]) is None  # fewer pixels may well be faster


def test_resolution_monotone_refuses_while_the_interval_reaches_the_target() -> None:
    assert prune(cell(32), [measured(16, fps=29.0, spread=0.1)]) is None


def test_resolution_monotone_is_switched_off_where_a_larger_resolution_measured_faster() -> None:
    records = [measured(16, fps=10.0), measured(24, fps=20.0)]  # the larger one twice as fast: intervals apart
    rules_off = contradictions(records, FPS_30, [])
    assert rules_off.off("m", RESOLUTION_MONOTONE) and rules_off.off("m", DOMINANCE)
    assert "faster than" in rules_off.by_model["m"][RESOLUTION_MONOTONE]
    assert prune(cell(32), records) is None
    noisy = [measured(16, fps=10.0, spread=0.1), measured(24, fps=10.4, spread=0.1)]  # within noise: no contradiction
    assert not contradictions(noisy, FPS_30, []).off("m", RESOLUTION_MONOTONE)


# ---- memory-monotone ----------------------------------------------------------------------------------------------


def test_an_oom_prunes_every_cell_at_least_as_large_in_batch_and_pixels() -> None:
    oom = measured(24, batch=2, status="oom")
    for larger in (cell(24, 4), cell(32, 2), cell(32, 4)):
        found = prune(larger, [oom], Targets(fps=1))
        assert found is not None and found.rule == MEMORY_MONOTONE and found.evidence[0]["cell_id"] == oom["cell_id"]
        assert "ran out of memory" in found.reason
    assert prune(cell(16, 4), [oom], Targets(fps=1)) is None  # fewer pixels
    assert prune(cell(32, 1), [oom], Targets(fps=1)) is None  # a smaller batch


def test_a_clear_miss_of_the_memory_target_prunes_the_larger_cells() -> None:
    targets = Targets(memory="100MiB")
    found = prune(cell(32, 2), [measured(16, fps=50.0, footprint=400.0)], targets)
    assert found is not None and found.rule == MEMORY_MONOTONE and "memory ≤ 100 MiB" in found.reason
    assert prune(cell(32, 2), [measured(16, fps=50.0, footprint=98.0)], targets) is None  # within the noise margin


def test_memory_monotone_is_off_where_a_larger_cell_fitted_beside_an_oom() -> None:
    records = [measured(24, 2, status="oom"), measured(32, 2, fps=50.0)]
    assert contradictions(records, FPS_30, []).off("m", MEMORY_MONOTONE)
    assert prune(cell(32, 4), records, Targets(fps=1)) is None


# ---- dominance ----------------------------------------------------------------------------------------------------


def test_dominance_prunes_what_cannot_be_faster_than_the_best_cell_meeting_the_targets() -> None:
    best = measured(16, batch=2, fps=60.0, backend="eager-cl")
    slower = measured(16, batch=1, fps=40.0)  # meets 30 FPS, but its larger resolutions are slower than 40
    found = prune(cell(32), [best, slower])
    assert found is not None and found.rule == DOMINANCE
    assert [item["cell_id"] for item in found.evidence] == [slower["cell_id"], best["cell_id"]]
    assert "cannot be the Answer" in found.reason
    own = prune(cell(32, batch=2, backend="eager-cl"), [best, slower])  # the best's own larger resolution
    assert own is not None and own.rule == DOMINANCE


def test_dominance_refuses_when_the_interval_reaches_the_best_or_accuracy_is_measured() -> None:
    best = measured(16, batch=2, fps=60.0, backend="eager-cl")
    close = measured(16, batch=1, fps=60.0, spread=0.1)  # its interval reaches 66: it might be > 5 % faster
    assert prune(cell(32), [best, close]) is None
    slower = measured(16, batch=1, fps=40.0)
    with_accuracy = Targets(fps=30, min_agreement=99)
    assert contradictions([best, slower], with_accuracy, []).off("m", DOMINANCE)
    assert prune(cell(32), [best, slower], with_accuracy) is None  # nothing else prunes it: it is measured


# ---- screening ----------------------------------------------------------------------------------------------------


def test_screening_extends_only_cells_that_straddle_a_target_or_could_be_the_answer() -> None:
    straddles = measured(16, fps=30.5, spread=0.05, phase="screen")
    clear_miss = measured(16, batch=2, fps=10.0, phase="screen")
    leader = measured(16, batch=4, fps=90.0, phase="screen")
    trailing = measured(16, batch=4, fps=50.0, phase="screen", backend="eager-cl")
    records = [straddles, clear_miss, leader, trailing]
    best = best_meeting(records, FPS_30)
    assert "straddles 30 FPS end to end" in (needs_full_timing(straddles, FPS_30, best) or "")
    assert needs_full_timing(clear_miss, FPS_30, best) is None
    assert needs_full_timing(leader, FPS_30, best) == "it is the Answer so far"
    assert needs_full_timing(trailing, FPS_30, best) is None  # 50 FPS at most: not the Answer, clearly meets
    timed = measured(16, batch=4, fps=90.0, phase="extend")
    assert needs_full_timing(timed, FPS_30, best) is None  # timed in full once: never again


def test_screening_is_off_for_a_model_whose_full_timing_fell_outside_its_screening_interval() -> None:
    screen = measured(16, fps=10.0, phase="screen")
    full = measured(16, fps=20.0, phase="extend")
    assert contradictions([full], FPS_30, [screen]).off("m", SCREENING)
    agreeing = measured(16, fps=10.1, phase="extend")
    assert not contradictions([agreeing], FPS_30, [screen]).off("m", SCREENING)


def test_a_cell_promotes_its_own_screening_as_the_search_would_extend_it() -> None:
    """In its process a screened cell sees only the Answer so far: the first cell meeting the targets leads (and is
    timed in full), one overlapping the leader is, one clearly behind it or clearly missing a target is not."""
    leader = measured(16, batch=4, fps=90.0, phase="extend")
    assert promotion(measured(16, fps=90.0), FPS_30, None) == "it is the Answer so far"
    assert promotion(measured(16, batch=2, fps=88.0), FPS_30, leader) == (
        "its interval overlaps the Answer so far (m 16x16 b4 fp32 eager)"
    )
    assert promotion(measured(16, batch=2, fps=50.0), FPS_30, leader) is None
    assert promotion(measured(16, batch=2, fps=10.0), FPS_30, leader) is None
    assert "straddles 30 FPS" in (promotion(measured(16, batch=2, fps=31.0), FPS_30, leader) or "")


def _promoted(fps_screen: float, fps_full: float, wall_s: float, screen_s: float, full_s: float) -> dict[str, Any]:
    """A cell's record as the runner writes it after the cell promoted its screening in its own process."""
    screen = measured(16, fps=fps_screen)
    outcome = {**measured(16, fps=fps_full), "wall_s": wall_s}
    screening = {"promoted": "it is the Answer so far", "passes_s": screen_s, "full_passes_s": full_s}
    screening["figures"] = {key: screen[key] for key in ("latency_ms", "fps", "end_to_end_ms", "end_to_end_fps")}
    return searched({**outcome, "screening": screening}, {"phase": "screen", "why": "no rule prunes it yet"})


def test_a_promoted_screening_is_one_extend_line_checked_against_its_screening_and_counted_once() -> None:
    record = _promoted(fps_screen=20.0, fps_full=20.2, wall_s=4.0, screen_s=0.5, full_s=2.0)
    assert record["search"]["phase"] == "extend" and record["search"]["in_process"] and "screening" not in record
    view = screened_view(record)
    assert view is not None and view["end_to_end_fps"] == 20.0 and view["search"] == {"phase": "screen"}
    assert not contradictions([record], FPS_30, [view]).off("m", SCREENING)
    wrong = _promoted(fps_screen=10.0, fps_full=20.0, wall_s=4.0, screen_s=0.5, full_s=2.0)
    assert contradictions([wrong], FPS_30, [screened_view(wrong)]).off("m", SCREENING)  # type: ignore[list-item]
    # Screened only: 1.5 s wall with 0.5 s of screening passes, which in full take 4x as long (2.0 / 0.5).
    only_outcome = {**measured(16, batch=2, fps=10.0), "wall_s": 1.5, "screening": {"promoted": None, "passes_s": 0.5}}
    only = searched(only_outcome, {"phase": "screen", "why": "no rule prunes it yet"})
    figures = accounting([record, only])
    assert figures["spent_s"] == 5.5 and figures["exhaustive_estimate_s"] == 3.5 + 3.0
    assert (figures["timed_in_full"], figures["screened_only"]) == (1, 1)


def test_a_screening_timing_is_a_quarter_and_never_asks_more_than_the_suite() -> None:
    timing = Timing(min_iters=3, max_iters=20, min_time_s=2.0, max_time_s=8.0)
    short = screening_timing(timing)
    assert short.min_time_s == 0.5 and short.max_time_s == 2.0 and short.min_iters <= timing.min_iters


def test_decide_orders_cheapest_resolution_first_and_re_measures_a_prune_whose_rule_fell() -> None:
    cells = [cell(32), cell(16), cell(24)]
    first = decide(cells, [], FPS_30)
    assert first.next is not None and first.next.cell_id == cell(16)["cell_id"] and first.next.phase == "screen"
    records = [measured(16, fps=10.0, phase="screen")]
    step = decide(cells, records, FPS_30)
    assert {p.cell_id for p in step.prunes} == {cell(24)["cell_id"], cell(32)["cell_id"]} and step.next is None
    pruned = [{**cell(24), "status": "pruned", "search": step.prunes[0].to_search()}]
    contradicted = [*records, *pruned, measured(32, fps=20.0)]  # measured faster: the rule is off, 24 is measured
    again = decide(cells, contradicted, FPS_30)
    assert again.next is not None and again.next.cell_id == cell(24)["cell_id"]
    assert again.rules_off.off("m", RESOLUTION_MONOTONE)


def test_a_search_without_targets_is_one_line_naming_the_fix() -> None:
    data = {"name": "t", "models": ["fast-scnn"], "resolutions": [64], "search": True}
    try:
        parse_suite(data, "suite.yaml")
    except SegbenchError as exc:
        assert str(exc) == (
            "suite.yaml: search: a search needs targets: add a targets: block (e.g. targets: {fps: 30}) or pass "
            "--target-fps 30"
        )
    else:
        raise AssertionError("a search without targets was accepted")


# ---- a real search through the CLI --------------------------------------------------------------------------------


def _search_suite(write_suite: Callable[..., Path], sleep_ms: float) -> Path:
    """Each forward sleeps: batch 1 is 1000 / sleep_ms FPS and batch 4 four times that, at any resolution."""
    return write_suite(
        models=[{"name": "test-tiny", "options": {"sleep_ms": sleep_ms}}],
        resolutions=[16, 32],
        batch_sizes=[1, 4],
        targets={"fps": 30},
        search=True,
    )


def _lines(run_dir: Path) -> list[dict[str, Any]]:
    return results.read_records(run_dir, latest_only=False)


def _run_dir(out: Path) -> Path:
    [run_dir] = [path for path in out.iterdir() if path.is_dir()]
    return run_dir


def test_a_search_prunes_with_evidence_reports_it_and_retry_pruned_runs_exactly_those(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = segbench("run", str(_search_suite(write_suite, 50.0)), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = _run_dir(out)
    latest = {r["cell_id"]: r for r in results.read_records(run_dir)}
    pruned = [r for r in latest.values() if r["status"] == "pruned"]
    assert len(pruned) == 2, [(r["resolution"], r["batch_size"], r["status"]) for r in latest.values()]
    measured_ids = {r["cell_id"] for r in latest.values() if r["status"] == "ok"}
    for record in pruned:
        assert record["search"]["rule"] in (RESOLUTION_MONOTONE, DOMINANCE) and record["search"]["reason"]
        assert {item["cell_id"] for item in record["search"]["evidence"]} <= measured_ids
    assert results.read_meta(run_dir)["search"]["pruned"] == 2
    # The leader (batch 4 at 16x16) is timed in full in its screening's own process: one line, one process.
    [leader] = [r for r in latest.values() if r["status"] == "ok" and r["batch_size"] == 4]
    assert leader["search"]["in_process"] and leader["search"]["screen"]["figures"]["end_to_end_fps"] > 30
    assert [r["cell_id"] for r in _lines(run_dir)].count(leader["cell_id"]) == 1
    markdown = tmp_path / "report.md"
    assert segbench("report", str(run_dir), "--format", "md", "--output", str(markdown)).returncode == 0
    text = markdown.read_text()
    assert "The Answer came from a search" in text and "### Cells the search pruned" in text
    assert "device-seconds spent against an estimated" in text
    html = tmp_path / "report.html"
    assert segbench("report", str(run_dir), "--output", str(html)).returncode == 0
    assert 'id="pruned"' in html.read_text()
    frame = pd.read_csv(io.StringIO(render_csv(load_run(run_dir))))
    rows = frame[frame["status"] == "pruned"]
    assert len(rows) == 2 and set(rows["search.rule"]) <= {RESOLUTION_MONOTONE, DOMINANCE}
    assert all(json.loads(text) for text in rows["search.evidence"])
    assert "2 cell(s) pruned by a search in A and 2 in B are left out" in compare_runs(run_dir, run_dir).pruned_note
    before = _lines(run_dir)
    again = segbench("run", "--resume", str(run_dir), "--retry-pruned")
    assert again.returncode == 0, again.stdout + again.stderr
    new = _lines(run_dir)[len(before) :]
    assert sorted(r["cell_id"] for r in new) == sorted(r["cell_id"] for r in pruned)
    assert all(r["status"] == "ok" for r in new)


def _as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def test_a_search_resumed_after_ctrl_c_measures_no_cell_twice(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "segbench", "run", str(_search_suite(write_suite, 50.0)), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("*/results.jsonl")):
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)  # the first cell is recorded; the next one is in flight
        _, stderr = process.communicate(timeout=60)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 130, stderr
    run_dir = _run_dir(out)
    first = [(r["cell_id"], (r.get("search") or {}).get("phase")) for r in _lines(run_dir) if r["status"] != "pruned"]
    resumed = segbench("run", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    lines = _lines(run_dir)
    runs = Counter((r["cell_id"], (r.get("search") or {}).get("phase")) for r in lines if r["status"] != "pruned")
    assert all(count == 1 for count in runs.values()), runs
    assert set(first) <= set(runs) and len(runs) > len(first)  # the resume went on from where the stop left it
    latest = results.read_records(run_dir)
    assert len(latest) == 4 and {r["status"] for r in latest} <= {"ok", "pruned"}
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "complete"
