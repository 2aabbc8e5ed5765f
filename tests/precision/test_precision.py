"""Precisions, quantization and backends on the CPU (issue 5).

In process: each precision applies to a small model and runs, or says why it cannot; the share of
the model a quantizer converted is counted. In real spawned cells: int8 (PT2E + inductor) has its
fidelity filled and agrees with fp32, ONNX Runtime runs end to end (fp32 and ort-int8), and export /
compile time is prepare_s, never latency.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from segbench.backends import get_backend
from segbench.backends.onnxruntime import OutputLayout
from segbench.errors import UnsupportedError
from segbench.precision import get_precision
from segbench.precision.base import PrecisionContext
from segbench.precision.int8 import LayerCensus, unshare_stateless_modules
from segbench.results import store as results
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite

CPU = torch.device("cpu")


class ConvThenLinear(nn.Module):
    """A conv stem and a per-pixel two-layer MLP head: most parameters sit in nn.Linear layers."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.hidden = nn.Linear(16, 64)
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(x).permute(0, 2, 3, 1)
        scores = self.head(torch.relu(self.hidden(features))).permute(0, 3, 1, 2)
        return nn.functional.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ConvOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _context(batches: int = 2) -> PrecisionContext:
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 3, 32, 32, generator=generator) for _ in range(batches)]
    return PrecisionContext(example=inputs[0], calibration=tuple(inputs))


# ---- in process ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "dtype"), [("amp-bf16", torch.bfloat16), ("amp-fp16", torch.float16)])
def test_autocast_precisions_run_and_flag_emulated_cpus(name: str, dtype: torch.dtype) -> None:
    precision, context = get_precision(name), _context()
    model = precision.apply(ConvOnly().eval(), CPU, context)
    with torch.inference_mode(), precision.autocast(CPU):
        output = model(context.example)
    assert output.dtype == dtype and next(model.parameters()).dtype == torch.float32
    assert precision.unsupported_reason(CPU) is None and precision.quantized_share(model) is None
    from segbench.system.env import cpu_flags

    if not {"avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16"} & set(cpu_flags()):
        assert any("slower than fp32" in note for note in precision.notes(CPU))


def test_int8_weight_only_converts_linear_layers_and_says_how_much() -> None:
    torch.manual_seed(0)
    model, context = ConvThenLinear().eval(), _context()
    with torch.no_grad():
        expected = model(context.example)
    precision = get_precision("int8-wo")
    quantized = precision.apply(model, CPU, context)
    share = precision.quantized_share(quantized)
    assert share is not None and share["layers"] == "2 of 3 conv/linear"
    linear_params = sum(p.numel() for layer in (quantized.hidden, quantized.head) for p in layer.parameters())
    assert share["params"] == pytest.approx(linear_params / sum(p.numel() for p in model.parameters()), rel=1e-6)
    assert 0 < share["flops"] < 1
    with torch.no_grad():
        assert torch.allclose(quantized(context.example), expected, atol=0.05)


def test_weight_only_refuses_a_conv_only_model() -> None:
    with pytest.raises(
        UnsupportedError,
        match=r"int8-wo converts only nn.Linear layers; this model has 0 % of its parameters in Linear layers",
    ):
        get_precision("int8-wo").apply(ConvOnly().eval(), CPU, _context())


@pytest.mark.parametrize("name", ["fp8", "int4-wo", "tf32"])
def test_gpu_only_precisions_give_a_reason_on_the_cpu(name: str) -> None:
    reason = get_precision(name).unsupported_reason(CPU)
    assert reason and ("GPU" in reason or "CUDA" in reason)


def test_ort_int8_refuses_to_run_as_a_pytorch_model() -> None:
    model = get_precision("ort-int8").apply(ConvOnly().eval(), CPU, _context())
    with pytest.raises(UnsupportedError, match="runs only on backend onnxruntime"):
        model(torch.zeros(1, 3, 32, 32))


