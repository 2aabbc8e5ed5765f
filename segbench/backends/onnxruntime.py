"""ONNX Runtime: export the cell's model once (inside prepare, so the export is prepare_s), then run it.

The model is exported at the cell's static input shape with torch.onnx's dynamo exporter (the
TorchScript exporter is the fallback). ONNX graphs return a flat list of tensors, so the model is
wrapped to return its output leaves in pytree order and the forward callable rebuilds the original
structure (a tuple, a dict, a transformers ModelOutput) for the adapter's postprocess and logits.

Providers: the CPU provider on CPUs; on CUDA the TensorRT provider where ONNX Runtime has it, then
the CUDA provider. Precisions that work on the ONNX graph itself (ort-int8) hand the backend an
`OnnxGraphPrecision` instead of a plain module; precisions that change the PyTorch model in ways an
ONNX graph cannot carry (torchao tensor subclasses, PT2E graphs compiled by inductor, autocast) are
recorded as unsupported here.
"""

from __future__ import annotations

import gc
import importlib.util
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from segbench.backends.base import Backend, ForwardFn, forward_runs_eagerly_under_compile
from segbench.errors import UnsupportedError
from segbench.measure import nvml
from segbench.models.base import SegmentationAdapter
from segbench.system import cache
from segbench.system.process import call_in_fork

OPSET = 18
CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
EXPORT_LIBRARIES = ("onnx", "onnxscript", "onnxruntime")  # their versions key cached graphs, with torch's
GRAPH_FILE = "model.onnx"
# ONNX Runtime's pool threads spin-wait for the next op by default, and after a run they keep spinning on the cores
# torch's pre- and postprocess need: on 2 cores the same YOLO postprocess took 50.7 ms after an ORT forward, 11.8 ms
# after eager (cpu-best-20261126T061749Z). segbench's pipeline always runs pre/post in torch, so spinning is off.
NO_SPINNING = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


# Its forward refuses; under torch.compile too, so the refusal surfaces unchanged.
@forward_runs_eagerly_under_compile
class OnnxGraphPrecision(nn.Module, ABC):
    """What a precision that rewrites the exported ONNX graph returns from `apply`.

    It carries the float model (exported as usual) and rewrites the ONNX file before the session is
    built. Its own forward refuses: such a precision means nothing on a PyTorch backend.
    """

    precision_name: str

    def __init__(self, float_model: nn.Module):
        super().__init__()
        self.float_model = float_model

    @abstractmethod
    def rewrite(self, onnx_path: Path, input_name: str, workdir: Path) -> Path:
        """Turn the exported float graph into the one to run; returns its path."""

    def cache_fields(self) -> dict[str, Any]:
        """What, besides the float model and the cell, the rewritten graph depends on (part of its cache key)."""
        return {}

    def cache_state(self) -> dict[str, Any]:
        """What `rewrite` learned that must come back with a cached graph (JSON-able)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back `cache_state` when the rewritten graph comes from the cache instead of `rewrite`."""

    def release(self) -> None:
        """Drop what only the rewrite needed (calibration data) once the graph exists: no measured pass may hold it."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedError(
            f"{self.precision_name} is ONNX Runtime's own quantization: it runs only on backend onnxruntime"
        )


# ---- outputs: flat for ONNX, structured for the adapter ----------------------------------------------


@dataclass(frozen=True)
class OutputLayout:
    """Where the tensors of a model's (nested) output sit, so a flat list of them can be put back."""

    spec: TreeSpec
    leaves: tuple[Any, ...]  # the eager run's leaves: non-tensor ones are kept as they were
    tensor_positions: tuple[int, ...]

    @classmethod
    def of(cls, outputs: Any) -> OutputLayout:
        leaves, spec = tree_flatten(outputs)
        positions = tuple(i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor))
        if not positions:
            raise UnsupportedError("the model's output holds no tensors that ONNX could return")
        constants = tuple(None if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves)
        return cls(spec, constants, positions)

    def rebuild(self, tensors: Sequence[torch.Tensor]) -> Any:
        leaves = list(self.leaves)
        for position, tensor in zip(self.tensor_positions, tensors, strict=True):
            leaves[position] = tensor
        return tree_unflatten(leaves, self.spec)


class FlatOutputs(nn.Module):
    """The model with its output flattened to a tuple of tensors, in pytree order."""

    def __init__(self, model: nn.Module, layout: OutputLayout):
        super().__init__()
        self.model = model
        self.positions = layout.tensor_positions

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves, _ = tree_flatten(self.model(inputs))
        return tuple(leaves[i] for i in self.positions)


