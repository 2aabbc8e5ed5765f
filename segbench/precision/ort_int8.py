"""ort-int8: ONNX Runtime's own static int8 quantization of the exported graph (backend onnxruntime only).

The onnxruntime backend exports the float model; this precision then pre-processes the graph
(shape inference + ORT graph optimisation, as ORT recommends before quantizing), calibrates it on
the cell's photographs (activation ranges at the 99.999th percentile, so a few outlier activations do
not coarsen every other value's step) and writes a QDQ graph: int8 weights per output channel, uint8
activations per tensor. ONNX Runtime's CPU provider fuses the QDQ pairs into integer kernels
(QLinearConv, MatMulInteger); on NVIDIA GPUs the TensorRT provider runs QDQ graphs as int8 engines,
so ort-int8 on CUDA needs TensorRT.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import logging
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from segbench.backends.onnxruntime import OnnxGraphPrecision
from segbench.precision.base import Precision, PrecisionContext
from segbench.precision.int8 import (
    cpu_has_vnni,
    recall_share,
    remember_share,
    tensorrt_status,
    ultralytics_detect_head,
)

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CALIBRATION_NAME = "Percentile"  # onnxruntime.quantization.CalibrationMethod member (99.999th percentile by default)


# ---- what ORT quantized ------------------------------------------------------------------------------


def _known_shape(value: Any) -> tuple[int, ...] | None:
    dims = value.type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims)
    return shape if dims and all(d > 0 for d in shape) else None


def _matmul_depth(node: Any, weight_dims: Sequence[int] | None, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """The reduction length K of a Conv/Gemm/MatMul, from its weight or its first input."""
    if weight_dims is not None:
        if node.op_type in ("Conv", "ConvTranspose"):
            return math.prod(weight_dims[1:])
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            return weight_dims[1] if trans_b else weight_dims[0]
        return weight_dims[-2]
    first = shapes.get(node.input[0])
    return first[-1] if first else None


def onnx_quantized_share(path: Path, total_params: int) -> dict[str, Any]:
    """Share of parameters and FLOPs in the Conv/Gemm/MatMul nodes whose weights ORT stored as int8."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    initializers = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    shapes = {
        value.name: shape
        for value in (*graph.value_info, *graph.input, *graph.output)
        if (shape := _known_shape(value))
    }

    def source(name: str) -> tuple[tuple[int, ...] | None, bool]:
        """(the initializer's dims, whether it is stored quantized) for a node input, or (None, dequantized?)."""
        if name in initializers:
            return initializers[name], False
        node = producers.get(name)
        dequantized = node is not None and node.op_type == "DequantizeLinear"
        if dequantized and node.input[0] in initializers:
            return initializers[node.input[0]], True
        return None, dequantized

    layers = converted = converted_params = 0
    flops = {"all": 0.0, "converted": 0.0}
    flops_known = True
    for node in graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        weight, weight_quantized = source(node.input[1])
        _, input_quantized = source(node.input[0])
        output, depth = shapes.get(node.output[0]), _matmul_depth(node, weight, shapes)
        node_flops = 2.0 * math.prod(output) * depth if output and depth else None
        flops_known = flops_known and node_flops is not None
        is_converted = weight_quantized if weight is not None else input_quantized and source(node.input[1])[1]
        flops["all"] += node_flops or 0.0
        flops["converted"] += (node_flops or 0.0) if is_converted else 0.0
        if weight is None:  # activation x activation (attention): compute, not parameters
            continue
        layers += 1
        if weight_quantized:
            converted += 1
            bias = source(node.input[2])[0] if len(node.input) > 2 and node.input[2] else None
            converted_params += math.prod(weight) + (math.prod(bias) if bias else 0)
    return {
        "params": converted_params / total_params if total_params else 0.0,
        "flops": flops["converted"] / flops["all"] if flops_known and flops["all"] else None,
        "layers": f"{converted} of {layers} conv/linear",
    }


# ---- the quantization ----------------------------------------------------------------------------------