def test_ort_int8_leaves_the_yolo_heads_own_math_in_float_and_its_convolutions_int8(tmp_path: Path) -> None:
    # Found with trained weights: quantizing the concat of 0-640 px boxes and 0-1 scores into one uint8 tensor rounded
    # every score to 0, so YOLOv8n-seg lost all its detections (mIoU vs fp32 0.249; 0.812 with the head in float).
    import onnx

    from segbench.backends.onnxruntime import FlatOutputs, export_onnx
    from segbench.models.registry import create_model
    from segbench.precision.ort_int8 import detection_head_nodes

    adapter = create_model("yolov8n-seg", None, {})
    adapter.build(CPU)
    example = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        export_onnx(FlatOutputs(adapter.model, OutputLayout.of(adapter.model(example))), example, tmp_path / "m.onnx")
    op_types = {node.name: node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    left_in_float = [op_types[name] for name in detection_head_nodes(tmp_path / "m.onnx", adapter.model)]
    assert left_in_float.count("Conv") == 1  # the DFL's fixed projection; cv2/cv3/cv4 and the protos stay int8
    assert left_in_float.count("Sigmoid") == 1  # the class scores' (the SiLU sigmoids belong to the convolutions)
    assert {"Concat", "Softmax", "Sub", "Add", "Div", "Mul"} <= set(left_in_float)
    assert detection_head_nodes(tmp_path / "m.onnx", ConvOnly()) == []  # only ultralytics heads


class DenormalActivations(nn.Module):
    """A convolution whose output is scaled into float32's denormals: a range numpy cannot cut into 2048 bins."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) * 1e-44


def test_ort_int8_falls_back_to_minmax_when_the_percentile_histogram_fails(tmp_path: Path) -> None:
    # Seen on the random-weight YOLOv8n-seg at 640: "Too many bins for data range. Cannot create 2048 finite-sized
    # bins."
    from segbench.backends.onnxruntime import export_onnx, graph_input_name
    from segbench.precision.int8 import recall_share
    from segbench.precision.ort_int8 import OrtInt8Graph

    model = DenormalActivations().eval()
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(1, 3, 16, 16, generator=generator) for _ in range(2)]
    export_onnx(model, batches[0], tmp_path / "m.onnx")
    graph = OrtInt8Graph(model, [b.numpy() for b in batches], reduce_range=False)
    assert graph.rewrite(tmp_path / "m.onnx", graph_input_name(tmp_path / "m.onnx"), tmp_path).is_file()
    share = recall_share(graph)
    assert share is not None
    assert share["calibration"].startswith("MinMax (the percentile histogram failed: Too many bins")
    assert share["layers"] == "1 of 1 conv/linear"


def test_layer_census_shares_parameters_and_flops() -> None:
    model = ConvThenLinear().eval()
    census = LayerCensus.of(model, torch.zeros(1, 3, 32, 32))
    assert census.share(["stem", "hidden", "head"]) == {"params": 1.0, "flops": 1.0, "layers": "3 of 3 conv/linear"}
    stem = census.share(["stem"])
    assert stem["params"] == pytest.approx((16 * 3 * 9 + 16) / census.total_params)
    assert stem["flops"] == pytest.approx(
        2 * 16 * 16 * 16 * 27 / census.total_flops
    )  # 16x16 outputs, 16 channels, 27 MACs each
    assert census.linear_param_share() == pytest.approx(1 - stem["params"])


def test_shared_activations_are_given_one_instance_per_use() -> None:
    act = nn.SiLU()
    model = nn.Sequential(nn.Conv2d(3, 3, 1), act, nn.Conv2d(3, 3, 1), act)
    assert unshare_stateless_modules(model) == 1 and model[1] is not model[3]


def test_onnx_output_layout_round_trips_nested_outputs() -> None:
    from transformers.modeling_outputs import SemanticSegmenterOutput

    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    for outputs in (((a, b), {"raw": [c], "none": None, "stride": 8}), SemanticSegmenterOutput(logits=a), a):
        layout = OutputLayout.of(outputs)
        leaves = [leaf for leaf in torch.utils._pytree.tree_leaves(outputs) if isinstance(leaf, torch.Tensor)]
        rebuilt = layout.rebuild([leaf.clone() for leaf in leaves])
        assert type(rebuilt) is type(outputs)
        assert torch.utils._pytree.tree_flatten(rebuilt)[1] == torch.utils._pytree.tree_flatten(outputs)[1]
    assert OutputLayout.of(((a, b), {"stride": 8})).rebuild([c, c])[1]["stride"] == 8


def test_channels_last_backend_feeds_the_model_nhwc() -> None:
    from segbench.models.registry import create_model

    adapter = create_model("fast-scnn")
    adapter.build(CPU)
    images = torch.randint(0, 256, (1, 64, 128, 3), dtype=torch.uint8)
    with torch.inference_mode():
        expected = adapter.forward(adapter.preprocess(images))
        forward = get_backend("eager-cl").prepare(adapter, adapter.preprocess(images))
        inputs = adapter.preprocess(images)
        assert inputs.is_contiguous(memory_format=torch.channels_last)
        assert adapter.model.learning_to_downsample[0][0].weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(forward(inputs), expected, atol=1e-4)


# ---- real cells ----------------------------------------------------------------------------------------


def _records(run_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    lines = (run_dir / results.RESULTS_FILE).read_text().splitlines()
    return {(r["precision"], r["backend"]): r for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def quantized_cells(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, Any]]:
    """One run of test-tiny across the CPU precisions and backends (each cell in its own process)."""
    import yaml

    from tests.helpers import FAST_TIMING, FAULT_PLUGIN

    folder = tmp_path_factory.mktemp("quantized")
    suite = {
        "name": "quantized",
        "device": "cpu",
        "plugins": [FAULT_PLUGIN],
        "models": ["test-tiny"],
        "resolutions": [32],
        "precisions": ["fp32", "int8", "int8-wo", "fp8", "ort-int8"],
        "backends": ["eager", "onnxruntime"],
        "exclude": [{"precision": ["int8", "int8-wo", "fp8"], "backend": "onnxruntime"}],
        "roofline": {"measure_ceiling": False},
        "timing": {**FAST_TIMING, "timeout_s": 300},
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return _records(run_suite(load_suite(path), path, folder / "results").run_dir)


def test_int8_cell_has_fidelity_and_agrees_with_fp32(quantized_cells: dict[tuple[str, str], dict[str, Any]]) -> None:
    record = quantized_cells[("int8", "eager")]
    assert record["status"] == "ok", record.get("traceback") or record.get("error")
    fidelity = record["fidelity"]
    assert fidelity["pixel_agreement"] >= 0.9 and fidelity["miou_vs_fp32"] is not None
    assert fidelity["max_abs_logit_diff"] is not None and fidelity["pixels"] > 0
    assert record["quantized_share"] == {"params": 1.0, "flops": 1.0, "layers": "2 of 2 conv/linear"}
    assert any("PT2E" in note for note in record["notes"])
    # Quantization and its inductor compile happen in prepare (seconds); the timed samples hold none of it.
    assert record["prepare_s"] > 10 * max(record["samples_ms"]) / 1000


def test_unsupported_combinations_are_recorded_with_reasons(
    quantized_cells: dict[tuple[str, str], dict[str, Any]],
) -> None:
    expected = {
        ("int8-wo", "eager"): "0 % of its parameters in Linear layers",
        ("fp8", "eager"): "compute capability >= 8.9",
        ("ort-int8", "eager"): "runs only on backend onnxruntime",
    }
    for key, reason in expected.items():
        assert quantized_cells[key]["status"] == "unsupported" and reason in quantized_cells[key]["error"], (
            quantized_cells[key]
        )


@pytest.mark.parametrize("precision", ["fp32", "ort-int8"])
def test_onnxruntime_cells_run_end_to_end(
    quantized_cells: dict[tuple[str, str], dict[str, Any]], precision: str
) -> None:
    record = quantized_cells[(precision, "onnxruntime")]
    assert record["status"] == "ok", record.get("traceback") or record.get("error")
    assert record["backend_info"]["providers"] == ["CPUExecutionProvider"] and record["backend_info"]["exporter"]
    assert record["fidelity"]["pixel_agreement"] >= (0.999 if precision == "fp32" else 0.9)
    if precision == "ort-int8":
        assert (
            record["quantized_share"]["layers"] == "2 of 2 conv/linear" and record["quantized_share"]["params"] == 1.0
        )


def test_export_time_is_prepare_s_not_latency(quantized_cells: dict[tuple[str, str], dict[str, Any]]) -> None:
    record = quantized_cells[("fp32", "onnxruntime")]
    samples = record["samples_ms"]
    assert record["prepare_s"] >= record["backend_info"]["export_s"] > 0
    # The export (seconds) is in no sample: every sample is far shorter than it, and the samples add up to the timed
    # pass.
    assert max(samples) / 1000 < record["prepare_s"] / 10
    assert sum(samples) / 1000 <= record["measured_s"] * 1.05


def test_onnxruntime_cells_record_the_session_memory_apart(
    quantized_cells: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for key in (("fp32", "onnxruntime"), ("ort-int8", "onnxruntime")):
        info = quantized_cells[key]["backend_info"]
        assert isinstance(info["session_mb"], float) and info["session_mb_is"], key


def test_onnxruntime_rebuilds_each_family_output(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """YOLOv8-seg's nested (tuple, dict) output and SegFormer's ModelOutput survive the flat ONNX outputs."""
    suite_path = write_suite(
        plugins=[],
        models=["yolov8n-seg", "segformer-b0"],
        resolutions=[64],
        backends=["onnxruntime"],
        roofline={"measure_ceiling": False},
    )
    records = run_suite(load_suite(suite_path), suite_path, tmp_path / "results").run_dir
    for record in map(json.loads, (records / results.RESULTS_FILE).read_text().splitlines()):
        assert record["status"] == "ok", (record["model"], record.get("traceback") or record.get("error"))
        fidelity = record["fidelity"]
        if record["model"] == "yolov8n-seg":  # random weights detect nothing: only the raw head's drift says anything
            assert fidelity["pixel_agreement"] is None and fidelity["agreement_unavailable"]
            heads = {"class_logits", "class_scores", "boxes", "mask_coefficients", "prototypes"}
            assert set(fidelity["drift"]) == heads
            assert fidelity["drift_of"] == "class_logits" and fidelity["drift_uninformative"] is None
            assert all(part["max_abs"] < 1e-2 for part in fidelity["drift"].values()), fidelity["drift"]
        else:
            assert fidelity["pixel_agreement"] >= 0.99, record["model"]
        assert fidelity["max_abs_logit_diff"] < 1e-3, record["model"]


# ---- CUDA (skipped without a GPU) ------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_int8_sends_conv_networks_to_tensorrt() -> None:
    from segbench.precision.int8 import tensorrt_status

    cuda = torch.device("cuda")
    context = PrecisionContext(example=torch.zeros(1, 3, 32, 32, device=cuda))
    with pytest.raises(UnsupportedError) as refused:
        get_precision("int8").apply(ConvOnly().eval().to(cuda), cuda, context)
    assert ("TensorRT not installed" in str(refused.value)) == (tensorrt_status() is None)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["int8", "int8-wo", "int4-wo", "fp8"])
def test_cuda_linear_quantizers_convert_and_run(name: str) -> None:
    cuda, precision = torch.device("cuda"), get_precision(name)
    if precision.unsupported_reason(cuda):
        pytest.skip(precision.unsupported_reason(cuda))
    context = PrecisionContext(example=torch.randn(1, 3, 256, 256, device=cuda))
    model = ConvThenLinear().eval().to(cuda)
    model.hidden, model.head = nn.Linear(16, 256), nn.Linear(256, 128)  # tile-friendly shapes for int4/fp8 kernels
    quantized = precision.apply(model.to(cuda), cuda, context)
    with torch.inference_mode():
        output = quantized(context.example.to(precision.input_dtype))
    assert output.shape == (1, 128, 256, 256) and precision.quantized_share(quantized)["params"] > 0