# ---- export -------------------------------------------------------------------------------------------


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Export at the example's static shape; returns which exporter succeeded."""
    try:
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            optimize=True,
            external_data=False,
            verbose=False,
            opset_version=OPSET,
        )
        return "dynamo"
    except Exception as dynamo_error:  # noqa: BLE001 (the TorchScript exporter handles some models dynamo cannot)
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"])
            return f"torchscript (dynamo exporter failed: {type(dynamo_error).__name__})"
        except Exception as legacy_error:  # noqa: BLE001
            raise UnsupportedError(
                f"ONNX export failed with both exporters (dynamo: {_first_line(dynamo_error)}; torchscript: "
                f"{_first_line(legacy_error)})"
            ) from None


def graph_input_name(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    return next(value.name for value in graph.input if value.name not in initializers)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def unexportable_reason(model: nn.Module, device: torch.device) -> str | None:
    """Why this (precision-converted) model cannot be exported faithfully to ONNX, or None."""
    if torch.is_autocast_enabled(device.type):
        return (
            "autocast is a PyTorch runtime feature: an exported ONNX graph does not carry it (use fp16 on CUDA instead)"
        )
    if any(
        isinstance(module, (torch._dynamo.eval_frame.OptimizedModule, torch.fx.GraphModule))
        for module in model.modules()
    ):
        return (
            "this precision compiles or rewrites the PyTorch graph (PT2E int8 lowers through inductor); ONNX "
            "Runtime's int8 is precision ort-int8"
        )
    for tensor in (*model.parameters(), *model.buffers()):
        if type(tensor).__module__.startswith("torchao"):
            return "torchao-quantized weights cannot be exported to ONNX; ONNX Runtime's own int8 is precision ort-int8"
        if tensor.is_floating_point():
            reason = dtype_reason(tensor.dtype, device)
            if reason:
                return reason
    return None


def dtype_reason(dtype: torch.dtype, device: torch.device) -> str | None:
    """Why ONNX Runtime cannot run a graph of this float type on this device, or None."""
    if dtype == torch.bfloat16:
        return "ONNX Runtime has almost no bfloat16 kernels; bf16 runs on the PyTorch backends"
    if dtype == torch.float16 and device.type == "cpu":
        return "ONNX Runtime's CPU provider has few float16 kernels; fp16 on ONNX Runtime needs the CUDA provider"
    return None


# ---- sessions -----------------------------------------------------------------------------------------


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def providers_for(device: torch.device, int8: bool = False) -> list[Any]:
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    # ORT runs on torch's stream, so the harness's CUDA events bracket its kernels.
    common = {
        "device_id": str(device.index or 0),
        "user_compute_stream": str(torch.cuda.current_stream(device).cuda_stream),
    }
    chosen: list[Any] = []
    if "TensorrtExecutionProvider" in available_providers():
        # A QDQ graph is an explicitly quantized network: TensorRT builds it only with its int8 flag on.
        precision_flags = {"trt_int8_enable": "True", "trt_fp16_enable": "True"} if int8 else {}
        chosen.append(("TensorrtExecutionProvider", {**common, **precision_flags}))
    if "CUDAExecutionProvider" in available_providers():
        chosen.append(("CUDAExecutionProvider", dict(common)))
    return [*chosen, "CPUExecutionProvider"]


def session_options(spinning: bool = False) -> Any:
    """The cell's ONNX Runtime options: all graph optimisations, sequential, torch's thread count, and (unless asked
    for) pool threads that sleep instead of spinning once their work is done."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = torch.get_num_threads()  # the cell's thread count, as torch got it
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        for key, value in NO_SPINNING.items():
            options.add_session_config_entry(key, value)
    return options


def spinning_setting(options: Any) -> dict[str, str]:
    """The spin entries as the session options hold them ("" where unset: ONNX Runtime's default, spinning on)."""
    return {key: options.get_session_config_entry(key) for key in NO_SPINNING}


def make_session(path: Path, device: torch.device, options: Any, int8: bool = False) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), options, providers=providers_for(device, int8))


def numpy_dtype(dtype: torch.dtype) -> Any:
    return torch.empty(0, dtype=dtype).numpy().dtype


def cpu_forward(session: Any, layout: OutputLayout) -> ForwardFn:
    input_name = session.get_inputs()[0].name

    def forward(inputs: torch.Tensor) -> Any:
        outputs = session.run(None, {input_name: inputs.detach().contiguous().numpy()})
        return layout.rebuild([torch.from_numpy(output) for output in outputs])

    return forward


OutputSpec = tuple[tuple[int, ...], torch.dtype]


