"""OpenVINO: convert the cell's model once (inside prepare, so conversion is prepare_s), compile it, run it.

Conversion uses OpenVINO's PyTorch frontend (`openvino.convert_model` on the eager module with the
cell's example input), through the ONNX export where the frontend cannot, and fixes the input shape
to the cell's static shape, as OpenVINO recommends for CPU latency. The compiled model gets the
latency performance hint, the cell's thread count and an explicit inference precision: f32 for
fp32 (OpenVINO's CPU plugin would otherwise pick bf16 on CPUs with AMX or avx512_bf16), bf16 or
f16 when the precision cast the model to it and the CPU computes in it natively.

Precisions that work on the OpenVINO graph itself (ov-int8, NNCF post-training quantization) hand
the backend an `OpenVinoGraphPrecision` wrapping the float model; the backend converts the float
model and lets the precision rewrite the converted graph before compiling. `convert_to_openvino`
is the one function that turns a module into an `ov.Model`, so a cache can wrap it.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segbench.backends.base import Backend, ForwardFn, forward_runs_eagerly_under_compile
from segbench.backends.onnxruntime import FlatOutputs, OutputLayout, export_onnx
from segbench.errors import UnsupportedError
from segbench.models.base import SegmentationAdapter
from segbench.system import cache

INSTALL_LINE = "pip install 'segbench[openvino]' (or: pip install openvino nncf)"
# torch dtype of the model's weights -> (OpenVINO inference precision, the CPU capability it needs natively)
INFERENCE_PRECISIONS: dict[torch.dtype, tuple[str, str | None]] = {
    torch.float32: ("f32", None),
    torch.bfloat16: ("bf16", "BF16"),
    torch.float16: ("f16", "FP16"),
}
# segbench device type -> OpenVINO device name
OV_DEVICES = {"cpu": "CPU", "xpu": "GPU"}


def openvino_missing() -> str | None:
    """The install line when openvino is not importable here, else None."""
    if importlib.util.find_spec("openvino") is None:
        return f"openvino is not installed: {INSTALL_LINE}"
    return None


# Its forward refuses; under torch.compile too, so the refusal surfaces unchanged.
@forward_runs_eagerly_under_compile
class OpenVinoGraphPrecision(nn.Module, ABC):
    """What a precision that rewrites the converted OpenVINO graph returns from `apply`.

    It carries the float model (converted as usual) and rewrites the `ov.Model` before it is
    compiled. Its own forward refuses: such a precision means nothing on a PyTorch backend.
    """

    precision_name: str
    # What OpenVINO computes the layers the rewrite left in float in: "f32" (true to the float model's name, and
    # segbench's default), "bf16" (where the device computes it natively) or None: the plugin's own default, which
    # is bf16 on CPUs with avx512_bf16 or AMX and f32 elsewhere (what a user who never sets the hint gets).
    float_hint: str | None = "f32"

    def __init__(self, float_model: nn.Module):
        super().__init__()
        self.float_model = float_model

    cache_libraries: tuple[str, ...] = ()  # what the rewrite uses, besides openvino: their versions key the cache

    @abstractmethod
    def rewrite(self, ov_model: Any, adapter: SegmentationAdapter) -> Any:
        """Turn the converted float graph into the one to compile; returns an `ov.Model`."""

    def cache_fields(self) -> dict[str, Any]:
        """What, besides the float model and the cell, the rewritten graph depends on (part of its cache key)."""
        return {}

    def cache_state(self) -> dict[str, Any]:
        """What `rewrite` learned that must come back with a cached graph (JSON-able)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back `cache_state` when the rewritten graph comes from the cache instead of `rewrite`."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedError(
            f"{self.precision_name} is OpenVINO's own quantization: it runs only on backend openvino"
        )


# ---- conversion -----------------------------------------------------------------------------------------


def convert_to_openvino(model: nn.Module, example: torch.Tensor) -> tuple[Any, dict[str, Any]]:
    """The float module as an `ov.Model` at the example's static shape, and how it was converted.

    The module must return tensors only (wrap it in FlatOutputs). PyTorch frontend first; the ONNX
    export (dynamo, then TorchScript) where the frontend cannot convert the model.
    """
    import openvino as ov

    started = time.perf_counter()
    shape = ov.PartialShape(list(example.shape))  # static: OpenVINO's advice for CPU latency
    try:
        # Traced once here without trace checking (convert_model's own trace re-runs the model to check it).
        traced = torch.jit.trace(model, example, strict=False, check_trace=False)
        ov_model = ov.convert_model(traced, example_input=example, input=[shape])
        route = "pytorch frontend"
    except Exception as frontend_error:  # noqa: BLE001 (the ONNX route converts some models the frontend cannot)
        path = Path(tempfile.mkdtemp(prefix="segbench-openvino-")) / "model.onnx"
        exporter = export_onnx(model, example, path)
        ov_model = ov.convert_model(str(path), input=[shape])
        route = f"onnx ({exporter}; pytorch frontend failed: {type(frontend_error).__name__})"
    return ov_model, {"conversion": route, "convert_s": round(time.perf_counter() - started, 3)}


