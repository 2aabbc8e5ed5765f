from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from segbench.errors import SegbenchError
from segbench.tools.predict import class_summary, predict, rle_decode, rle_encode


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "coffee.png"
    cv2.imwrite(str(path), cv2.resize(skimage.data.coffee(), (160, 96))[..., ::-1])
    return path


def test_predict_writes_valid_pngs_and_json(photo: Path, tmp_path: Path) -> None:
    [prediction] = predict("fast-scnn", [photo], tmp_path / "out")
    labels = cv2.imread(str(prediction.class_map), cv2.IMREAD_UNCHANGED)
    overlay = cv2.imread(str(prediction.overlay), cv2.IMREAD_COLOR)
    assert labels.shape == (96, 160) and labels.max() < 19
    assert overlay.shape[1:] == (160, 3) and overlay.shape[0] > 96  # the image, then its legend strip below
    summary = json.loads(prediction.summary.read_text())
    assert summary["random_weights"] and "meaningless" in summary["note"]
    assert sum(row["pixels"] for row in summary["classes"]) == 96 * 160
    assert sum(row["share"] for row in summary["classes"]) == pytest.approx(1.0)
    for row in summary["classes"]:
        assert np.array_equal(rle_decode(row["rle"]), labels == row["id"])


def test_rle_and_contours_round_trip() -> None:
    labels = np.zeros((20, 30), dtype=np.int64)
    labels[2:8, 3:12] = 1
    labels[10:19, 20:29] = 2
    rows = {row["id"]: row for row in class_summary(labels)}
    for class_id in (0, 1, 2):
        assert np.array_equal(rle_decode(rows[class_id]["rle"]), labels == class_id)
    assert rows[1]["pixels"] == 54 and len(rows[1]["contours"]) == 1
    xs, ys = zip(*rows[1]["contours"][0])
    assert (min(xs), max(xs), min(ys), max(ys)) == (3, 11, 2, 7)
    assert rle_encode(np.ones((2, 2), dtype=bool))["counts"] == [0, 4]


def test_bad_inputs_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(SegbenchError, match="cannot decode"):
        predict("fast-scnn", [broken], tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segbench",
            "predict",
            "fast-scnn",
            str(broken),
            "--weights",
            str(tmp_path / "missing.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--weights: not found" in done.stderr and "Traceback" not in done.stderr
