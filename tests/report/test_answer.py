"""The deployment answer on real runs: verdicts against targets, the answer in HTML and Markdown, stream
results in every view, the metric catalogue against real records, and `segbench run`'s exit codes.

Targets are set from the run's own figures (never absolute times), so the tests hold on a busy machine.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.report.answer import answer
from segbench.report.exports import write_report
from segbench.report.plots import memory_vs_resolution
from segbench.results import store as results
from segbench.results.metrics import CATALOGUE, METRICS, interval, path_exists
from segbench.results.runs import load_run
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite
from segbench.suite.targets import Targets, verdict
from tests.helpers import FAST_TIMING, FAULT_PLUGIN

from .test_report import build_small_run, copy_run, parse


def build_stream_run(factory: pytest.TempPathFactory) -> Path:
    """One stream cell searching its highest sustainable rate (two short trials, then two confirmations)."""
    base = factory.getbasetemp() / "segbench-stream-run"
    marker = base / "run-dir.txt"
    if marker.is_file():
        return Path(marker.read_text())
    base.mkdir(exist_ok=True)
    suite = {
        "name": "stream",
        "device": "cpu",
        "plugins": [FAULT_PLUGIN],
        "models": ["test-tiny"],
        "resolutions": [32],
        "timing": FAST_TIMING,
        "roofline": {"measure_ceiling": False},
        "scenario": "stream",
        "stream": {
            "target_fps": "max",
            "duration_s": 0.5,
            "search_steps": 2,
            "latency_percentile": "p90",
            "latency_bound_ms": 500,
            "confirmations": 2,
        },
    }
    suite_path = base / "suite.yaml"
    suite_path.write_text(yaml.safe_dump(suite, sort_keys=False))
    run_dir = run_suite(load_suite(suite_path), suite_path, base / "results").run_dir
    marker.write_text(str(run_dir))
    return run_dir


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_run(tmp_path_factory)


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stream_run(tmp_path_factory)


def _splitting_fps(run_dir: Path) -> float:
    """An FPS target between the run's slowest ok cell and the fastest one's interval, so the fastest meets it clearly
    (not borderline) and the slowest misses it."""
    achieved = METRICS["achieved_fps"]
    ok = sorted((r for r in results.read_records(run_dir) if r["status"] == "ok"), key=achieved.value)
    slowest, fastest = achieved.value(ok[0]), achieved.value(ok[-1])
    assert slowest < fastest, (slowest, fastest)
    low = (interval(achieved, ok[-1]) or (fastest, fastest))[0]
    return statistics.mean([slowest, low if low > slowest else fastest])


def test_verdicts_on_a_real_run_meet_miss_and_unknown(small_run: Path) -> None:
    target = _splitting_fps(small_run)
    targets = Targets(fps=target, min_agreement=50)
    records = results.read_records(small_run)
    judged = {r["cell_id"]: verdict(r, targets) for r in records}
    for record in records:
        status = judged[record["cell_id"]].status
        if record["status"] == "ok":
            fps = METRICS["achieved_fps"].value(record)
            low = (interval(METRICS["achieved_fps"], record) or (fps, fps))[0]
            expected = "misses" if fps < target else "borderline" if low < target else "meets"
            assert status == expected, (
                record["precision"],
                fps,
                target,
                judged[record["cell_id"]].text,
            )
        elif record["status"] == "oom":
            assert status == "misses" and "ran out of memory" in judged[record["cell_id"]].text
        else:
            assert status == "unknown" and "ended error" in judged[record["cell_id"]].text
    statuses = {v.status for v in judged.values()}
    assert {"meets", "misses", "unknown"} <= statuses <= {"meets", "borderline", "misses", "unknown"}
    missed = next(v for r, v in zip(records, judged.values()) if r["status"] == "ok" and v.status == "misses")
    assert "achieved" in missed.text and "misses by" in missed.text  # which target, and by how much

    result = answer(load_run(small_run), targets)
    [tiny] = [m for m in result.models if m.model == "test-tiny"]
    fastest_meeting = max(
        (r for r in records if judged[r["cell_id"]].status == "meets"), key=lambda r: METRICS["achieved_fps"].value(r)
    )
    assert tiny.lines[0].startswith(
        f"Best: {fastest_meeting['resolution'][0]}x{fastest_meeting['resolution'][1]} batch "
        f"{fastest_meeting['batch_size']}"
    )
    unreachable = answer(load_run(small_run), Targets(fps=1e9))
    [tiny] = [m for m in unreachable.models if m.model == "test-tiny"]
    assert tiny.lines[0].startswith("No configuration meets every target. Nearest miss:")

    fidelity_unknown = verdict(
        next(r for r in records if r["precision"] == "fp32" and r["status"] == "ok"),
        Targets(metrics=[{"metric": "miou_vs_fp32_pct", "at_least": 1}]),
    )
    assert (
        fidelity_unknown.status == "unknown" and "fp32 eager reference" in fidelity_unknown.text
    )  # the figure and why it is missing


def test_answer_section_in_html_and_markdown(small_run: Path, tmp_path: Path) -> None:
    target = _splitting_fps(small_run)
    suite_targets = copy_run(small_run, tmp_path / "with-targets")
    suite = yaml.safe_load((suite_targets / results.SUITE_FILE).read_text())
    (suite_targets / results.SUITE_FILE).write_text(yaml.safe_dump({**suite, "targets": {"fps": target}}))
    page = parse(write_report(suite_targets, tmp_path / "answer.html"))
    raw = (tmp_path / "answer.html").read_text()
    assert raw.index('id="answer"') < raw.index('id="header"') < raw.index('id="leaderboard"')  # the answer comes first
    rows = page.tables["answer-table"]
    assert len(rows) == 6  # every cell, failed ones included, has a verdict
    text = page.all_text
    assert (
        f"achieved ≥ {METRICS['achieved_fps'].show(target)}" in text
        and "Best: " in text
        and "meets" in text
        and "misses" in text
    )
    markdown = write_report(suite_targets, tmp_path / "answer.md", fmt="md").read_text()
    assert "### Answer" in markdown and "Best: " in markdown and markdown.count("| test-tiny |") >= 4 + 4
    assert "### Quantization and precision" in markdown and "### Cells that did not finish" in markdown

    # Command-line targets override the suite's; without any there is no verdict and the page says how to add them.
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            "report",
            str(suite_targets),
            "--format",
            "md",
            "-o",
            str(tmp_path / "cli.md"),
            "--target-fps",
            "1e9",
            "--memory-budget",
            "64GiB",
        ],
    )
    assert done.exit_code == 0, done.output
    assert "No configuration meets every target" in (tmp_path / "cli.md").read_text()
    plain = write_report(small_run, tmp_path / "plain.md", fmt="md").read_text()
    assert "No targets are set" in plain and "Fastest: " in plain and "targets:" in plain
    bad = runner.invoke(app, ["report", str(small_run), "--hardware", "rtx306", "-o", str(tmp_path / "x.html")])
    assert bad.exit_code == 2 and "did you mean 'rtx3060'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# The stream run it reads searches a sustainable camera rate: a timing, made with nothing beside it.
@pytest.mark.alone
def test_stream_results_in_html_markdown_and_csv(stream_run: Path, tmp_path: Path) -> None:
    [record] = results.read_records(stream_run)
    assert record["status"] == "ok", record.get("traceback")
    stream = record["stream"]
    assert stream["max_sustainable_fps"] > 0, stream["max_sustainable_fps_why"]
    last = stream["trials"][-stream["confirmed_trials"] :]  # the reported rate passed its last k trials in a row
    assert stream["keeps_up"] and all(t["passed"] and t["target_fps"] == stream["max_sustainable_fps"] for t in last)
    page = parse(write_report(stream_run, tmp_path / "stream.html"))
    frames = stream["latency_ms"]["n"]
    shown = ("sustained FPS", "dropped %", "keeps up", "stream p50 ms", "stream n")
    # A tail percentile shows only where the trial's frames support it (p95: 20, p99: 100); else it is withheld.
    shown += ("stream p95 ms",) * (frames >= 20) + ("stream p99 ms",) * (frames >= 100)
    for header in shown:
        assert header in page.all_text, header
    markdown = write_report(stream_run, tmp_path / "stream.md", fmt="md").read_text()
    assert "| sustained FPS | dropped % | keeps up | stream p50 ms |" in markdown and "FPS sustained" in markdown
    frame = pd.read_csv(write_report(stream_run, tmp_path / "stream.csv", fmt="csv"))
    row = frame.iloc[0]
    assert row["stream_fps"] == pytest.approx(stream["max_sustainable_fps"]) and row[
        "stream_drop_pct"
    ] == pytest.approx(stream["drop_pct"])
    assert row["stream.frames_offered"] == stream["frames_offered"] and row["stream_n"] == stream["latency_ms"]["n"]
    if stream["latency_ms"]["n"] >= 100:
        assert row["stream_p99_ms"] == pytest.approx(stream["latency_ms"]["p99"])
    else:  # a short trial's p99 is withheld, with the reason, wherever it is shown
        assert pd.isna(row["stream_p99_ms"])
        assert "p99 needs n ≥ 100" in stream["latency_ms"]["percentiles_withheld"]["p99"]
    assert row["achieved_fps"] == row["stream_fps"]  # targets judge a stream cell by the rate it sustained


# The stream run it reads searches a sustainable camera rate: a timing, made with nothing beside it.
@pytest.mark.alone
def test_every_catalogue_path_resolves_on_a_real_run(small_run: Path, stream_run: Path) -> None:
    """Each entry's dotted path is where the cell passes or the runner write it (may be null, e.g. NVML on a CPU)."""
    records = [r for r in results.read_records(small_run) + results.read_records(stream_run) if r["status"] == "ok"]
    # The capacity scenario's figures resolve on its own run (tests/report/test_capacity_report.py).
    capacity = {m.key for m in CATALOGUE if (m.path or "").startswith("capacity.") or m.key.startswith("capacity_")}
    capacity.add("max_cameras")
    unresolved = [
        m.key
        for m in CATALOGUE
        if m.path and m.key not in capacity and not any(path_exists(r, m.path) for r in records)
    ]
    assert unresolved == []
    cpu_only_nulls = {
        "nvml_process_peak_mb",
        "nvml_device_peak_mb",
        "torch_allocated_peak_mb",
        "torch_reserved_peak_mb",
        "percent_of_peak",
        "sm_clock_mean_mhz",
        "sm_clock_min_mhz",
        "memory_clock_mhz",
        "temperature_max_c",
        "power_mean_w",
        "power_max_w",
        "gpu_util_pct",
        "joules_per_image",
        "throttled_pct",
        "miou_vs_fp32_pct",
        "max_abs_logit_diff",
        "miou_gt_pct",
        "pixel_accuracy_gt_pct",
        "mean_accuracy_gt_pct",
        "miou_delta_pts",
        "pixel_accuracy_delta_pts",
        "quantized_share_pct",
        "percent_of_ceiling",
        "above_ceiling",
        "attainable_tflops",
        "percent_of_attainable",
    }
    # ^ GPU-only, logits of a real head, a labelled dataset, a quantized precision, a measured ceiling: none in these
    # small runs
    # A p99 needs 100 samples and these runs stop at 20: withheld, with the reason, which counts as an answer.
    # A stream trial's p99 needs 100 frames, which a busy machine's short trials may not reach: withheld in the stream
    # cell, not applicable in the others.
    withheld = {m.key for m in CATALOGUE if any("needs n ≥" in (m.missing_reason(r) or "") for r in records)}
    valueless = [
        m.key
        for m in CATALOGUE
        if not m.relative
        and m.key not in cpu_only_nulls | withheld | capacity
        and all(m.value(r) is None for r in records)
    ]
    assert valueless == []