# ---- the cache: the converted (or NNCF-quantized) model, saved as OpenVINO IR -----------------------------

MODEL_XML, MODEL_BIN = "model.xml", "model.bin"
BLOB_DIR = "openvino-blobs"  # OpenVINO's own CACHE_DIR for compiled models, inside segbench's cache


def model_key(
    model: nn.Module, graph_precision: OpenVinoGraphPrecision | None, example: torch.Tensor
) -> cache.CacheKey:
    kind = "openvino-model" if graph_precision is None else f"openvino-{graph_precision.precision_name}"
    libraries = ("openvino", *(graph_precision.cache_libraries if graph_precision is not None else ()))
    extra = graph_precision.cache_fields() if graph_precision is not None else {}
    return cache.key(kind, model, libraries, input_shape=list(example.shape), input_dtype=str(example.dtype), **extra)


def cached_model(
    cache_key: cache.CacheKey, graph_precision: OpenVinoGraphPrecision | None
) -> tuple[Any, dict[str, Any]] | None:
    """The IR from the cache as an `ov.Model`, with how it was built; None on a miss (a broken entry is discarded)."""
    entry = cache.lookup(cache_key)
    if entry is None:
        return None
    import openvino as ov

    try:
        ov_model = ov.Core().read_model(entry.file(MODEL_XML), entry.file(MODEL_BIN))
    except Exception as exc:  # noqa: BLE001 (any read failure means the entry is unusable: rebuild it)
        cache.discard(cache_key, f"OpenVINO could not read it: {type(exc).__name__}: {str(exc)[:200]}")
        return None
    if graph_precision is not None:
        graph_precision.restore(entry.extra.get("state", {}))
    return ov_model, {**entry.extra.get("info", {}), "cache": "hit"}


def store_model(
    cache_key: cache.CacheKey, ov_model: Any, info: dict[str, Any], graph_precision: OpenVinoGraphPrecision | None
) -> str:
    """Save the IR uncompressed (ov.save_model would halve fp32 weights to fp16); "miss" when stored, else "off"."""
    if cache.root() is None:
        return "off"
    import openvino as ov

    state = graph_precision.cache_state() if graph_precision is not None else {}
    with tempfile.TemporaryDirectory(prefix="segbench-openvino-") as workdir:
        xml = Path(workdir) / MODEL_XML
        ov.save_model(ov_model, xml, compress_to_fp16=False)
        files = {MODEL_XML: xml, MODEL_BIN: xml.with_suffix(".bin")}
        stored = cache.store(cache_key, files, {"info": info, "state": state})
    return "miss" if stored is not None else "off"


def blob_cache_dir() -> Path | None:
    """Where OpenVINO keeps compiled blobs (its CACHE_DIR, as its docs advise for start-up), or None with --no-cache."""
    base = cache.root()
    return None if base is None else base / BLOB_DIR


