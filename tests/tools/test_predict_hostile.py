"""Issue 34, root cause 7: `predict` under hostile file names, weights and output folders. Each test names the defect
it guards; each failed on the old code (a segfault, a silent overwrite, a hang, a traceback or a wrong message)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segbench.errors import SegbenchError
from segbench.models.registry import load_plugin
from segbench.tools.predict import check_image_size, predict
from tests.helpers import FAULT_PLUGIN, segbench


def _photo(path: Path, side: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    path.write_bytes(cv2.imencode(".png", pixels)[1].tobytes())
    return path


def _predict_cli(*args: str | Path, timeout: float = 120) -> tuple[int, str]:
    done = segbench(
        "predict", "test-tiny", *map(str, args), "--plugin", FAULT_PLUGIN, "--device", "cpu", timeout=timeout
    )
    return done.returncode, done.stdout + done.stderr


def test_a_file_name_that_is_not_utf8_is_segmented_not_a_segfault(tmp_path: Path) -> None:
    """cv2.imread on a surrogate-escaped path crashed the process (SIGSEGV); the bytes are now read in Python."""
    image = _photo(tmp_path / os.fsdecode(b"caf\xe9.png"))
    code, output = _predict_cli(image, "--out", tmp_path / "out")
    assert code == 0, output
    assert "Traceback" not in output
    written = sorted(os.listdir(os.fsencode(tmp_path / "out")))
    assert b"caf\xe9.classes.png" in written and b"caf\xe9.json" in written


def test_images_with_the_same_file_name_get_distinct_outputs_and_a_note(tmp_path: Path) -> None:
    """`a/cam.png b/cam.png` wrote both to cam.*: the second silently overwrote the first."""
    first, second = _photo(tmp_path / "a/cam.png"), _photo(tmp_path / "b/cam.png", side=32)
    load_plugin(FAULT_PLUGIN)
    predictions = predict("test-tiny", [first, second], tmp_path / "out")
    assert len({p.class_map for p in predictions}) == 2 and len({p.summary for p in predictions}) == 2
    assert [json.loads(p.summary.read_text())["image"] for p in predictions] == [str(first), str(second)]
    code, output = _predict_cli(first, second, "--out", tmp_path / "cli")
    assert code == 0 and "note: 1 image(s) share a file name" in output and "cam-2.classes.png" in output


def test_a_fifo_as_weights_is_refused_not_a_hang(tmp_path: Path) -> None:
    """A FIFO given as --weights blocked the read forever."""
    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    code, output = _predict_cli(_photo(tmp_path / "x.png"), "--weights", fifo, "--out", tmp_path / "out", timeout=90)
    assert code == 2 and "is not a regular file or folder" in output and "Traceback" not in output


@pytest.mark.parametrize("where", ["a-file", "under-a-file"])
def test_an_out_that_is_a_file_or_unwritable_is_one_line(tmp_path: Path, where: str) -> None:
    """--out naming a file (or a folder under one) gave a FileExistsError / NotADirectoryError traceback."""
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    out = blocker if where == "a-file" else blocker / "sub"
    load_plugin(FAULT_PLUGIN)
    with pytest.raises(SegbenchError, match=r"^--out .*taken.*(is a file, not a folder|cannot write there)"):
        predict("test-tiny", [_photo(tmp_path / "x.png")], out)
    code, output = _predict_cli(tmp_path / "x.png", "--out", out)
    assert code == 2 and output.count("\n") == 1 and "Traceback" not in output


def test_a_plugin_models_missing_weights_is_named_as_missing_weights(tmp_path: Path) -> None:
    """With a plugin's model, a missing --weights said "unknown model" (the check ran before the plugin loaded)."""
    code, output = _predict_cli(_photo(tmp_path / "x.png"), "--weights", tmp_path / "nope.pt")
    assert code == 2 and "--weights: not found" in output and "unknown model" not in output


def test_max_pixels_above_pils_limit_is_the_one_limit(tmp_path: Path) -> None:
    """A --max-pixels raised above PIL's decompression-bomb limit still said "over N pixels" for a smaller image."""
    side = int((Image.MAX_IMAGE_PIXELS * 2.2) ** 0.5)  # past PIL's hard limit (twice its warning limit)
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    big = tmp_path / "big.png"
    big.write_bytes(buffer.getvalue())
    check_image_size(big, max_pixels=side * side)  # allowed: no false "over N pixels"
    with pytest.raises(SegbenchError, match="over --max-pixels"):
        check_image_size(big, max_pixels=side * side - 1)
    assert Image.MAX_IMAGE_PIXELS < side * side  # PIL's own limit is restored after the check
