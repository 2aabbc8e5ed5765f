"""Issue 34, root causes 8 and 5 (the prepare cache's part).

Root cause 8: an unusable cache root (read-only HOME, SEGBENCH_CACHE_DIR on a read-only mount, --cache-dir under a
file) failed every cell, fp32 eager included, though that cell needs no cache. Root cause 5: a manifest nested past
the parser's limit, or of the wrong shape, escaped as RecursionError/AttributeError, so that cell failed on every
later run, for good.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from segbench.results import store as results
from segbench.system import cache
from tests.helpers import segbench


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(root))
    monkeypatch.delenv(cache.NO_CACHE_ENV, raising=False)
    return root


def _key() -> cache.CacheKey:
    cache.set_cell(model="test-tiny", resolution=[16, 16], batch_size=1, precision="fp32", backend="onnxruntime")
    return cache.key("onnx-export", nn.Conv2d(3, 4, 1), ("onnx",), opset=18)


MANIFESTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "nested past the parser": lambda good: '{"key": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "nested 40 deep": lambda good: json.dumps({**good, "extra": json.loads('{"a": ' * 40 + "1" + "}" * 40)}),
    "files a list": lambda good: json.dumps({**good, "files": ["model.onnx"]}),
    "key a string": lambda good: json.dumps({**good, "key": "k"}),
    "a file outside the entry": lambda good: json.dumps({**good, "files": {"../../x": "0"}}),
}


@pytest.mark.parametrize("damage", list(MANIFESTS))
def test_a_bad_manifest_is_discarded_and_rebuilt(cache_root: Path, tmp_path: Path, damage: str) -> None:
    """Guards root cause 5 for the cache: a bad manifest is a discarded entry (with a warning), never a failure."""
    key = _key()
    source = tmp_path / "built.onnx"
    source.write_bytes(b"graph")
    entry = cache.store(key, {"model.onnx": source}, {"info": {}})
    assert entry is not None
    manifest = entry.path / cache.MANIFEST
    manifest.write_text(MANIFESTS[damage](json.loads(manifest.read_text())))
    with pytest.warns(cache.CacheWarning, match="discarding"):
        assert cache.lookup(key) is None
    assert not entry.path.exists()
    assert cache.store(key, {"model.onnx": source}, {"info": {}}) is not None and cache.lookup(key) is not None


@pytest.mark.parametrize("how", ["SEGBENCH_CACHE_DIR", "--cache-dir"])
def test_a_cache_root_under_a_file_warns_once_and_the_cell_runs_uncached(
    write_suite: Callable[..., Path], tmp_path: Path, how: str
) -> None:
    """Guards root cause 8: the cache root cannot be created (a file is in its path); fp32 eager still runs."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    unusable = blocker / "cache"
    suite = write_suite()
    env_root = {"SEGBENCH_CACHE_DIR": str(unusable)} if how == "SEGBENCH_CACHE_DIR" else {}
    flags = ["--cache-dir", str(unusable)] if how == "--cache-dir" else []
    done = segbench("run", str(suite), "--out", str(tmp_path / "out"), *flags, env={**os.environ, **env_root})
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line for line in done.stderr.splitlines() if "prepare cache is unusable" in line]
    assert len(warnings) == 1 and str(blocker) in warnings[0], done.stderr
    [run_dir] = (tmp_path / "out").iterdir()
    [record] = results.read_records(run_dir)
    assert record["status"] == "ok", record.get("error")
