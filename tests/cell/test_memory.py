"""Memory figures: what a weight really occupies, and what the measured passes hold."""

from __future__ import annotations

import ctypes
from typing import Any

import pytest
import torch
from torch import nn

from segbench.backends import get_backend
from segbench.cell import passes as cell
from segbench.cell.request import CellRequest
from segbench.measure.memory import module_size_mb
from segbench.models.registry import create_model, load_plugin
from segbench.precision import get_precision
from segbench.precision.base import PrecisionContext
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import Timing
from tests.helpers import FAST_TIMING, FAULT_PLUGIN


def test_torchao_weights_count_their_stored_bytes() -> None:
    """An int8 weight-only Linear stores 1 byte per weight; torchao's tensor reports dtype float32 (4 bytes)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = nn.Sequential(nn.Linear(1024, 1024, bias=False))
    assert module_size_mb(model) == pytest.approx(4.0)
    quantize_(model, Int8WeightOnlyConfig())
    assert type(model[0].weight).__module__.startswith("torchao")
    # 1 MiB of int8 values plus one fp32 scale per output channel (4 KiB)
    assert module_size_mb(model) == pytest.approx(1.0 + 4 / 1024, rel=0.01)


def _fp32_rss_growth(monkeypatch: pytest.MonkeyPatch, calibration_images: int) -> float:
    """An fp32 eager cell measured in this process, with `calibration_images` photographs in its precision context."""
    real = cell.calibration_batches

    def more_photographs(height: int, width: int, batch_size: int, files: Any = ()) -> list[torch.Tensor]:
        photos = real(height, width, batch_size, files)
        return [photos[i % len(photos)].clone() for i in range(calibration_images)]

    monkeypatch.setattr(cell, "calibration_batches", more_photographs)
    spec = CellSpec(model="test-tiny", resolution=(512, 512), batch_size=1, precision="fp32", backend="eager")
    request = CellRequest(
        cell=spec, device="cpu", timing=Timing(**FAST_TIMING), poll_interval_ms=5, threads=None, probe=True
    )
    peaks = cell.measure_cell(request)["memory_mb"]
    return peaks["rss_peak"] - peaks["baseline"]


def test_fp32_peak_does_not_depend_on_the_calibration_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The precision context (fp32 example + preprocessed calibration batches) is gone before anything is measured.

    32 calibration batches at 512x512 are 96 MiB of float32; kept alive, they would sit in every peak.
    """
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(
        -3, 128 * 1024
    )  # M_MMAP_THRESHOLD fixed: freed large blocks go back to the OS, so RSS shows what is alive
    load_plugin(FAULT_PLUGIN)
    _fp32_rss_growth(monkeypatch, 1)  # first cell in this process: library initialisation
    few, many = _fp32_rss_growth(monkeypatch, 1), _fp32_rss_growth(monkeypatch, 32)
    assert many - few < 24, f"RSS growth {few:.0f} MiB with 1 calibration batch, {many:.0f} MiB with 32"


def test_onnxruntime_frees_what_preparation_left_and_records_its_session_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """After prepare nothing holds the calibration data or the eager outputs; the session's own memory is its own
    figure."""
    monkeypatch.setenv("SEGBENCH_NO_CACHE", "1")  # a fresh export and rewrite, as on a first run
    load_plugin(FAULT_PLUGIN)
    adapter = create_model("test-tiny")
    adapter.build("cpu")
    with torch.inference_mode():
        example = adapter.preprocess(torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8))
    graph = get_precision("ort-int8").apply(
        adapter.model, torch.device("cpu"), PrecisionContext(example=example, calibration=(example.clone(),))
    )
    adapter.model = graph
    backend = get_backend("onnxruntime")
    forward = backend.prepare(adapter, example)
    assert graph.calibration == []  # calibration arrays were preparation only
    held = [cell.cell_contents for cell in forward.__closure__ or ()]
    assert not any(isinstance(value, torch.Tensor) for value in held)  # no eager reference outputs kept for the binding
    info = backend.describe(adapter)
    assert info is not None and isinstance(info["session_mb"], float) and "arena" in info["session_mb_is"]
    assert forward(example).shape == (1, 4, 32, 32)