def output_specs(outputs: Any, layout: OutputLayout) -> list[OutputSpec]:
    """Shape and dtype of each graph output: all the CUDA binding needs, so the eager outputs need not stay resident."""
    leaves, _ = tree_flatten(outputs)
    return [(tuple(leaves[i].shape), leaves[i].dtype) for i in layout.tensor_positions]


def process_memory_mb(device: torch.device) -> float | None:
    """This process's memory where the session allocates: host RSS on a CPU, NVML process memory on CUDA."""
    if device.type == "cuda":
        handle = nvml.handle_for(device.index or 0)
        return nvml.process_used_mb(handle) if handle is not None else None
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def cuda_forward(session: Any, layout: OutputLayout, specs: Sequence[OutputSpec], device: torch.device) -> ForwardFn:
    """Bind torch's device memory to the session: no host copies, outputs come back as CUDA tensors."""
    input_name = session.get_inputs()[0].name
    output_names = [output.name for output in session.get_outputs()]
    index = device.index or 0

    def forward(inputs: torch.Tensor) -> Any:
        inputs = inputs.contiguous()
        binding = session.io_binding()
        binding.bind_input(input_name, "cuda", index, numpy_dtype(inputs.dtype), tuple(inputs.shape), inputs.data_ptr())
        outputs = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in specs]
        for name, output in zip(output_names, outputs):
            binding.bind_output(name, "cuda", index, numpy_dtype(output.dtype), tuple(output.shape), output.data_ptr())
        session.run_with_iobinding(binding)
        return layout.rebuild(outputs)

    return forward


# ---- the cache: an export (and its int8 rewrite) is reused across runs ----------------------------------


def _graph_key(model: nn.Module, graph_precision: OnnxGraphPrecision | None, example: torch.Tensor) -> cache.CacheKey:
    kind = "onnx-export" if graph_precision is None else f"onnx-{graph_precision.precision_name}"
    extra = graph_precision.cache_fields() if graph_precision is not None else {}
    return cache.key(
        kind,
        model,
        EXPORT_LIBRARIES,
        opset=OPSET,
        input_shape=list(example.shape),
        input_dtype=str(example.dtype),
        device_type=example.device.type,
        **extra,
    )


def _cached_graph(
    cache_key: cache.CacheKey, graph_precision: OnnxGraphPrecision | None
) -> tuple[Path, dict[str, Any]] | None:
    entry = cache.lookup(cache_key)
    if entry is None:
        return None
    if graph_precision is not None:
        graph_precision.restore(entry.extra.get("state", {}))
    return entry.file(GRAPH_FILE), {**entry.extra.get("info", {}), "cache": "hit"}