def inference_precision(model: nn.Module, ov_device: str) -> str:
    """The OpenVINO inference precision for the dtype the precision cast the model to; refuses emulated ones."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if dtype not in INFERENCE_PRECISIONS:
        raise UnsupportedError(f"OpenVINO has no inference precision for {dtype}")
    hint, _ = INFERENCE_PRECISIONS[dtype]
    require_native(hint, ov_device)
    return hint


def native_reason(hint: str, ov_device: str) -> str | None:
    """Why `ov_device` does not compute in the inference precision `hint` natively (so OpenVINO would emulate or
    refuse it), or None when it does."""
    capability = next((needs for name, needs in INFERENCE_PRECISIONS.values() if name == hint), None)
    if capability is None:
        return None
    import openvino as ov

    capabilities = ov.Core().get_property(ov_device, "OPTIMIZATION_CAPABILITIES")
    if capability in capabilities:
        return None
    return (
        f"{hint} on OpenVINO needs a {ov_device} that computes in {capability} natively (avx512_bf16 or AMX on "
        f"CPUs); this one offers {', '.join(capabilities)}"
    )


def require_native(hint: str, ov_device: str) -> None:
    reason = native_reason(hint, ov_device)
    if reason:
        raise UnsupportedError(reason)


def unconvertible_reason(model: nn.Module, device: torch.device) -> str | None:
    """Why a precision-converted PyTorch model cannot be handed to OpenVINO faithfully, or None."""
    if torch.is_autocast_enabled(device.type):
        return (
            "autocast is a PyTorch runtime feature an OpenVINO model does not carry; use bf16 (the "
            "inference-precision hint)"
        )
    if any(
        isinstance(module, (torch._dynamo.eval_frame.OptimizedModule, torch.fx.GraphModule))
        for module in model.modules()
    ):
        return (
            "this precision compiles or rewrites the PyTorch graph (PT2E int8 lowers through inductor); OpenVINO's "
            "int8 is precision ov-int8"
        )
    if any(type(tensor).__module__.startswith("torchao") for tensor in (*model.parameters(), *model.buffers())):
        return "torchao-quantized weights cannot be converted to OpenVINO; OpenVINO's own int8 is precision ov-int8"
    return None


# What OpenVINO's CPU threads do between inferences. Its default threading runtime, oneTBB, keeps its workers
# busy-waiting briefly after each inference (OpenVINO's docs, "Composability of different threading runtimes"); unlike
# ONNX Runtime's allow_spinning there is no property to turn that off: the docs' advice is on torch's side (its thread
# count, OMP_WAIT_POLICY). A fixed torch postprocess measured the same after an OpenVINO forward as after eager
# (tests/backends/test_thread_spinning.py), so nothing is changed; the record says what ran.
CPU_THREADING = "oneTBB workers (a brief busy-wait after each inference; OpenVINO has no property to turn it off)"


def threading_info(compiled: Any, ov_device: str) -> dict[str, Any]:
    """The CPU plugin's thread settings as compiled: count, streams, pinning, and what its workers do when idle."""
    if ov_device != "CPU":
        return {"threads": None}
    return {
        "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "cpu_pinning": bool(compiled.get_property("ENABLE_CPU_PINNING")),
        "thread_spinning": CPU_THREADING,
    }


def compile_model(
    ov_model: Any, ov_device: str, hint: str | None, threads: int, performance_hint: str = "LATENCY"
) -> Any:
    """OpenVINO's CPU recipe for the performance hint (LATENCY: one stream; THROUGHPUT: the streams the plugin
    picks), the cell's threads, and the inference precision asked for (None: the plugin's own default)."""
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": performance_hint}
    if hint is not None:
        config["INFERENCE_PRECISION_HINT"] = hint
    if ov_device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    blobs = blob_cache_dir()
    if blobs is not None:
        config["CACHE_DIR"] = str(blobs)
    return ov.Core().compile_model(ov_model, ov_device, config)


def ov_forward(compiled: Any, layout: OutputLayout) -> ForwardFn:
    request = compiled.create_infer_request()
    outputs = range(len(compiled.outputs))

    def forward(inputs: torch.Tensor) -> Any:
        request.infer({0: inputs.detach().contiguous().numpy()}, share_inputs=True)
        # Copies: the request's output buffers are overwritten by the next inference.
        return layout.rebuild([torch.from_numpy(np.array(request.get_output_tensor(i).data)) for i in outputs])

    return forward


def profile_ir(ov_model: Any, compiled: Any, ov_device: str) -> dict[str, Any]:
    """The graph saved as IR (on disk, so no measured pass holds a second copy) and the timed compile's settings."""
    import openvino as ov

    started = time.perf_counter()
    xml = Path(tempfile.mkdtemp(prefix="segbench-profile-")) / MODEL_XML
    ov.save_model(ov_model, xml, compress_to_fp16=False)
    config = {
        key: compiled.get_property(key)
        for key in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "INFERENCE_NUM_THREADS")
        if ov_device == "CPU" or key != "INFERENCE_NUM_THREADS"
    }
    return {"xml": xml, "device": ov_device, "config": config, "saved_s": round(time.perf_counter() - started, 3)}


# ---- the backend ------------------------------------------------------------------------------------------


