"""The stream section of the reports: the criterion each cell was judged by, its trials, and old records."""

from __future__ import annotations

from pathlib import Path

import pytest

from segbench.report import stream
from segbench.report.exports import write_report
from segbench.report.summary import stream_text
from segbench.results import store as results
from segbench.results.metrics import METRICS
from segbench.results.runs import load_run
from tests.helpers import REPO
from tests.report.test_answer import build_stream_run

OLD_RUN = REPO / "results" / "stream-dashcam-20261126T002553Z"


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stream_run(tmp_path_factory)


# The stream run it reads searches a sustainable camera rate: a timing, made with nothing beside it.
@pytest.mark.alone
def test_record_and_report_show_the_criterion_and_the_trials(stream_run: Path, tmp_path: Path) -> None:
    [record] = results.read_records(stream_run)
    assert record["status"] == "ok", record.get("traceback")
    criterion = record["stream"]["criterion"]
    assert criterion["percentile"] == "p90" and criterion["latency_bound_ms"] == 500 and criterion["confirmations"] == 2
    assert criterion["min_frames"] == 10 and "p90 latency from scheduled arrival ≤ 500 ms" in criterion["text"]
    trial = record["stream"]["trials"][0]
    for key in ("target_fps", "n", "latency_quantile_ms", "issue_delay_ms", "service_ms", "queue_wait_ms"):
        assert trial[key] is not None, key
    assert trial["issue_delay_ms"]["n"] == trial["service_ms"]["n"] == trial["n"]
    assert {"frames_dropped", "passed", "phase"} <= trial.keys()
    assert "p90 from schedule" in stream_text(record) and "(bound 500.0, n = " in stream_text(record)

    html = write_report(stream_run, tmp_path / "stream.html").read_text()
    markdown = write_report(stream_run, tmp_path / "stream.md", fmt="md").read_text()
    for page in (html, markdown):
        assert "Stream trials" in page and "p90 latency from scheduled arrival ≤ 500 ms" in page
        assert "after 2 consecutive passing trials" in page and "issue delay p99 ms" in page
    assert html.count('id="stream-trials-table"') == 1


# The stream run it reads searches a sustainable camera rate: a timing, made with nothing beside it.
@pytest.mark.alone
def test_a_search_that_confirmed_no_rate_says_why_everywhere(stream_run: Path) -> None:
    [record] = results.read_records(stream_run)
    why = "the search budget (1 s) ran out before 2 consecutive passing trials at 3.00 FPS (10 s each)"
    record["stream"] = {**record["stream"], "max_sustainable_fps": None, "max_sustainable_fps_why": why}
    assert METRICS["stream_fps"].value(record) is None and METRICS["stream_fps"].missing_reason(record) == why
    assert "no sustainable rate" in stream_text(record)


def test_the_committed_run_from_before_the_criterion_still_renders(tmp_path: Path) -> None:
    """results/stream-dashcam-20261126T002553Z has search and confirmation rows with drops only: its trials show,
    the figures they lack as not measured, and its criterion is named as the old one."""
    run = load_run(OLD_RUN)
    frame = stream.trials(run)
    assert len(frame) == 15 and frame["latency_quantile_ms"].isna().all() and frame["issue_delay_p99_ms"].isna().all()
    assert frame["passed"].tolist().count(False) == 7
    lines = stream.criteria(run)
    assert len(lines) == 2 and all(stream.LEGACY_CRITERION in line for line in lines)
    markdown = write_report(OLD_RUN, tmp_path / "old.md", fmt="md").read_text()
    assert "### Stream trials" in markdown and "| confirm | 3.72 | – |" in markdown
    assert "Stream trials" in write_report(OLD_RUN, tmp_path / "old.html").read_text()
