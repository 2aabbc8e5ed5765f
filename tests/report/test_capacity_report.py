"""The capacity scenario as a user runs it: the one-line CLI builds the suite, a real cell searches each policy
(replicas that would not fit the emulated RTX 3060 end their search with `budget`), and the record reaches the Answer,
the HTML and Markdown Capacity section, the CSV and the `cameras` target; Ctrl-C mid-search keeps the trials done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from segbench.results.metrics import CATALOGUE, METRICS, path_exists
from tests.helpers import FAST_TIMING, REPO, TESTS_DIR, segbench

PLUGIN = str(TESTS_DIR / "capacity_models.py")
BALLAST_MB = 200  # one instance holds this much more than the tiny network
REPLICAS = 64  # x 200+ MiB beside the RTX 3060's 450 MiB context: more than its 12042 MiB (checked before any copy)


def _flags(tmp: Path, *extra: str) -> list[str]:
    timing = [f"timing.{key}={value}" for key, value in FAST_TIMING.items()]
    sets = [
        *timing,
        "roofline.measure_ceiling=false",
        f"models=[{{name: test-paced, options: {{ballast_mb: {BALLAST_MB}}}}}]",
        "capacity.duration_s=0.3",
        "capacity.confirmations=2",
        "capacity.warmup_s=0.1",
        "capacity.max_cameras=4",
        "capacity.policies=[replicas,batched,streams]",
        f"capacity.replicas={REPLICAS}",
        "targets.cameras=2",
        *extra,
    ]
    return [
        "run", "--model", "test-paced", "--plugin", PLUGIN, "-r", "32", "--device", "cpu",
        "--scenario", "capacity", "--camera-fps", "25", "--max-p99-ms", "40", "--hardware", "rtx3060",
        "--out", str(tmp / "runs"), *(part for item in sets for part in ("-s", item)),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def capacity_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("capacity")
    done = segbench(*_flags(tmp), cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [run_dir] = (tmp / "runs").iterdir()
    [line] = (run_dir / "results.jsonl").read_text().splitlines()
    return run_dir, json.loads(line)


def test_the_one_line_cli_searches_each_policy_and_the_budget_ends_the_replicas(capacity_run) -> None:
    run_dir, record = capacity_run
    assert record["status"] == "ok" and record["scenario"] == "capacity"
    capacity = record["capacity"]
    assert capacity["camera_fps"] == 25 and capacity["latency_bound_ms"] == 40 and capacity["percentile"] == "p99"
    replicas, batched, streams = (capacity["policies"][name] for name in ("replicas", "batched", "streams"))
    assert replicas["status"] == "budget" and replicas["end_reason"] == "budget" and not replicas["trials"]
    why = replicas["max_cameras_why"]
    first = int(why.split("replica ")[1].split(" ")[0])
    assert "does not fit rtx3060's 12042 MiB" in why and 40 <= first <= 55, why  # 11592 / (200 MiB + the rest)
    assert streams["status"] == "unsupported" and "CUDA" in streams["max_cameras_why"]
    assert batched["status"] == "ok" and batched["confirmed"] and 1 <= batched["max_cameras"] <= 4
    confirms = [row for row in batched["trials"] if row["phase"] == "confirm"]
    assert len(confirms) >= 2 and all(row["cameras"] == batched["max_cameras"] for row in confirms[-2:])
    if not batched["capped"]:  # N + 1 failed, and the record says on what
        assert batched["failing_cameras"] == batched["max_cameras"] + 1 and batched["failed_on"] in ("drops", "latency")
    assert capacity["max_cameras"] == batched["max_cameras"] and capacity["policy"] == "batched"
    assert batched["memory"]["per_instance_mb"] >= BALLAST_MB  # the instance's memory is in the figure
    capacity_metrics = [m for m in CATALOGUE if (m.path or "").startswith("capacity.")]
    assert capacity_metrics and all(path_exists(record, m.path) for m in capacity_metrics)
    assert METRICS["max_cameras"].value(record) == batched["max_cameras"]
    assert METRICS["capacity_p99_ms"].value(record) is not None
    suite = yaml.safe_load((run_dir / "suite.yaml").read_text())
    assert suite["scenario"] == "capacity" and suite["capacity"]["camera_fps"] == 25.0


def test_the_capacity_reaches_the_reports_the_csv_and_the_target(capacity_run, tmp_path: Path) -> None:
    run_dir, record = capacity_run
    cameras = record["capacity"]["max_cameras"]
    for fmt in ("md", "html", "csv"):
        done = segbench("report", str(run_dir), "--format", fmt, "--output", str(tmp_path / f"r.{fmt}"), cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
    markdown = (tmp_path / "r.md").read_text()
    assert "### Capacity" in markdown and "does not fit rtx3060" in markdown
    assert f"batched: {cameras} camera" in markdown and "at 25 FPS with p99 ≤ 40 ms on this CPU" in markdown
    html = (tmp_path / "r.html").read_text()
    assert 'id="capacity"' in html and "capacity-trials-table" in html and "Cameras vs p99" in html
    import pandas as pd

    row = pd.read_csv(tmp_path / "r.csv").iloc[0]
    assert row["max_cameras"] == cameras and row["capacity_batched_cameras"] == cameras
    assert row["verdict"] == ("meets" if cameras >= 2 else "misses") or row["verdict"] == "borderline"
    assert "cameras" in str(row["verdict_detail"])


def test_bad_capacity_values_are_one_line_errors() -> None:
    done = segbench("run", "--model", "fast-scnn", "--scenario", "capacity", "-s", "capacity.max_batch=0", "--dry-run")
    assert done.returncode != 0 and "capacity.max_batch" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = segbench("run", "--model", "fast-scnn", "--camera-fps", "30", "--dry-run")
    assert done.returncode != 0 and "--camera-fps" in done.stderr and "--scenario capacity" in done.stderr


def test_ctrl_c_mid_search_keeps_the_trials_done(tmp_path: Path) -> None:
    """Stopped after its first trials, the run says interrupted and the cell's log keeps every trial that ended."""
    command = [sys.executable, "-m", "segbench", *_flags(tmp_path, "capacity.max_cameras=64", "capacity.duration_s=2")]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )  # fmt: skip
    deadline, logged = time.monotonic() + 180, []
    while time.monotonic() < deadline and len(logged) < 2 and process.poll() is None:
        time.sleep(0.5)
        logs = list((tmp_path / "runs").glob("*/logs/*.log"))
        text = logs[0].read_text() if logs else ""
        logged = [line for line in text.splitlines() if line.startswith("segbench capacity trial: ")]
    assert len(logged) >= 2, "no capacity trial was logged before the deadline"
    os.kill(process.pid, signal.SIGINT)
    process.communicate(timeout=60)
    [run_dir] = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"
    [log] = (run_dir / "logs").glob("*.log")
    kept = [json.loads(line.split(": ", 1)[1]) for line in log.read_text().splitlines() if "capacity trial: " in line]
    assert len(kept) >= 2 and all({"policy", "cameras", "passed"} <= set(row) for row in kept)
