"""The prepare cache: keys that change with what an entry was built from, corrupt entries rebuilt, --no-cache."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from segbench.cell.request import CellRequest
from segbench.models.registry import load_plugin, plugin_module_name
from segbench.run.isolation import execute_isolated
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import Timing
from segbench.system import cache
from tests.helpers import FAST_TIMING, FAULT_PLUGIN


def _fault_models() -> ModuleType:
    """The fault plugin as segbench loads it (imported as `tests.fault_models` too, its models would register twice)."""
    load_plugin(FAULT_PLUGIN)
    return sys.modules[plugin_module_name(Path(FAULT_PLUGIN))]


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


# ---- int8 (PT2E): the converted program ------------------------------------------------------------------


def _int8_key_and_program(monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[cache.CacheKey, Any, Any]:
    from segbench.precision.int8 import program_key, quantize_pt2e_x86
    TinyNet = _fault_models().TinyNet

    torch.manual_seed(0)
    model, example = TinyNet().eval(), torch.rand(1, 3, 16, 16)
    cache.set_cell(model="test-tiny", resolution=[16, 16], batch_size=1, precision="int8", backend="eager")
    key = program_key(model, example, [example], reduce_range=False)
    return key, quantize_pt2e_x86(model, example, [example], reduce_range=False), example


def test_an_int8_program_is_stored_and_loaded_back(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segbench.precision.int8 import cached_program, store_program

    key, converted, example = _int8_key_and_program()
    share = {"params": 1.0, "flops": 1.0, "layers": "2 of 2 conv/linear"}
    assert cached_program(key) is None and cache.events()[-1]["status"] == "miss"
    assert store_program(key, converted, example, share) == "miss"
    found = cached_program(key)
    assert found is not None and cache.events()[-1]["status"] == "hit"
    loaded, loaded_share = found
    assert loaded_share == share
    assert torch.equal(loaded(example), converted(example))  # the same quantize/dequantize graph
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "0.0.1" if name == "torchao" else real_version(name)
    )
    assert cached_program(_int8_key_and_program()[0]) is None  # a torchao upgrade never reuses a program


def test_a_corrupt_int8_program_is_discarded(cache_root: Path) -> None:
    from segbench.precision.int8 import PROGRAM_FILE, cached_program, store_program

    key, converted, example = _int8_key_and_program()
    store_program(key, converted, example, {"params": 1.0})
    [program] = list((cache_root / cache.ENTRIES_DIR / "pt2e-int8").glob(f"*/{PROGRAM_FILE}"))
    program.write_bytes(b"not a zip archive")
    manifest = json.loads((program.parent / cache.MANIFEST).read_text())
    manifest["files"][PROGRAM_FILE] = cache._sha256(program)  # checksums agree: only loading finds it broken
    (program.parent / cache.MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(cache.CacheWarning, match="torch.export.load failed"):
        assert cached_program(key) is None
    assert cache.events()[-1]["status"] == "corrupt" and not program.parent.exists()


def test_no_cache_keeps_no_int8_program(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segbench.precision.int8 import cached_program, store_program

    monkeypatch.setenv(cache.NO_CACHE_ENV, "1")
    key, converted, example = _int8_key_and_program()
    assert cached_program(key) is None and cache.events()[-1]["status"] == "off"
    assert store_program(key, converted, example, {"params": 1.0}) == "off"
    assert not cache_root.exists()


def _int8_cell() -> dict[str, Any]:
    cell = CellSpec(model="test-tiny", resolution=(16, 16), batch_size=1, precision="int8", backend="eager")
    outcome = execute_isolated(CellRequest(cell, "cpu", Timing(**FAST_TIMING), 10.0, 1, plugins=(FAULT_PLUGIN,)), 600)
    assert outcome["status"] == "ok", outcome.get("traceback") or outcome["error"]
    return outcome


def test_a_second_int8_cell_skips_calibration(cache_root: Path) -> None:
    cold, warm = _int8_cell(), _int8_cell()
    assert cold["prepare_cache"] == "miss" and "export + calibrate + convert, cache miss" in cold["notes"][-2]
    assert warm["prepare_cache"] == "hit" and "loaded from the cache" in warm["notes"][-2]
    assert [event["kind"] for event in warm["cache_events"]][:1] == ["pt2e-int8"]
    assert warm["quantized_share"] == cold["quantized_share"] and warm["quantized_share"]["params"] > 0
    assert warm["fidelity"] is not None and warm["fidelity"]["pixel_agreement"] > 0.9


def test_onnx_export_leftovers_stay_out_of_the_cells_peak(cache_root: Path) -> None:
    """The export runs in a forked child: what it leaves alive (here 256 MiB) never shows in the cell's RSS peak."""
    EXPORT_LEFTOVER_MB = _fault_models().EXPORT_LEFTOVER_MB

    cell = CellSpec(
        model="test-export-leak", resolution=(16, 16), batch_size=1, precision="fp32", backend="onnxruntime"
    )
    outcome = execute_isolated(CellRequest(cell, "cpu", Timing(**FAST_TIMING), 10.0, 1, plugins=(FAULT_PLUGIN,)), 240)
    assert outcome["status"] == "ok", outcome.get("traceback") or outcome["error"]
    assert outcome["prepare_cache"] == "miss"  # exported in this cell
    memory_mb = outcome["memory_mb"]
    assert memory_mb["rss_peak"] - memory_mb["baseline"] < EXPORT_LEFTOVER_MB / 2, memory_mb
    assert outcome["backend_info"]["built_in"] == "a forked child process"


