"""The CLI as a user runs it, in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from tests.helpers import FAST_TIMING, FAULT_PLUGIN, REPO, segbench


def test_dry_run_prints_the_matrix_with_its_count(write_suite: Callable[..., Path]) -> None:
    done = segbench("run", str(write_suite(batch_sizes=[1, 2], precisions=["fp32", "fp16"])), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "4 cell(s)" in done.stdout and "fp16" in done.stdout and "test-tiny" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_suite_without_cuda_stops_with_a_clear_message() -> None:
    done = segbench("run", str(REPO / "suites" / "rtx3060.yaml"))
    assert done.returncode == 2
    assert (
        "CUDA is not available" in done.stderr and "--device cpu" in done.stderr and "suites/quick.yaml" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_run_writes_a_run_folder_and_prints_a_summary(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    done = segbench("run", str(write_suite(name="cli-run")), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    [run_dir] = (tmp_path / "out").iterdir()
    assert run_dir.name.startswith("cli-run-")
    assert "ok" in done.stdout and "median" in done.stdout


def test_env_and_models(tmp_path: Path) -> None:
    env = segbench("env", "--json")
    assert env.returncode == 0, env.stderr
    data = json.loads(env.stdout)
    assert data["cpu"]["logical_cores"] >= 1 and "torch" in data["packages"]
    if not torch.cuda.is_available():
        assert data["gpus"] == [] and data["nvml"] != "available"
    listing = segbench("models", "fast-*")
    assert listing.returncode == 0 and "fast-scnn" in listing.stdout


def test_bad_options_give_one_line(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    done = segbench("run", str(write_suite()), "--device", "tpu")
    assert done.returncode == 2 and "--device" in done.stderr and "Traceback" not in done.stderr
    done = segbench("run", str(write_suite()), "--retry-failed")
    assert done.returncode == 2 and "--resume" in done.stderr
    done = segbench("run", str(write_suite()), "--resume", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "nowhere" in done.stderr and "Traceback" not in done.stderr


def test_a_run_prints_its_next_step_and_where_a_failed_cells_traceback_is(tmp_path: Path) -> None:
    """Issue 33.9: the run ended without the `segbench report` line, and a failed cell's logs/<cell>.log was empty
    (0 bytes): its traceback was only in results.jsonl."""
    suite = {
        "name": "next-step",
        "device": "cpu",
        "plugins": [FAULT_PLUGIN],
        "models": ["test-tiny", "test-raise"],
        "resolutions": [16],
        "timing": FAST_TIMING,
        "roofline": {"measure_ceiling": False},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    done = segbench("run", str(path), "--out", str(tmp_path / "results"))
    assert done.returncode == 1, done.stdout + done.stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    failed = next(json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines() if "raise" in line)
    log = run_dir / "logs" / f"{failed['cell_id']}.log"
    assert f"why: {log} (--verbose prints it here)" in done.stdout
    assert "ValueError" in log.read_text() and "the last line of a multi-line failure" in log.read_text()
    assert done.stdout.strip().splitlines()[-1] == f"next: segbench report {run_dir}"


def test_camera_size_and_decode_flags_put_decode_and_resize_in_end_to_end(tmp_path: Path) -> None:
    """Guards item 7's option: end to end could not include a camera's decode and resize; --camera-size and --decode
    (the suite's end_to_end block) time them as stages, and the record says what was measured."""
    timing = [arg for key, value in FAST_TIMING.items() for arg in ("-s", f"timing.{key}={value}")]
    args = ["run", "--plugin", FAULT_PLUGIN, "--model", "test-tiny", "--resolution", "32", "--device", "cpu"]
    args += ["--camera-size", "90x120", "--decode", "png", "-s", "roofline.measure_ceiling=false", *timing]
    result = segbench(*args, "--out", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = [json.loads(line) for line in next(tmp_path.glob("*/results.jsonl")).read_text().splitlines()]
    assert record["end_to_end_covers"]["stages"][:2] == ["decode", "resize"]
    assert record["end_to_end_covers"]["camera_size"] == [90, 120] and record["end_to_end_covers"]["decode"] == "png"
    assert {"decode", "resize"} <= set(record["stages_ms"])
    bad = segbench("run", "--model", "fast-scnn", "--camera-size", "1080by1920", "--dry-run")
    assert bad.returncode == 2 and "end_to_end.camera_size" in bad.stderr + bad.stdout
