"""ultralytics' own exports, run through its own predictor: `ultralytics-onnx` and `ultralytics-openvino`.

The zoo's built (seeded, fused) YOLO module is exported offline by ultralytics' `export` at the
cell's static input size (the export is prepare_s), then loaded back as `YOLO(exported)` and run
with `predict`, exactly as an ultralytics user deploys: its letterbox, its ONNX Runtime or OpenVINO
session (its own thread count and, for OpenVINO, its LATENCY hint), its NMS and masks. This is
"ultralytics' own best export" beside segbench's own paths. ONNX is simplified with onnxslim when
installed (ultralytics' default; without it the export skips the step rather than install it).
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from segbench.backends.base import Backend, ForwardFn
from segbench.backends.ultralytics_predict import UltralyticsPipeline, UltralyticsPredict
from segbench.errors import UnsupportedError
from segbench.models.base import SegmentationAdapter


class ExportedPipeline(UltralyticsPipeline):
    """ultralytics' predictor on the model ultralytics exported; the export happens in `export`, during prepare."""

    def __init__(self, inner: SegmentationAdapter, fmt: str, options: dict[str, Any], cell_threads: bool = False):
        super().__init__(inner, cell_threads)
        self.fmt, self.export_options = fmt, options
        self.info: dict[str, Any] = {}

    def export(self, height: int, width: int) -> None:
        from ultralytics import YOLO

        model = self.yolo.model
        # What YOLO(yaml) sets on its own model, which export reads; pt_path puts the export in a temporary folder.
        from ultralytics.cfg import DEFAULT_CFG_DICT

        model.args, model.task = {**DEFAULT_CFG_DICT, **self.yolo.overrides}, "segment"
        folder = Path(tempfile.mkdtemp(prefix=f"segbench-ultralytics-{self.fmt}-"))
        model.pt_path = str(folder / f"{Path(self.card.extra['yaml']).stem}.pt")
        started = time.perf_counter()
        exported = self.yolo.export(
            format=self.fmt, imgsz=[height, width], device="cpu", batch=1, dynamic=False, **self.export_options
        )
        export_s = time.perf_counter() - started
        if not exported:
            raise UnsupportedError(f"ultralytics' {self.fmt} export produced nothing (see the cell's log)")
        threads = torch.get_num_threads()
        self.yolo = YOLO(exported, task="segment")
        torch.set_num_threads(threads)  # loading an export must not change the count other stages run with
        self.info = {
            "format": self.fmt,
            "export_s": round(export_s, 3),
            "exported": Path(exported).name,
            "export_options": dict(self.export_options),
        }


class UltralyticsExport(Backend):
    """A format ultralytics exports to and runs itself; subclasses name the format."""

    runtime = "pipeline"
    name: ClassVar[str]
    fmt: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]

    def unsupported_reason(self, device: torch.device) -> str | None:
        if device.type != "cpu":
            return f"{self.name} exports for the CPU (ultralytics' own {self.fmt} runtime); use it on device cpu"
        missing = [package for package in self.requires if importlib.util.find_spec(package) is None]
        if missing:
            return f"ultralytics' {self.fmt} export needs {', '.join(missing)} (pip install {' '.join(missing)})"
        return None

    @abstractmethod
    def export_options(self) -> dict[str, Any]:
        """The export arguments that make this format ultralytics' best for a CPU."""

    cell_threads: ClassVar[bool] = False  # torch (its pre/postprocess) at the cell's count, not ultralytics' pick

    def wrap(self, adapter: SegmentationAdapter) -> SegmentationAdapter:
        UltralyticsPredict().wrap(adapter)  # the same model check (ultralytics segmentation models only)
        return ExportedPipeline(adapter, self.fmt, self.export_options(), self.cell_threads)

    def prepare(self, adapter: SegmentationAdapter, example: Any) -> ForwardFn:
        assert isinstance(adapter, ExportedPipeline)
        height, width = example[0].shape[:2]
        adapter.export(*adapter.model_input_size(height, width))
        return adapter.forward

    def describe(self, adapter: SegmentationAdapter) -> dict[str, Any] | None:
        if not isinstance(adapter, ExportedPipeline):
            return None
        recent = adapter.speeds[-50:]
        own_stages = (
            {stage: float(np.median([speed[stage] for speed in recent])) for stage in recent[0]} if recent else None
        )
        return {
            **adapter.info,
            "pipeline": f"ultralytics YOLO.predict on its {self.fmt} export",
            "own_stage_median_ms": own_stages,
            "torch_threads_chosen_by_ultralytics": adapter.threads_chosen,
            "torch_threads_ran": adapter.threads_ran,
        }


class UltralyticsOnnx(UltralyticsExport):
    name = "ultralytics-onnx"
    description = (
        "ultralytics' own ONNX export (static shape) run by its predictor on ONNX Runtime; export is prepare_s"
    )
    fmt = "onnx"
    requires = ("onnx", "onnxruntime")
    warm_imports = ("ultralytics", "onnx", "onnxruntime")

    def export_options(self) -> dict[str, Any]:
        return {"simplify": importlib.util.find_spec("onnxslim") is not None}


class UltralyticsOpenVino(UltralyticsExport):
    name = "ultralytics-openvino"
    description = (
        "ultralytics' own OpenVINO export (static shape) run by its predictor (LATENCY hint at batch 1); "
        "export is prepare_s"
    )
    fmt = "openvino"
    requires = ("openvino",)
    warm_imports = ("ultralytics", "openvino")

    def export_options(self) -> dict[str, Any]:
        return {}
