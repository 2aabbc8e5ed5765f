"""Issue 33.10: `predict` runs a precision x backend path (refusing pairs as `run` does), names the classes on the
overlay's legend and in the JSON, prints mIoU in % where a mask is given, and one line per image."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from segbench.errors import SegbenchError
from segbench.tools.predict import palette, with_legend
from segbench.tools.predict_path import check_path
from tests.helpers import FAULT_PLUGIN, segbench

NAMES = ["sky", "road", "car", "tree"]  # test-tiny has four classes


def _labelled(root: Path, count: int = 2, side: int = 32) -> Path:
    """A plain-layout dataset: images/val and masks/val with the same stems."""
    rng = np.random.default_rng(3)
    for folder in ("images/val", "masks/val"):
        (root / folder).mkdir(parents=True)
    for index in range(count):
        cv2.imwrite(str(root / "images/val" / f"frame{index}.png"), rng.integers(0, 255, (side, side, 3), np.uint8))
        cv2.imwrite(str(root / "masks/val" / f"frame{index}.png"), rng.integers(0, 4, (side, side), np.uint8))
    return root


def _predict(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = segbench(
        "predict",
        "test-tiny",
        *map(str, args),
        "--plugin",
        FAULT_PLUGIN,
        "--device",
        "cpu",
        env={**os.environ, **(env or {})},
        timeout=180,
    )
    return done.returncode, done.stdout, done.stderr


def test_predict_on_onnxruntime_names_classes_scores_in_percent_one_line_per_image(tmp_path: Path) -> None:
    data, out, cache_dir = _labelled(tmp_path / "data"), tmp_path / "out", tmp_path / "cache"
    code, stdout, stderr = _predict(
        "--dataset",
        data,
        "--out",
        out,
        "--precision",
        "fp32",
        "--backend",
        "onnxruntime",
        "--class-names",
        ",".join(NAMES),
        env={"SEGBENCH_CACHE_DIR": str(cache_dir)},
    )
    assert code == 0, stderr
    lines = [line for line in stdout.splitlines() if line.strip()]
    accuracy = json.loads((out / "accuracy.json").read_text())
    for index in range(2):
        image = data / "images/val" / f"frame{index}.png"
        [line] = [line for line in lines if f"frame{index}.png" in line]  # one line per image, however long
        miou = accuracy["per_image_miou"][str(image)]
        assert f"mIoU {miou * 100:.1f} %" in line
        assert re.search(rf"({'|'.join(NAMES)}) \d+\.\d %", line) and "class " not in line
        assert f"{out / f'frame{index}'}.{{classes.png, overlay.png, json}}" in line
        summary = json.loads((out / f"frame{index}.json").read_text())
        assert (summary["precision"], summary["backend"], summary["class_names"]) == ("fp32", "onnxruntime", NAMES)
        assert all(row["name"] == NAMES[row["id"]] for row in summary["classes"])
    assert re.search(rf"mIoU {accuracy['miou'] * 100:.1f} %, pixel accuracy [\d.]+ % over 2 images", stdout)
    assert "read " not in stdout  # the stage timing is in the JSON, not a second line per image
    # The ONNX Runtime path really ran: its exported graph is in the prepare cache, once for the one image size.
    assert len(list(cache_dir.glob("entries/*/*/model.onnx"))) == 1


def test_a_pair_that_cannot_run_is_refused_in_one_line_before_anything_is_built(tmp_path: Path) -> None:
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    code, stdout, stderr = _predict(image, "--out", tmp_path / "out", "--precision", "ort-int8")
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        "error: --precision ort-int8 --backend eager: ort-int8 runs only on backend onnxruntime; choose a pair "
        "that runs here (segbench run --model M --all-paths --dry-run lists them)"
    ]
    assert not (tmp_path / "out").exists()
    code, _, stderr = _predict(image, "--out", tmp_path / "out", "--class-names", "a,b")
    assert code == 2 and "--class-names: 2 names but test-tiny has 4 classes" in stderr


def test_unknown_names_get_the_registries_did_you_mean() -> None:
    import torch

    with pytest.raises(SegbenchError, match="did you mean 'onnxruntime'"):
        check_path("fp32", "onnxruntim", torch.device("cpu"))
    with pytest.raises(SegbenchError, match="did you mean 'fp32'"):
        check_path("fp33", "eager", torch.device("cpu"))


def test_the_legend_lists_each_class_with_its_colour_and_wraps_to_the_width() -> None:
    labels = np.repeat(np.arange(6), 10).reshape(6, 10).repeat(10, axis=0)  # six classes in bands, 60x10
    labels = np.tile(labels, (1, 40))  # 60x400
    colours = palette(6)
    blended = np.full((60, 400, 3), 128, np.uint8)
    drawn = with_legend(blended, labels, colours, dict(enumerate(["a", "b", "c", "d", "e", "f"])))
    assert drawn.shape[1] == 400 and drawn.shape[0] > 60 and np.array_equal(drawn[:60], blended)
    legend = drawn[60:]
    for colour in colours:  # every class's swatch is drawn in its own colour
        assert np.all(legend == colour, axis=-1).sum() >= 9
    narrow = with_legend(blended[:, :80], labels[:, :80], colours, None)
    assert narrow.shape[0] - 60 > legend.shape[0]  # fewer entries a row: more rows