def _export_and_rewrite(
    model: nn.Module,
    graph_precision: OnnxGraphPrecision | None,
    layout: OutputLayout,
    example: torch.Tensor,
    workdir: Path,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Export (and rewrite, for ort-int8) into `workdir`: the graph's path, how it was built, the precision's state."""
    started = time.perf_counter()
    path = workdir / GRAPH_FILE
    exporter = export_onnx(FlatOutputs(model, layout), example, path)
    info: dict[str, Any] = {
        "exporter": exporter,
        "opset": OPSET if exporter == "dynamo" else 17,
        "export_s": round(time.perf_counter() - started, 3),
    }
    if graph_precision is not None:
        started = time.perf_counter()
        path = graph_precision.rewrite(path, graph_input_name(path), workdir)
        info[f"{graph_precision.precision_name}_s"] = round(time.perf_counter() - started, 3)
    return path, info, graph_precision.cache_state() if graph_precision is not None else {}


def _built_graph(
    cache_key: cache.CacheKey,
    model: nn.Module,
    graph_precision: OnnxGraphPrecision | None,
    layout: OutputLayout,
    example: torch.Tensor,
) -> tuple[Path, dict[str, Any]]:
    """Export (and rewrite) into a temporary folder, then keep a copy in the cache.

    On a CPU the export runs in a forked child: what torch.onnx leaves behind (graphs, fake
    tensors, the exporter's caches: ~100 MiB) goes with that process instead of sitting in the
    measured cell's host peaks. A CUDA cell exports in-process (a fork cannot use its CUDA context).
    """
    workdir = Path(tempfile.mkdtemp(prefix="segbench-onnx-"))
    build = lambda: _export_and_rewrite(model, graph_precision, layout, example, workdir)  # noqa: E731
    if example.device.type == "cpu":
        path, info, state = call_in_fork(build)
        info["built_in"] = "a forked child process"
        if graph_precision is not None:
            graph_precision.restore(state)
    else:
        path, info, state = build()
        info["built_in"] = "the cell's process"
    stored = cache.store(cache_key, {GRAPH_FILE: path}, {"info": info, "state": state})
    return path, {**info, "cache": "miss" if stored is not None else "off"}


# ---- the backend --------------------------------------------------------------------------------------

SESSION_MEMORY_NOTE = {
    False: "host RSS growth over session creation and one run: the session's weight copy, prepacked kernels and arena",
    True: "NVML process memory growth over session creation and one run: ONNX Runtime's CUDA arena and workspaces",
}


class OnnxRuntime(Backend):
    name = "onnxruntime"
    runtime = "onnxruntime"
    warm_imports = ("onnxruntime", "onnx", "onnxscript", "torch.onnx._internal.exporter._core")
    description = (
        "ONNX Runtime (exported once per cell with torch.onnx; CPU provider, or TensorRT/CUDA providers on "
        "GPUs); export is prepare_s"
    )
    memory_outside_torch = "ONNX Runtime's own arenas (its CUDA memory arena and workspaces, or host memory on a CPU)"

    def __init__(self) -> None:
        self._info: dict[str, Any] | None = None
        self._profile_source: dict[str, Any] | None = None

    def profile_source(self) -> dict[str, Any] | None:
        return self._profile_source

    def unsupported_reason(self, device: torch.device) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
        if device.type == "cuda" and not set(CUDA_PROVIDERS) & set(available_providers()):
            return "this onnxruntime build has no CUDA or TensorRT provider (install onnxruntime-gpu)"
        if device.type not in ("cpu", "cuda"):
            return f"the onnxruntime backend supports CPUs and CUDA GPUs, not {device.type}"
        return None

    def precision_reason(self, dtype: torch.dtype, device: torch.device) -> str | None:
        return dtype_reason(dtype, device)

    def describe(self, adapter: SegmentationAdapter) -> dict[str, Any] | None:
        return self._info

    def prepare(self, adapter: SegmentationAdapter, example: torch.Tensor) -> ForwardFn:
        assert adapter.model is not None
        device = example.device
        graph_precision = adapter.model if isinstance(adapter.model, OnnxGraphPrecision) else None
        model = graph_precision.float_model if graph_precision is not None else adapter.model
        reason = unexportable_reason(model, device)
        if reason:
            raise UnsupportedError(reason)

        # The cell prepares under inference_mode, whose tensors torch.export cannot trace.
        with torch.inference_mode(False), torch.no_grad():
            example = example.clone()
            reference = model(example)  # also fills shape-keyed caches (YOLO anchors) before tracing
            layout = OutputLayout.of(reference)
            specs = output_specs(reference, layout)
            del reference  # the eager outputs are preparation: they must not sit in the cell's peaks
            cache_key = _graph_key(model, graph_precision, example)
            path, info = _cached_graph(cache_key, graph_precision) or _built_graph(
                cache_key, model, graph_precision, layout, example
            )
            if graph_precision is not None:
                graph_precision.release()
            gc.collect()  # export leftovers (graphs, fake tensors) go before the session's memory is read
            before_session = process_memory_mb(device)
            options = session_options()
            try:
                session = make_session(path, device, options, int8=graph_precision is not None)
            # A cached graph ONNX Runtime cannot load is rebuilt; a fresh one's failure stands.
            except Exception as exc:  # noqa: BLE001
                if info.get("cache") != "hit":
                    raise
                cache.discard(cache_key, f"ONNX Runtime could not load it: {_first_line(exc)}")
                path, info = _built_graph(cache_key, model, graph_precision, layout, example)
                session = make_session(path, device, options, int8=graph_precision is not None)
            forward = (
                cuda_forward(session, layout, specs, device) if device.type == "cuda" else cpu_forward(session, layout)
            )
            forward(
                example
            )  # one run sizes the session's arena, so its memory is read here, not in the measured passes
            after_session = process_memory_mb(device)
        session_mb = (
            round(after_session - before_session, 1)
            if before_session is not None and after_session is not None
            else None
        )
        self._profile_source = {"graph": path, "device": device, "int8": graph_precision is not None}
        self._info = {
            **info,
            "providers": session.get_providers(),
            "onnx_mb": round(path.stat().st_size / 2**20, 2),
            "threads": torch.get_num_threads(),
            "thread_spinning": spinning_setting(options),  # "0": pool threads sleep between runs (torch does pre/post)
            "session_mb": session_mb,
            "session_mb_is": SESSION_MEMORY_NOTE[device.type == "cuda"],
        }
        return forward