class PhotoReader:
    """onnxruntime's CalibrationDataReader protocol over the cell's preprocessed photographs."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]):
        self.input_name = input_name
        self.batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:  # part of the protocol; one pass is all the percentile calibration needs
        pass


def _qualified(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def detection_head_nodes(onnx_path: Path, model: nn.Module) -> list[str]:
    """Nodes of an exported ultralytics model that ultralytics' int8 recipe leaves in float: the head's own ops
    (box decoding, the concat of boxes and scores, the score sigmoid) and its DFL; the head's convolutions stay int8.

    Quantizing them puts 0-1 class scores on the scale of 0-640 pixel boxes in one uint8 tensor, which rounds every
    score to 0: the trained YOLOv8n-seg lost all its detections. Read from the dynamo exporter's module metadata.
    """
    import onnx

    head = ultralytics_detect_head(model)
    if head is None:
        return []
    head_class, dfl_class = _qualified(head), _qualified(head.dfl)
    names = []
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        hierarchy = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.class_hierarchy"), None)
        classes = ast.literal_eval(hierarchy) if hierarchy else []
        if len(classes) >= 2 and (classes[-2] == head_class or dfl_class in classes):
            names.append(node.name)
    return names


def preprocessed_for_quantization(path: Path, workdir: Path) -> Path:
    """ORT's recommended pre-pass (shape inference, graph optimisation); the raw graph if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = workdir / "model.pre.onnx"
    try:
        quant_pre_process(str(path), str(target))
        return target
    except Exception as exc:  # noqa: BLE001 (the pre-pass is an optimisation, quantization works without it)
        print(
            f"ort-int8: quant_pre_process failed ({type(exc).__name__}); quantizing the exported graph as is",
            flush=True,
        )
        return path


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """ORT's quantizer warns through the root logger once per node (e.g. per-channel axes on LayerNorm scales)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class OrtInt8Graph(OnnxGraphPrecision):
    """The float model plus what ORT's quantize_static needs; the onnxruntime backend calls `rewrite`."""

    precision_name = "ort-int8"

    def __init__(self, float_model: nn.Module, calibration: Sequence[np.ndarray], reduce_range: bool):
        super().__init__(float_model)
        self.calibration = list(calibration)
        self.reduce_range = reduce_range

    def cache_fields(self) -> dict[str, Any]:
        calibration = hashlib.sha256(b"".join(batch.tobytes() for batch in self.calibration)).hexdigest()
        return {
            "reduce_range": self.reduce_range,
            "calibration_sha256": calibration,
            "float_detection_head": ultralytics_detect_head(self.float_model) is not None,  # entries before it differ
            "calibration_method": CALIBRATION_NAME,
        }

    def cache_state(self) -> dict[str, Any]:
        return {"quantized_share": recall_share(self)}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("quantized_share") is not None:
            remember_share(self, state["quantized_share"])

    def release(self) -> None:
        self.calibration = []

    def rewrite(self, onnx_path: Path, input_name: str, workdir: Path) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        target = workdir / "model.int8.onnx"
        float_nodes = detection_head_nodes(onnx_path, self.float_model)  # names survive the pre-pass; metadata not
        source = preprocessed_for_quantization(onnx_path, workdir)

        def quantize(method: Any) -> None:
            with quiet_root_logger():
                quantize_static(
                    str(source),
                    str(target),
                    PhotoReader(input_name, self.calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=self.reduce_range,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=method,
                    nodes_to_exclude=float_nodes,
                )

        # MinMax let the trained YOLOv8n-seg's outliers set the activation scales: mIoU vs fp32 0.81; the 99.999th
        # percentile: 0.93 (pixel agreement of Fast-SCNN and SegFormer-B0 unchanged).
        calibration = f"{CALIBRATION_NAME} (99.999th)"
        try:
            quantize(CalibrationMethod[CALIBRATION_NAME])
        except ValueError as exc:  # numpy cannot histogram a tensor whose whole range is a few denormals
            quantize(CalibrationMethod.MinMax)
            calibration = f"MinMax (the percentile histogram failed: {exc})"
        share = onnx_quantized_share(target, sum(p.numel() for p in self.float_model.parameters()))
        share["calibration"] = calibration
        if float_nodes:
            share["left_in_float"] = f"{len(float_nodes)} detection-head ops (ultralytics' int8 recipe)"
        remember_share(self, share)
        return target


class OrtInt8(Precision):
    name = "ort-int8"
    warm_imports = ("onnxruntime.quantization", "onnx")
    description = (
        "ONNX Runtime static int8 (QDQ: per-channel int8 weights, uint8 activations, percentile calibration); "
        "backend onnxruntime only"
    )
    matmul_class = "int8"
    runs_on = ("onnxruntime",)

    def __init__(self) -> None:
        self._calibration_count = 0
        self._reduce_range = False

    def unsupported_reason(self, device: torch.device) -> str | None:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            return "ort-int8 needs onnxruntime (pip install onnxruntime)"
        if device.type == "cuda" and tensorrt_status() != "ONNX Runtime's TensorrtExecutionProvider":
            return (
                "TensorRT not installed: ONNX Runtime runs int8 (QDQ) graphs on NVIDIA GPUs through its TensorRT "
                "provider"
            )
        return None

    def notes(self, device: torch.device) -> list[str]:
        detail = f"calibrated on {self._calibration_count} photographs"
        if self._reduce_range:
            detail += "; weights reduced to 7 bits: this CPU has no VNNI (ORT's advice against u8s8 saturation)"
        return [f"ONNX Runtime quantize_static, QDQ format, {detail}"]

    def quantized_share(self, model: nn.Module) -> dict[str, Any] | None:
        return recall_share(model)

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        batches = [batch.float().cpu().numpy() for batch in (context.calibration or (context.example,))]
        self._calibration_count = sum(batch.shape[0] for batch in batches)
        self._reduce_range = device.type == "cpu" and not cpu_has_vnni()
        return OrtInt8Graph(model.float(), batches, self._reduce_range)