class OpenVino(Backend):
    name = "openvino"
    runtime = "openvino"
    description = (
        "OpenVINO (converted once per cell by its PyTorch frontend; LATENCY hint, the cell's threads); "
        "conversion and compile are prepare_s"
    )
    warm_imports = ("openvino",)

    def __init__(self) -> None:
        self._info: dict[str, Any] | None = None
        self._profile_source: dict[str, Any] | None = None

    def profile_source(self) -> dict[str, Any] | None:
        return self._profile_source

    def precision_reason(self, dtype: torch.dtype, device: torch.device) -> str | None:
        """A model cast to bf16 or f16 runs in that inference precision, which the plugin needs natively: known
        before building, so `--all-paths` and `--dry-run` leave the pair out as the cell would refuse it."""
        if dtype not in INFERENCE_PRECISIONS or device.type not in OV_DEVICES or openvino_missing():
            return None
        return native_reason(INFERENCE_PRECISIONS[dtype][0], OV_DEVICES[device.type])

    def unsupported_reason(self, device: torch.device) -> str | None:
        missing = openvino_missing()
        if missing:
            return missing
        if device.type not in OV_DEVICES:
            return f"OpenVINO runs on CPUs (and Intel GPUs as device xpu), not {device.type}"
        import openvino as ov

        if OV_DEVICES[device.type] not in ov.Core().available_devices:
            return (
                f"OpenVINO has no {OV_DEVICES[device.type]} plugin for this machine (devices: "
                f"{', '.join(ov.Core().available_devices)})"
            )
        return None

    def describe(self, adapter: SegmentationAdapter) -> dict[str, Any] | None:
        return self._info

    performance_hint = "LATENCY"

    def float_hint(
        self, model: nn.Module, graph_precision: OpenVinoGraphPrecision | None, ov_device: str
    ) -> str | None:
        """The inference precision to ask for: the cast model's dtype, or what a graph precision asks for its float
        remainder (None: the plugin's default); refuses one the device does not compute natively."""
        if graph_precision is None:
            return inference_precision(model, ov_device)
        if graph_precision.float_hint is not None:
            require_native(graph_precision.float_hint, ov_device)
        return graph_precision.float_hint

    def shape_for_requests(self, ov_model: Any, example: torch.Tensor) -> Any:
        """The graph each infer request runs: the cell's whole batch (one request per forward)."""
        return ov_model

    def make_forward(self, compiled: Any, layout: OutputLayout) -> ForwardFn:
        return ov_forward(compiled, layout)

    def prepare(self, adapter: SegmentationAdapter, example: torch.Tensor) -> ForwardFn:
        assert adapter.model is not None
        device = example.device
        ov_device = OV_DEVICES[device.type]
        graph_precision = adapter.model if isinstance(adapter.model, OpenVinoGraphPrecision) else None
        model = graph_precision.float_model if graph_precision is not None else adapter.model
        reason = unconvertible_reason(model, device)
        if reason:
            raise UnsupportedError(reason)
        hint = self.float_hint(model, graph_precision, ov_device)
        # OpenVINO takes float32 in and computes in the hinted precision; the cast weights stay rounded.
        model, adapter.input_dtype = model.float(), torch.float32

        started = time.perf_counter()
        # The cell prepares under inference_mode, whose tensors tracing cannot use.
        with torch.inference_mode(False), torch.no_grad():
            example = example.detach().clone().float()
            layout = OutputLayout.of(model(example))  # also fills shape-keyed caches (YOLO anchors) before tracing
            cache_key = model_key(model, graph_precision, example)
            found = cached_model(cache_key, graph_precision)
            if found is None:
                ov_model, info = convert_to_openvino(FlatOutputs(model, layout), example)
        if found is None:
            if graph_precision is not None:
                began = time.perf_counter()
                ov_model = graph_precision.rewrite(ov_model, adapter)
                info[f"{graph_precision.precision_name}_s"] = round(time.perf_counter() - began, 3)
            info["cache"] = store_model(cache_key, ov_model, info, graph_precision)
        else:
            ov_model, info = found
        began = time.perf_counter()
        ov_model = self.shape_for_requests(ov_model, example)
        compiled = compile_model(ov_model, ov_device, hint, torch.get_num_threads(), self.performance_hint)
        import openvino as ov

        self._info = {
            **info,
            "compiled_blob_cache": "on" if blob_cache_dir() is not None else "off",
            "compile_s": round(time.perf_counter() - began, 3),
            "prepare_s": round(time.perf_counter() - started, 3),
            "openvino": ov.get_version(),
            "device": ov_device,
            "inference_precision_requested": hint if hint is not None else "plugin default",
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
            **threading_info(compiled, ov_device),
            "streams": int(compiled.get_property("NUM_STREAMS")),
            "infer_requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
        }
        if self.profiling:  # the profile pass compiles the same IR again with PERF_COUNT on
            self._profile_source = profile_ir(ov_model, compiled, ov_device)
            self._info["profile_ir_s"] = self._profile_source["saved_s"]
        return self.make_forward(compiled, layout)