# ---- OpenVINO: the converted and the NNCF-quantized IR -----------------------------------------------------


def _openvino_model() -> tuple[cache.CacheKey, Any]:
    pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'segbench[openvino]')")
    from segbench.backends.onnxruntime import FlatOutputs, OutputLayout
    from segbench.backends.openvino import convert_to_openvino, model_key
    TinyNet = _fault_models().TinyNet

    torch.manual_seed(0)
    model, example = TinyNet().eval(), torch.rand(1, 3, 16, 16)
    cache.set_cell(model="test-tiny", resolution=[16, 16], batch_size=1, precision="fp32", backend="openvino")
    with torch.no_grad():
        ov_model, _ = convert_to_openvino(FlatOutputs(model, OutputLayout.of(model(example))), example)
    return model_key(model, None, example), ov_model


def test_an_openvino_model_is_stored_and_read_back(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segbench.backends.openvino import cached_model, store_model

    key, ov_model = _openvino_model()
    assert cached_model(key, None) is None and cache.events()[-1]["status"] == "miss"
    assert store_model(key, ov_model, {"conversion": "pytorch frontend"}, None) == "miss"
    found = cached_model(key, None)
    assert found is not None and found[1] == {"conversion": "pytorch frontend", "cache": "hit"}
    assert len(found[0].get_ordered_ops()) == len(ov_model.get_ordered_ops())
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "1.0.0" if name == "openvino" else real_version(name)
    )
    assert cached_model(_openvino_model()[0], None) is None  # an OpenVINO upgrade never reuses an IR


def test_an_unreadable_openvino_model_is_discarded(cache_root: Path) -> None:
    from segbench.backends.openvino import MODEL_XML, cached_model, store_model

    key, ov_model = _openvino_model()
    store_model(key, ov_model, {}, None)
    [xml] = list((cache_root / cache.ENTRIES_DIR / "openvino-model").glob(f"*/{MODEL_XML}"))
    xml.write_text("<net>not an IR")
    manifest = json.loads((xml.parent / cache.MANIFEST).read_text())
    manifest["files"][MODEL_XML] = cache._sha256(xml)  # checksums agree: only reading finds it broken
    (xml.parent / cache.MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(cache.CacheWarning, match="OpenVINO could not read it"):
        assert cached_model(key, None) is None
    assert cache.events()[-1]["status"] == "corrupt" and not xml.parent.exists()


def test_no_cache_keeps_no_openvino_model(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segbench.backends.openvino import blob_cache_dir, cached_model, store_model

    monkeypatch.setenv(cache.NO_CACHE_ENV, "1")
    key, ov_model = _openvino_model()
    assert cached_model(key, None) is None and cache.events()[-1]["status"] == "off"
    assert store_model(key, ov_model, {}, None) == "off" and blob_cache_dir() is None
    assert not cache_root.exists()


def _openvino_cell(precision: str) -> dict[str, Any]:
    cell = CellSpec(model="test-tiny", resolution=(16, 16), batch_size=1, precision=precision, backend="openvino")
    outcome = execute_isolated(CellRequest(cell, "cpu", Timing(**FAST_TIMING), 10.0, 1, plugins=(FAULT_PLUGIN,)), 300)
    assert outcome["status"] == "ok", outcome.get("traceback") or outcome["error"]
    return outcome


@pytest.mark.parametrize("precision", ["fp32", "ov-int8"])
def test_a_second_openvino_cell_skips_conversion(cache_root: Path, precision: str) -> None:
    pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'segbench[openvino]')")
    pytest.importorskip("nncf", reason="the openvino extra is not installed (pip install 'segbench[openvino]')")
    cold, warm = _openvino_cell(precision), _openvino_cell(precision)
    assert cold["prepare_cache"] == "miss" and cold["backend_info"]["cache"] == "miss"
    assert warm["prepare_cache"] == "hit" and warm["backend_info"]["cache"] == "hit"
    assert warm["backend_info"]["compiled_blob_cache"] == "on" and (cache_root / "openvino-blobs").is_dir()
    assert warm["quantized_share"] == cold["quantized_share"] and warm["notes"] == cold["notes"]
    assert warm["fidelity"]["pixel_agreement"] >= (0.999 if precision == "fp32" else 0.9)