def test_memory_plot_never_draws_one_point_per_panel(small_run: Path, tmp_path: Path) -> None:
    assert memory_vs_resolution(load_run(small_run)).image_png  # test-tiny ran at two resolutions
    one_resolution = copy_run(small_run, tmp_path / "one", keep=lambda r: r["resolution"] == [16, 16])
    plot = memory_vs_resolution(load_run(one_resolution))
    assert plot.image_png is None and "single point" in plot.note


def _cli_suite(tmp_path: Path, name: str, models: list[str], **extra: Any) -> Path:
    data = {
        "name": name,
        "device": "cpu",
        "plugins": [FAULT_PLUGIN],
        "models": models,
        "resolutions": [16],
        "timing": FAST_TIMING,
        "roofline": {"measure_ceiling": False},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _last_line(output: str) -> str:
    """The gate's line: the last before the `next: segbench report …` line."""
    lines = output.strip().splitlines()
    assert lines[-1].startswith("next: segbench report "), lines[-1]
    return lines[-2]


def test_run_exit_codes(tmp_path: Path, write_suite: Callable[..., Path]) -> None:
    runner = CliRunner()
    results_dir = tmp_path / "results"
    # oom is a result; a missed target and a refuted claim fail only with --strict.
    strict_suite = _cli_suite(
        tmp_path,
        "gate",
        ["test-tiny", "test-oom"],
        targets={"fps": 1e9},
        expectations=[{"claim": "impossible", "model": "test-tiny", "metric": "fps", "at_least": 1e9}],
    )
    done = runner.invoke(app, ["run", str(strict_suite), "--out", str(results_dir)])
    assert done.exit_code == 0, done.output
    assert (
        _last_line(done.output).startswith("exit 0:")
        and "miss a target" in done.output
        and "--strict" in _last_line(done.output)
    )
    [run_dir] = list(results_dir.iterdir())
    strict = runner.invoke(
        app, ["run", str(strict_suite), "--out", str(results_dir), "--resume", str(run_dir), "--strict"]
    )
    assert strict.exit_code == 1, strict.output
    line = _last_line(strict.output)
    assert line.startswith("exit 1:") and "2 cell(s) miss a target" in line and "1 expectation(s) refuted" in line
    # an error (or timeout) always fails the run
    failing = _cli_suite(tmp_path, "failing", ["test-tiny", "test-raise"])
    broken = runner.invoke(app, ["run", str(failing), "--out", str(tmp_path / "other")])
    assert (
        broken.exit_code == 1
        and "1 cell(s) ended in error or timeout: test-raise 16x16 b1 fp32 eager (error)" in _last_line(broken.output)
    )


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (
            {"fps": 30, "metrics": [{"metric": "prepare_sec", "at_most": 60}]},
            r"targets.metrics\[0\].metric: unknown metric 'prepare_sec' \(did you mean 'prepare_s'\?",
        ),
        ({"memory": "rtx306"}, r"targets.memory: 'rtx306' is neither a size .*did you mean 'rtx3060'\?"),
        ({"fsp": 30}, r"targets.fsp: unknown key 'fsp' \(did you mean 'fps'\?\)"),
        ({"max_latency_ms": 50, "latency_percentile": "p98"}, r"targets.latency_percentile"),
    ],
)
def test_bad_targets_are_one_line_suite_errors(
    write_suite: Callable[..., Path], targets: dict[str, Any], message: str
) -> None:
    from segbench.errors import SuiteError

    with pytest.raises(SuiteError, match=message) as caught:
        load_suite(write_suite(targets=targets))
    assert len(str(caught.value).splitlines()) == 1


