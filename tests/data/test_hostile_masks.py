"""Issue 34, root cause 6: a dataset's masks and folders are read guarded. A non-image mask, a truncated PNG, a mask
over PIL's decompression-bomb limit, an unreadable mask or an unreadable images/ folder is one line at suite load
naming the file and the fix (each was a traceback before)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from segbench.errors import SuiteError
from segbench.suite.schema import load_suite
from tests.data.test_datasets import _save, plain_tree


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def _bomb(path: Path) -> None:
    """A 1-bit PNG whose header claims 4x PIL's pixel limit (a few kilobytes on disk)."""
    side = int((Image.MAX_IMAGE_PIXELS * 4) ** 0.5) + 1
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())


def _refuse(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, path_part: str) -> None:
    """Make `target.name` raise PermissionError for paths containing path_part (tests run as root, where chmod
    cannot make a file unreadable)."""
    real = getattr(target, name)

    def guarded(self_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        if path_part in str(self_or_path):
            raise PermissionError(13, "Permission denied", str(self_or_path))
        return real(self_or_path, *args, **kwargs)

    monkeypatch.setattr(target, name, guarded)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (
            lambda root, mp: (root / "masks/001.png").write_text("not a png"),
            # PIL tries every plugin on a file it cannot identify; one whose import fails in this process (another
            # test's stand-in module) makes it a decoder complaint: one line either way.
            r"masks/001.png: cannot (read|decode) this label mask",
        ),
        (
            lambda root, mp: _truncate(root / "masks/001.png"),
            r"masks/001.png: cannot read this label mask \(.*truncated",
        ),
        (lambda root, mp: _bomb(root / "masks/001.png"), r"masks/001.png: label mask is over PIL's decompression-bomb"),
        (
            lambda root, mp: _refuse(mp, Image, "open", "masks/001.png"),
            r"masks/001.png: cannot read this label mask \(Permission denied\)",
        ),
        (
            lambda root, mp: _refuse(mp, Path, "iterdir", "/images"),
            r"images: cannot list this folder \(Permission denied\); make it readable",
        ),
    ],
    ids=["not-an-image", "truncated", "decompression-bomb", "unreadable-mask", "unreadable-images-folder"],
)
def test_a_hostile_mask_or_folder_is_one_line_at_suite_load(
    tmp_path: Path,
    write_suite: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    break_it: Callable[[Path, pytest.MonkeyPatch], None],
    message: str,
) -> None:
    rng = np.random.default_rng(1)
    root = plain_tree(tmp_path / "data", [rng.integers(0, 4, (16, 16)).astype(np.uint8) for _ in range(2)])
    _save(root / "masks/001.png", rng.integers(0, 4, (16, 16)).astype(np.uint8))
    suite = write_suite(dataset=str(root))
    break_it(root, monkeypatch)
    with pytest.raises(SuiteError, match=rf"suite.yaml: dataset: .*{message}") as caught:
        load_suite(suite)
    assert "\n" not in str(caught.value)
