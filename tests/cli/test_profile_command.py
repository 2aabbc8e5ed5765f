"""`segbench profile MODEL`: one configuration, isolated, printed as the blocks and top operators, in a run folder
that `segbench report` reads; a pair that cannot run is one line."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import FAST_TIMING, FAULT_PLUGIN, segbench

FAST = [f"timing.{key}={value}" for key, value in FAST_TIMING.items()]


def test_profile_prints_the_tables_and_leaves_a_run_folder(tmp_path: Path) -> None:
    overrides = [arg for item in [*FAST, "roofline.measure_ceiling=false", "threads=1"] for arg in ("-s", item)]
    done = segbench(
        "profile", "test-tiny", "-r", "32", "--plugin", FAULT_PLUGIN, "--device", "cpu", "--iters", "3",
        "--out", str(tmp_path), *overrides,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "blocks" in done.stdout and "top " in done.stdout and "aten::conv2d" in done.stdout
    assert "body" in done.stdout  # TinyNet's one block, from its module path
    (run_dir,) = tmp_path.iterdir()
    [record] = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert record["profile"]["iters"] == 3 and record["profile"]["blocks"][0]["name"] == "body"
    report = segbench("report", str(run_dir), "--format", "md", "--output", str(tmp_path / "r.md"))
    assert report.returncode == 0 and "### Profile: where the time goes" in (tmp_path / "r.md").read_text()


def test_a_pair_that_cannot_run_is_one_line(tmp_path: Path) -> None:
    done = segbench("profile", "fast-scnn", "--precision", "ort-int8", "--backend", "eager", "--device", "cpu")
    assert done.returncode == 2  # a user error, as every command's
    assert done.stderr.strip().count("\n") == 0 and "ort-int8" in done.stderr, done.stderr


def test_run_profile_flag_profiles_every_cell(tmp_path: Path) -> None:
    overrides = [arg for item in [*FAST, "roofline.measure_ceiling=false", "threads=1"] for arg in ("-s", item)]
    done = segbench(
        "run", "--model", "test-tiny", "--resolution", "32", "--plugin", FAULT_PLUGIN, "--device", "cpu",
        "--profile", "--out", str(tmp_path), *overrides,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    [record] = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert record["profile"]["profiler"] == "torch.profiler" and record["profile"]["operators"]
    assert "profile: true" in (run_dir / "suite.yaml").read_text()  # the run folder's suite repeats it