def test_memory_targets_judge_the_figure_that_competes_for_the_budget() -> None:
    """GPU: NVML's per-process peak (context included) against the card's driver-reported total; CPU: the footprint."""
    gpu = {"status": "ok", "device": "cuda:0", "memory_mb": {"nvml_process_peak": 11_000.0, "baseline": 500.0}}
    cpu = {"status": "ok", "device": "cpu", "memory_mb": {"rss_peak": 1_500.0, "baseline": 700.0}}
    card = Targets(memory="rtx3060")
    assert card.memory_budget() is not None and card.memory_budget()[0] < 12 * 1024  # the driver's total, not 12 x 1024
    assert (
        verdict(gpu, card).status == "meets"
        and verdict({**gpu, "memory_mb": {"nvml_process_peak": 12_100.0}}, card).status == "misses"
    )
    assert verdict(cpu, Targets(memory="1GiB")).status == "meets"  # 800 MiB of its own, though RSS peaked at 1.5 GiB
    missed = verdict(cpu, Targets(memory="512MiB"))
    assert missed.status == "misses" and "footprint 800 MiB > 512 MiB (misses by 288 MiB" in missed.text


def _written_before_the_rule(record: dict[str, Any]) -> dict[str, Any]:
    """A record as segbench stored it before percentiles needed their samples: the zoo-cpu Mask2Former-Swin-B's
    figures (latency n = 3, end to end n = 2, every percentile numeric)."""
    latency = {**record["latency_ms"], "n": 3, "p90": 4430.1, "p95": 4444.4, "p99": 4455.5}
    end_to_end = {**record["end_to_end_ms"], "n": 2, "p90": 5498.7, "p95": 5520.6, "p99": 5538.2}
    for summary in (latency, end_to_end):
        summary.pop("percentiles_withheld", None)
    old = {**record, "latency_ms": latency, "end_to_end_ms": end_to_end}
    old.pop("first_call_ms", None)
    return old


