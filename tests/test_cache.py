"""The prepare cache: keys that change with what an entry was built from, corrupt entries rebuilt, --no-cache."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from segbench import cache
from segbench.cell import CellRequest
from segbench.isolation import execute_isolated
from segbench.matrix import CellSpec
from segbench.suite import Timing
from tests.conftest import FAST_TIMING, FAULT_PLUGIN


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(root))
    monkeypatch.delenv(cache.NO_CACHE_ENV, raising=False)
    return root


def _key(module: nn.Module, **axes: Any) -> cache.CacheKey:
    cache.set_cell(
        **{
            "model": "test-tiny",
            "resolution": [16, 16],
            "batch_size": 1,
            "precision": "fp32",
            "backend": "onnxruntime",
            **axes,
        }
    )
    return cache.key("onnx-export", module, ("onnx",), opset=18)


def _store(key: cache.CacheKey, tmp_path: Path, content: bytes = b"graph") -> None:
    source = tmp_path / "built.onnx"
    source.write_bytes(content)
    assert cache.store(key, {"model.onnx": source}, {"info": {"export_s": 1.0}}) is not None


def test_an_entry_is_found_again_under_the_same_key(cache_root: Path, tmp_path: Path) -> None:
    key = _key(nn.Conv2d(3, 4, 1))
    assert cache.lookup(key) is None
    _store(key, tmp_path)
    entry = cache.lookup(key)
    assert (
        entry is not None
        and entry.file("model.onnx").read_bytes() == b"graph"
        and entry.extra == {"info": {"export_s": 1.0}}
    )
    assert entry.path.is_relative_to(cache_root)
    assert [event["status"] for event in cache.events()[-2:]] == ["miss", "hit"]


def test_a_torch_version_change_is_a_miss(cache_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = nn.Conv2d(3, 4, 1)
    _store(_key(module), tmp_path)
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9.9" if name == "torch" else real_version(name))
    changed = _key(module)
    assert changed.fields["versions"]["torch"] == "9.9.9"
    assert cache.lookup(changed) is None


def test_every_axis_and_the_weights_are_in_the_key(cache_root: Path) -> None:
    torch.manual_seed(0)
    module = nn.Conv2d(3, 4, 1)
    base = _key(module).digest
    for axes in (
        {"resolution": [32, 32]},
        {"batch_size": 2},
        {"precision": "ort-int8"},
        {"backend": "openvino"},
        {"model": "other"},
    ):
        assert _key(module, **axes).digest != base, axes
    with torch.no_grad():
        module.weight[0, 0, 0, 0] += 1.0
    assert _key(module).digest != base  # same architecture, other weights
    assert _key(module.half()).digest != base  # other dtype


def test_a_corrupt_entry_is_discarded_with_a_warning(cache_root: Path, tmp_path: Path) -> None:
    key = _key(nn.Conv2d(3, 4, 1))
    _store(key, tmp_path)
    entry = cache.lookup(key)
    assert entry is not None
    entry.file("model.onnx").write_bytes(b"grap")  # a torn write
    with pytest.warns(cache.CacheWarning, match="does not match its checksum"):
        assert cache.lookup(key) is None
    assert not entry.path.exists() and cache.events()[-1]["status"] == "corrupt"
    (entry.path.parent).mkdir(parents=True, exist_ok=True)
    _store(key, tmp_path)  # rebuilt
    assert cache.lookup(key) is not None


def test_no_cache_reads_and_writes_nothing(cache_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.NO_CACHE_ENV, "1")
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FORCE_DISABLE_CACHES"):
        monkeypatch.setenv(name, "")  # recorded, so what configure_inductor sets is undone after the test
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "force_disable_caches", inductor_config.force_disable_caches)
    key = _key(nn.Conv2d(3, 4, 1))
    source = tmp_path / "built.onnx"
    source.write_bytes(b"graph")
    assert cache.store(key, {"model.onnx": source}) is None
    assert cache.lookup(key) is None and cache.events()[-1]["status"] == "off"
    assert cache.summary(cache.events()[-1:]) == "off"
    cache.configure_inductor()
    assert not Path(cache.os.environ["TORCHINDUCTOR_CACHE_DIR"]).is_relative_to(cache_root)
    assert (
        cache.os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] == "1" and inductor_config.force_disable_caches is True
    )
    assert not cache_root.exists()


def test_inductor_compiles_into_the_segbench_cache(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")
    cache.configure_inductor()
    assert cache.os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache_root / cache.INDUCTOR_DIR)


def _onnx_cell() -> dict[str, Any]:
    cell = CellSpec(model="test-tiny", resolution=(16, 16), batch_size=1, precision="fp32", backend="onnxruntime")
    outcome = execute_isolated(CellRequest(cell, "cpu", Timing(**FAST_TIMING), 10.0, 1, plugins=(FAULT_PLUGIN,)), 240)
    assert outcome["status"] == "ok", outcome.get("traceback") or outcome["error"]
    return outcome


def test_an_onnx_export_is_reused_and_a_corrupt_one_rebuilt(cache_root: Path) -> None:
    cold, warm = _onnx_cell(), _onnx_cell()
    assert cold["prepare_cache"] == "miss" and cold["backend_info"]["cache"] == "miss"
    assert warm["prepare_cache"] == "hit" and warm["backend_info"]["cache"] == "hit"
    assert warm["latency_ms"]["n"] >= 1
    [graph] = list((cache_root / cache.ENTRIES_DIR / "onnx-export").glob("*/model.onnx"))
    graph.write_bytes(graph.read_bytes()[:-10])
    rebuilt = _onnx_cell()
    assert [event["status"] for event in rebuilt["cache_events"]] == ["corrupt"]  # discarded, so built afresh
    assert rebuilt["prepare_cache"] == "miss" and "does not match its checksum" in rebuilt["cache_events"][0]["reason"]
    assert _onnx_cell()["prepare_cache"] == "hit"


def test_no_cache_flag_on_the_cli(write_suite: Callable[..., Path], tmp_path: Path, cache_root: Path) -> None:
    suite_path = write_suite(backends=["onnxruntime"])
    done = subprocess.run(
        [sys.executable, "-m", "segbench", "run", str(suite_path), "--out", str(tmp_path / "r"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in next((tmp_path / "r").glob("*/results.jsonl")).read_text().splitlines()]
    assert record["status"] == "ok" and record["prepare_cache"] == "off" and record["backend_info"]["cache"] == "off"
    assert not (cache_root / cache.ENTRIES_DIR).exists()
    both = subprocess.run(
        [sys.executable, "-m", "segbench", "run", str(suite_path), "--no-cache", "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert both.returncode == 2 and "--cache-dir and --no-cache" in both.stderr + both.stdout
