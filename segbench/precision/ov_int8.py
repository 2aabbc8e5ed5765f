"""ov-int8: NNCF post-training int8 quantization of the converted OpenVINO graph (backend openvino only).

The openvino backend converts the float model; this precision then runs `nncf.quantize` on the
`ov.Model`, calibrated on the cell's calibration photographs (never the images fidelity is judged
on), as NNCF's documentation recommends: the MIXED preset (symmetric weights, asymmetric
activations) for networks with non-ReLU activations (SiLU, GELU, Hardswish), PERFORMANCE for
ReLU-only ones; the transformer model type for SegFormer, Mask2Former and SAM (it keeps
LayerNorm/Softmax in float and smooths activation outliers); and, for ultralytics detection heads,
the head's own box arithmetic and sigmoids left in float, as ultralytics' own int8 export does.
OpenVINO's CPU plugin runs the FakeQuantize graph with integer kernels (VNNI/AMX where the CPU has
them, plain AVX2 int8 arithmetic where it does not).

What was converted is read back from the quantized graph (`ov_quantized_share`), as ort-int8 does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from segbench.backends.openvino import INSTALL_LINE, OpenVinoGraphPrecision
from segbench.models.base import SegmentationAdapter
from segbench.precision.base import Precision, PrecisionContext
from segbench.precision.int8 import cpu_has_vnni, recall_share, remember_share, ultralytics_detect_head

TRANSFORMER_FAMILIES = frozenset({"segformer", "mask2former", "sam"})
NON_RELU_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.PReLU,
    nn.LeakyReLU,
    nn.Hardsigmoid,
)
LAYER_OPS = frozenset(
    {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul"}
)
# Ops between a stored weight and the layer that reads it: decompression (Convert, Subtract, Multiply), layout,
# FakeQuantize.
WEIGHT_PATH_OPS = frozenset(
    {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "FakeQuantize"}
)
# Ops that pass quantized values through unchanged (their first input is the data).
AGNOSTIC_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Unsqueeze",
        "Squeeze",
        "VariadicSplit",
        "Split",
        "StridedSlice",
        "Slice",
        "Gather",
        "MaxPool",
        "Pad",
        "Interpolate",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
LOW_BIT_TYPES = frozenset({"i8", "u8", "i4", "u4"})


# ---- what NNCF quantized ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSource:
    dims: tuple[int, ...]
    quantized: bool  # stored as int8 (or narrower), or fed through a FakeQuantize


def weight_source(output: Any) -> WeightSource | None:
    """The constant a layer input is computed from, or None when it is an activation."""
    node = output.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        return WeightSource(tuple(node.get_output_shape(0)), node.get_element_type().get_type_name() in LOW_BIT_TYPES)
    if kind not in WEIGHT_PATH_OPS:
        return None
    sources = [weight_source(value) for value in node.input_values()]
    if any(source is None for source in sources):  # an activation enters here: not a weight path
        return None
    largest = max(sources, key=lambda source: math.prod(source.dims))  # type: ignore[union-attr]
    return WeightSource(largest.dims, kind == "FakeQuantize" or any(source.quantized for source in sources))  # type: ignore[union-attr]


def fake_quantized(output: Any) -> bool:
    """Whether an activation reaches its layer quantized: from a FakeQuantize, through ops that keep values as they are.

    NNCF moves quantizers up through quantization-agnostic ops (concat, split, pooling, layout), so a
    conv after a Concat is int8 when every branch entering the Concat is.
    """
    node = output.get_node()
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Concat":
        return all(fake_quantized(value) for value in node.input_values())
    return kind in AGNOSTIC_OPS and fake_quantized(node.input_value(0))


def static_dims(output: Any) -> tuple[int, ...] | None:
    shape = output.get_partial_shape()
    return tuple(d.get_length() for d in shape) if shape.is_static else None


def layer_flops(node: Any, weight: WeightSource | None) -> float | None:
    """2 x multiply-adds of a conv or matmul node, from its static shapes; None when a shape is unknown."""
    kind = node.get_type_name()
    output, first = static_dims(node.output(0)), static_dims(node.input_value(0))
    if output is None or first is None:
        return None
    if kind == "MatMul":
        depth = first[-2] if node.get_attributes().get("transpose_a") else first[-1]
        return 2.0 * math.prod(output) * depth
    assert weight is not None
    per_group = weight.dims[2:] if kind.startswith("Group") else weight.dims[1:]
    if kind.endswith("BackpropData"):  # transposed conv: every input element meets every (output channel, tap)
        return 2.0 * math.prod(first) * math.prod(per_group)
    return 2.0 * math.prod(output) * math.prod(per_group)


def bias_params(node: Any) -> int:
    """Parameters of the bias Add that follows a layer (OpenVINO keeps bias as a separate Add of a constant)."""
    for target in node.output(0).get_target_inputs():
        consumer = target.get_node()
        if consumer.get_type_name() == "Add":
            sources = [weight_source(value) for value in consumer.input_values()]
            constant = next((source for source in sources if source is not None), None)
            if constant is not None:
                return math.prod(constant.dims)
    return 0


def ov_quantized_share(ov_model: Any, total_params: int) -> dict[str, Any]:
    """Share of parameters and FLOPs in the conv/matmul nodes that compute in int8 after NNCF."""
    layers = converted = converted_params = 0
    flops = {"all": 0.0, "converted": 0.0}
    flops_known = True
    for node in ov_model.get_ordered_ops():
        if node.get_type_name() not in LAYER_OPS:
            continue
        weight = weight_source(node.input_value(1))
        node_flops = layer_flops(node, weight)
        flops_known = flops_known and node_flops is not None
        input_quantized = fake_quantized(node.input_value(0))
        is_converted = input_quantized and (
            weight.quantized if weight is not None else fake_quantized(node.input_value(1))
        )
        flops["all"] += node_flops or 0.0
        flops["converted"] += (node_flops or 0.0) if is_converted else 0.0
        if weight is None:  # activation x activation (attention): compute, not parameters
            continue
        layers += 1
        if is_converted:
            converted += 1
            converted_params += math.prod(weight.dims) + bias_params(node)
    return {
        "params": converted_params / total_params if total_params else 0.0,
        "flops": flops["converted"] / flops["all"] if flops_known and flops["all"] else None,
        "layers": f"{converted} of {layers} conv/linear",
    }


# ---- the quantization --------------------------------------------------------------------------------------


def uses_only_relu(model: nn.Module) -> bool:
    return not any(
        isinstance(module, NON_RELU_ACTIVATIONS) or "GELU" in type(module).__name__ for module in model.modules()
    )


def detection_head_scope(ov_model: Any, model: nn.Module) -> Any:
    """ultralytics' own int8 recipe: a Detect head's box arithmetic (DFL, anchors) and its sigmoids stay in float."""
    import nncf

    if ultralytics_detect_head(model) is None:
        return None
    operations = ov_model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in operations if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return None
    scope = sigmoids[-1].split("/", 1)[0]
    names = [
        op.get_friendly_name()
        for op in operations
        if op.get_type_name() == "Sigmoid" or op.get_friendly_name().startswith((f"{scope}/", f"{scope}.dfl"))
    ]
    return nncf.IgnoredScope(names=names, validate=False)


def nncf_quantize(
    ov_model: Any, float_model: nn.Module, family: str, calibration: Sequence[np.ndarray]
) -> tuple[Any, list[str]]:
    """nncf.quantize with the settings NNCF recommends for this kind of network; returns the model and what was
    chosen."""
    import logging

    import nncf

    nncf.set_log_level(logging.WARNING)  # its INFO lines name every op it leaves unquantized
    preset = nncf.QuantizationPreset.PERFORMANCE if uses_only_relu(float_model) else nncf.QuantizationPreset.MIXED
    model_type = nncf.ModelType.TRANSFORMER if family in TRANSFORMER_FAMILIES else None
    ignored = detection_head_scope(ov_model, float_model)
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset(list(calibration)),
        preset=preset,
        model_type=model_type,
        subset_size=len(calibration),
        ignored_scope=ignored,
    )
    chosen = [f"preset {preset.value}", f"model type {model_type.value if model_type else 'default (CNN)'}"]
    if ignored is not None:
        chosen.append(f"{len(ignored.names)} detection-head ops left in float (ultralytics' recipe)")
    return quantized, chosen


class OvInt8Graph(OpenVinoGraphPrecision):
    """The float model plus its calibration batches; the openvino backend calls `rewrite` on the converted graph."""

    precision_name = "ov-int8"
    cache_libraries = ("nncf",)

    def __init__(self, float_model: nn.Module, calibration: Sequence[np.ndarray], on_settings: Any):
        super().__init__(float_model)
        self.calibration = list(calibration)
        self.on_settings = on_settings
        self.settings: list[str] = []

    def cache_fields(self) -> dict[str, Any]:
        return {
            "calibration_sha256": hashlib.sha256(b"".join(batch.tobytes() for batch in self.calibration)).hexdigest()
        }

    def cache_state(self) -> dict[str, Any]:
        return {"quantized_share": recall_share(self), "settings": self.settings}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("quantized_share") is not None:
            remember_share(self, state["quantized_share"])
        self.settings = list(state.get("settings", []))
        self.on_settings(self.settings)

    def rewrite(self, ov_model: Any, adapter: SegmentationAdapter) -> Any:
        quantized, settings = nncf_quantize(ov_model, self.float_model, adapter.card.family, self.calibration)
        remember_share(self, ov_quantized_share(quantized, sum(p.numel() for p in self.float_model.parameters())))
        self.settings = settings
        self.on_settings(settings)
        return quantized


class OvInt8(Precision):
    name = "ov-int8"
    description = (
        "OpenVINO int8 via NNCF post-training quantization (MinMax-style calibration on the calibration "
        "photographs); backend openvino only"
    )
    warm_imports = ("openvino", "nncf")
    matmul_class = "int8"
    runs_on = ("openvino",)
    graph_class: type[OvInt8Graph] = OvInt8Graph

    def __init__(self) -> None:
        self._calibration_count = 0
        self._settings: list[str] = []

    def unsupported_reason(self, device: torch.device) -> str | None:
        missing = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None]
        if missing:
            return f"ov-int8 needs {' and '.join(missing)}: {INSTALL_LINE}"
        return None

    def notes(self, device: torch.device) -> list[str]:
        detail = f"calibrated on {self._calibration_count} calibration photographs"
        if self._settings:
            detail += f"; {', '.join(self._settings)}"
        if device.type == "cpu" and not cpu_has_vnni():
            detail += "; this CPU has no VNNI/AMX: int8 runs on plain AVX2 integer arithmetic and gains far less"
        return [f"NNCF post-training quantization on the OpenVINO graph, {detail}"]

    def quantized_share(self, model: nn.Module) -> dict[str, Any] | None:
        return recall_share(model)

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        batches = [batch.float().cpu().numpy() for batch in (context.calibration or (context.example,))]
        self._calibration_count = sum(batch.shape[0] for batch in batches)
        self._settings = []
        return self.graph_class(model.float(), batches, self._settings.extend)