def test_an_old_record_with_a_p99_of_two_samples_prints_no_p99(small_run: Path, tmp_path: Path) -> None:
    # The committed zoo-cpu report's Answer printed "latency p99 5,538 ms" from 2 end-to-end samples, and its
    # leaderboard a p95 from 3: records store them, so the rule is applied when they are read.
    old_run = copy_run(
        small_run,
        tmp_path / "old",
        keep=lambda r: r["status"] == "ok" and r["precision"] == "fp32" and r["batch_size"] == 1,
        change=_written_before_the_rule,
    )
    markdown = write_report(old_run, tmp_path / "old.md", fmt="md").read_text()
    # How long the pass needs for it, from the record's own median: what to change, not only what is missing.
    median = METRICS["end_to_end_ms"].value(results.read_records(old_run)[0])
    advice = f"at {median:.3g} ms each that is ≥ {100 * median / 1000:.2g} s: raise timing.max_time_s / min_iters"
    withheld = f"latency p99 withheld (n = 2, p99 needs ≥ 100; {advice})"
    assert withheld in markdown
    for shown in ("5,538", "5538", "5,521", "4,444", "4,456"):  # no p99, p95 or p90 of these passes anywhere
        assert shown not in markdown, shown
    assert "| median ms | p95 ms | n |" in markdown  # n beside the percentile
    page = parse(write_report(old_run, tmp_path / "old.html"))
    assert withheld in page.all_text and "5,538" not in page.all_text
    assert "p99 from 100" in page.all_text  # the rule is stated beside the Answer
    frame = pd.read_csv(write_report(old_run, tmp_path / "old.csv", fmt="csv"))
    row = frame.iloc[0]
    assert pd.isna(row["latency_p99_ms"]) and pd.isna(row["end_to_end_ms.p99"]) and pd.isna(row["latency_ms.p95"])
    assert row["latency_n"] == 2 and row["end_to_end_n"] == 2 and row["n"] == 3
    assert "p99 needs n ≥ 100" in row["end_to_end_ms.percentiles_withheld.p99"]


def test_a_p99_target_on_too_few_samples_is_unknown_with_the_reason(small_run: Path) -> None:
    record = _written_before_the_rule(
        next(r for r in results.read_records(small_run) if r["status"] == "ok" and r["precision"] == "fp32")
    )
    for ceiling in (1e6, 1e-3):  # the stored p99 would meet the first and miss the second: neither is known
        judged = verdict(record, Targets(max_latency_ms=ceiling, latency_percentile="p99"))
        assert judged.status == "unknown", judged.text
        assert judged.text.startswith(
            "latency p99 unknown (p99 needs n ≥ 100 samples (at least one beyond it), n = 2 in the end-to-end pass; "
        )
        assert "that is ≥" in judged.text and "raise timing.max_time_s / min_iters" in judged.text
    median = METRICS["latency_p50_ms"].value(record)
    assert verdict(record, Targets(max_latency_ms=median * 2, latency_percentile="p50")).status == "meets"
    enough = {**record, "end_to_end_ms": {**record["end_to_end_ms"], "n": 100}}  # the stored p99 is trusted at 100
    assert verdict(enough, Targets(max_latency_ms=1e6)).status == "meets"
