"""Issue 33.8: from the answer to the deployable file. The report names the file each cell ran, `segbench export`
writes it out exactly as measured (checked, with its preprocessing beside it), and `segbench cache` lists and clears
the prepare cache with its sizes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import yaml

from tests.helpers import FAST_TIMING, segbench

pytestmark = pytest.mark.xdist_group("export-run")


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A real run of Fast-SCNN at 64x64 on eager and ONNX Runtime, with its own prepare cache."""
    base = tmp_path_factory.mktemp("export")
    suite = {
        "name": "export",
        "device": "cpu",
        "models": ["fast-scnn"],
        "resolutions": [64],
        "batch_sizes": [1],
        "precisions": ["fp32"],
        "backends": ["eager", "onnxruntime"],
        "timing": FAST_TIMING,
        "roofline": {"measure_ceiling": False},
    }
    (base / "suite.yaml").write_text(yaml.safe_dump(suite))
    env = {**os.environ, "SEGBENCH_CACHE_DIR": str(base / "cache")}
    done = segbench("run", str(base / "suite.yaml"), "--out", str(base / "results"), env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = (base / "results").iterdir()
    return run, env


def _cell_id(run: Path, backend: str) -> str:
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    return next(record["cell_id"] for record in records if record["backend"] == backend)


def test_export_writes_the_onnx_the_cell_ran_with_its_preprocessing(
    measured: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    run, env = measured
    done = segbench("export", str(run), _cell_id(run, "onnxruntime"), "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    sidecar = json.loads((tmp_path / "out" / "segbench-export.json").read_text())
    assert sidecar["backend"] == "onnxruntime" and sidecar["kind"] == "onnx-export"
    assert sidecar["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    (model_file,) = [tmp_path / "out" / name for name in sidecar["files"] if name.endswith(".onnx")]
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), np.float32)})[:1]
    assert scores.shape[0] == 1 and scores.shape[1] == 19  # Cityscapes' classes: the model the cell measured


def test_an_eager_cell_has_no_file_and_the_error_says_which_backends_make_one(
    measured: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    run, env = measured
    done = segbench("export", str(run), _cell_id(run, "eager"), "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "makes no file to deploy" in done.stderr and "onnxruntime" in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_cell_lists_the_run_cells(measured: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    run, env = measured
    done = segbench("export", str(run), "nope", "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 2 and "matches no cell" in done.stderr and _cell_id(run, "eager") in done.stderr


def test_the_report_and_csv_name_each_cells_file(measured: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    run, env = measured
    for fmt in ("html", "md", "csv"):
        out = tmp_path / f"report.{fmt}"
        done = segbench("report", str(run), "--format", fmt, "-o", str(out), env=env)
        assert done.returncode == 0, done.stderr
        text = out.read_text()
        assert "onnx-export" in text and str(Path(env["SEGBENCH_CACHE_DIR"])) in text
        if fmt != "csv":
            assert "Deployable files" in text and f"segbench export {run}" in text


def test_cache_lists_entries_with_sizes_and_clears_by_kind(measured: tuple[Path, dict[str, str]]) -> None:
    run, env = measured
    listed = segbench("cache", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "onnx-export" in line)
    assert "fast-scnn" in row and re.search(r"\d+\.\d (KiB|MiB)", row), listed.stdout
    cleared = segbench("cache", "--clear", "--kind", "onnx-export", env=env)
    assert cleared.returncode == 0 and "cleared 1 entry" in cleared.stdout, cleared.stdout
    assert "onnx-export" not in segbench("cache", env=env).stdout
    gone = segbench("export", str(run), _cell_id(run, "onnxruntime"), "--out", str(run.parent / "x"), env=env)
    assert gone.returncode == 2 and "rerun the cell" in gone.stderr, gone.stderr
