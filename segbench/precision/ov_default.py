"""ov-default: the float model with OpenVINO's own default inference precision (backend openvino only).

`fp32` on backend openvino asks the CPU plugin for f32, true to the name. A user who converts a model and
never sets INFERENCE_PRECISION_HINT (ultralytics' `export(format="openvino")` and its predictor among them)
gets the plugin's default instead: bf16 on CPUs with avx512_bf16 or AMX, f32 elsewhere. This precision is
that choice, made explicit: the graph is the fp32 conversion, the hint is left
unset, and `backend_info.inference_precision` records what the plugin chose. Fidelity against fp32 eager
says what the choice costs.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from segbench.backends.openvino import INSTALL_LINE, OpenVinoGraphPrecision
from segbench.models.base import SegmentationAdapter
from segbench.precision.base import Precision, PrecisionContext


class PluginDefaultGraph(OpenVinoGraphPrecision):
    """The float graph unchanged; only the inference precision is left to the plugin."""

    precision_name = "ov-default"
    float_hint = None

    def rewrite(self, ov_model: Any, adapter: SegmentationAdapter) -> Any:
        return ov_model


class OvDefault(Precision):
    name = "ov-default"
    description = (
        "the float model with OpenVINO's default inference precision (bf16 on CPUs with native bf16, f32 elsewhere: "
        "what an export run without options gets); backend openvino only"
    )
    matmul_class = "fp32"  # the headline ceiling; backend_info.inference_precision says what the plugin ran
    warm_imports = ("openvino",)
    runs_on = ("openvino",)

    def unsupported_reason(self, device: torch.device) -> str | None:
        if importlib.util.find_spec("openvino") is None:
            return f"ov-default needs openvino: {INSTALL_LINE}"
        return None

    def notes(self, device: torch.device) -> list[str]:
        return ["OpenVINO's inference precision left to the plugin (backend_info.inference_precision says which)"]

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        return PluginDefaultGraph(model.float())
