"""int8 through torchao, and the bookkeeping every quantizing precision shares: what was converted.

CPU: PT2E static quantization. The model is exported (torch.export), annotated by torchao's
X86InductorQuantizer (uint8 activations per tensor, int8 weights per channel), calibrated on the
cell's photographs, converted to a quantize/dequantize graph, and compiled: inductor (with freezing
on) pattern-matches the q/dq pairs into oneDNN int8 convolutions and matmuls. Without the compile
the q/dq graph runs in fp32 with extra rounding, so the compile happens here, inside `apply`, and
never in the timed loop.

CUDA: torchao `quantize_` with int8 dynamic activations and int8 weights. Its configs convert only
nn.Linear layers; a conv network gets nothing from them, and on NVIDIA GPUs the int8 path for conv
networks is TensorRT (see `tensorrt_status`).

The census helpers (`LayerCensus`, `converted_by_torchao`, `remember_share`) are shared by the
other torchao precisions (weight_only.py, fp8.py).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segbench.backends.base import forward_runs_eagerly_under_compile
from segbench.errors import UnsupportedError
from segbench.precision.base import Precision, PrecisionContext
from segbench.system import cache
from segbench.system.env import cpu_flags

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
_SHARE_ATTRIBUTE = "_segbench_quantized_share"
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


# ---- what was converted ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCensus:
    """The conv/linear layers of a float model with their parameters and FLOPs, and the model's totals.

    FLOPs come from one forward pass under FlopCounterMode (2 per multiply-add, matmuls and
    convolutions only, as `segbench.models.flops` counts them), so a layer's share is its share of
    the compute that quantization can speed up.
    """

    params: dict[str, int]  # fully qualified module name -> parameters of that conv/linear layer
    flops: dict[str, float]
    linear: frozenset[str]  # the names of the nn.Linear layers among them
    total_params: int
    total_flops: float

    @classmethod
    def of(cls, model: nn.Module, example: torch.Tensor) -> LayerCensus:
        layers = {name: module for name, module in model.named_modules() if isinstance(module, LAYER_TYPES)}
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
        # FlopCounterMode keys modules as "<root class>.<qualified name>"
        per_module = counter.get_flop_counts()
        root = type(model).__name__
        flops = {name: float(sum(per_module.get(f"{root}.{name}", {}).values())) for name in layers}
        return cls(
            params={name: sum(p.numel() for p in module.parameters(recurse=False)) for name, module in layers.items()},
            flops=flops,
            linear=frozenset(name for name, module in layers.items() if isinstance(module, nn.Linear)),
            total_params=sum(p.numel() for p in model.parameters()),
            total_flops=float(counter.get_total_flops()),
        )

    def linear_param_share(self) -> float:
        return sum(self.params[name] for name in self.linear) / self.total_params if self.total_params else 0.0

    def share(self, converted: Iterable[str]) -> dict[str, Any]:
        """The quantized_share record: fractions of parameters and FLOPs in the converted layers."""
        names = set(converted) & set(self.params)
        return {
            "params": sum(self.params[n] for n in names) / self.total_params if self.total_params else 0.0,
            "flops": sum(self.flops[n] for n in names) / self.total_flops if self.total_flops else None,
            "layers": f"{len(names)} of {len(self.params)} conv/linear",
        }


def ultralytics_detect_head(model: nn.Module) -> nn.Module | None:
    """An ultralytics model's Detect/Segment head, whose box arithmetic (DFL, anchors) and score sigmoids ultralytics'
    own int8 export leaves in float; None for any other model."""
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not len(layers):
        return None
    head = layers[-1]
    if type(head).__module__.split(".")[0] != "ultralytics" or not hasattr(head, "dfl"):
        return None
    return head


def remember_share(model: nn.Module, share: dict[str, Any]) -> None:
    """Keep the share on the module: compile wrappers forward attribute reads to it."""
    object.__setattr__(model, _SHARE_ATTRIBUTE, share)


def recall_share(model: nn.Module) -> dict[str, Any] | None:
    for candidate in (model, getattr(model, "_orig_mod", None)):
        share = getattr(candidate, _SHARE_ATTRIBUTE, None) if candidate is not None else None
        if share is not None:
            return share
    return None


def converted_by_torchao(model: nn.Module) -> list[str]:
    """Layers whose weight quantize_ replaced by a torchao tensor subclass (the ones it really converted)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, LAYER_TYPES) and type(getattr(module, "weight", None)).__module__.startswith("torchao")
    ]


def percent(fraction: float) -> str:
    return f"{fraction * 100:.0f} %"


def require_linear_layers(option: str, census: LayerCensus) -> None:
    """torchao's default filter converts nn.Linear only: refuse a model where that is nothing."""
    if census.linear_param_share() == 0.0:
        raise UnsupportedError(
            f"{option} converts only nn.Linear layers; this model has 0 % of its parameters in Linear layers "
            f"({len(census.params)} conv layers, no Linear)"
        )


# ---- TensorRT: the int8 path for conv networks on NVIDIA GPUs --------------------------------------


def tensorrt_status() -> str | None:
    """How TensorRT can be reached here ("torch-tensorrt", "ONNX Runtime TensorRT provider"), or None."""
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
            return "ONNX Runtime's TensorrtExecutionProvider"
    if importlib.util.find_spec("torch_tensorrt") is not None:
        return "torch-tensorrt"
    return None


def conv_network_on_cuda_reason(option: str, census: LayerCensus) -> str:
    """Why torchao int8 does nothing useful for a conv network on CUDA, and where the real int8 path is."""
    found = tensorrt_status()
    detail = (
        f"{option} on CUDA converts only nn.Linear layers and this model has "
        f"{percent(census.linear_param_share())} of its parameters in them"
    )
    if found is None:
        return f"TensorRT not installed: {detail}; int8 for conv networks on NVIDIA GPUs goes through TensorRT"
    return (
        f"{detail}; TensorRT is available ({found}): run precision ort-int8 on backend onnxruntime for int8 "
        "convolutions"
    )


# ---- CPU: PT2E + X86InductorQuantizer + inductor ---------------------------------------------------


def cpu_has_vnni() -> bool:
    return bool(_VNNI_FLAGS & set(cpu_flags()))


def unshare_stateless_modules(model: nn.Module) -> int:
    """Give every use of a parameter-free module (an activation) its own instance; returns how many were copied.

    The x86 quantizer matches conv+activation pairs by the module each op came from, so one SiLU
    instance shared by every conv (ultralytics' Conv.default_act) reads as one partition with many
    outputs and is refused.
    """
    seen: set[int] = set()
    copied = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):  # not named_children(): it hides repeats
            if child is None:
                continue
            if id(child) in seen and next(child.parameters(), None) is None:
                setattr(parent, child_name, copy.deepcopy(child))
                copied += 1
            seen.add(id(child))
    return copied


def pt2e_quantized_layers(graph_module: torch.fx.GraphModule) -> list[str]:
    """Names of the modules whose conv/linear op reads a dequantized int8 weight after convert_pt2e."""
    layer_ops = {
        torch.ops.aten.conv1d.default,
        torch.ops.aten.conv2d.default,
        torch.ops.aten.conv3d.default,
        torch.ops.aten.linear.default,
    }
    names = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.target not in layer_ops or len(node.args) < 2:
            continue
        weight = node.args[1]
        if isinstance(weight, torch.fx.Node) and "dequantize" in str(weight.target):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                names.append(list(stack.values())[-1][0])
    return names


def quantize_pt2e_x86(
    model: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor], reduce_range: bool
) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    )
    exported = torch.export.export(model, (example,)).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert_pt2e(prepared)


# ---- the cache: the converted (quantize/dequantize) program, so a rerun skips export and calibration ------

PROGRAM_FILE = "program.pt2"
QUANTIZE_LIBRARIES = ("torchao",)  # with torch's version, part of the key


def tensors_digest(tensors: Sequence[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def program_key(
    model: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor], reduce_range: bool
) -> cache.CacheKey:
    return cache.key(
        "pt2e-int8",
        model,
        QUANTIZE_LIBRARIES,
        input_shape=list(example.shape),
        input_dtype=str(example.dtype),
        reduce_range=reduce_range,
        calibration_sha256=tensors_digest(calibration),
    )


def cached_program(cache_key: cache.CacheKey) -> tuple[torch.fx.GraphModule, dict[str, Any]] | None:
    """The converted graph and its quantized share from the cache; None on a miss (a broken entry is discarded)."""
    entry = cache.lookup(cache_key)
    if entry is None:
        return None
    try:
        program = torch.export.load(entry.file(PROGRAM_FILE))
        return program.module(), entry.extra["share"]
    except Exception as exc:  # noqa: BLE001 (any load failure means the entry is unusable: rebuild it)
        cache.discard(cache_key, f"torch.export.load failed: {type(exc).__name__}: {str(exc)[:200]}")
        return None


def store_program(
    cache_key: cache.CacheKey, converted: torch.fx.GraphModule, example: torch.Tensor, share: dict[str, Any]
) -> str:
    """Save the converted graph as an ExportedProgram; returns "miss" (stored), "off", or why it could not be."""
    if cache.root() is None:
        return "off"
    try:
        program = torch.export.export(converted, (example,))
        with tempfile.TemporaryDirectory(prefix="segbench-int8-") as workdir:
            path = Path(workdir) / PROGRAM_FILE
            torch.export.save(program, path)
            stored = cache.store(cache_key, {PROGRAM_FILE: path}, {"share": share})
    except Exception as exc:  # noqa: BLE001 (a graph torch.export cannot re-export or save still runs, uncached)
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        cache.unstorable(cache_key, reason)
        return f"not cached ({reason})"
    return "miss" if stored is not None else "not cached (store failed)"


# A compile backend's dynamo skips its forward; the inner graph runs its own compiled code.
@forward_runs_eagerly_under_compile
class CompiledGraph(nn.Module):
    """The compiled int8 graph, held so a backend's torch.compile does not compile (and freeze) it a second time."""

    def __init__(self, compiled: nn.Module):
        super().__init__()
        self.compiled = compiled

    def forward(self, inputs: torch.Tensor) -> Any:
        return self.compiled(inputs)


# ---- the precision --------------------------------------------------------------------------------


class Int8(Precision):
    name = "int8"
    warm_imports = (
        "torchao.quantization.pt2e.quantize_pt2e",
        "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer",
        "torch._inductor.compile_fx",
    )
    description = (
        "int8 via torchao: PT2E static quantization compiled by inductor on CPUs; dynamic int8 activations "
        "and weights (nn.Linear) on CUDA"
    )
    matmul_class = "int8"
    runs_on = ("pytorch",)  # a PT2E program lowered by inductor; the runtimes' own int8 are ort-int8 and ov-int8

    def __init__(self) -> None:
        self._notes: list[str] = []

    def unsupported_reason(self, device: torch.device) -> str | None:
        if device.type == "cpu" and not torch.backends.mkldnn.is_available():
            return "int8 on a CPU lowers to oneDNN int8 kernels; this torch build has no oneDNN (mkldnn)"
        if device.type not in ("cpu", "cuda"):
            return f"int8 is implemented for CPUs and CUDA GPUs, not {device.type}"
        return None

    def notes(self, device: torch.device) -> list[str]:
        return list(self._notes)

    def quantized_share(self, model: nn.Module) -> dict[str, Any] | None:
        return recall_share(model)

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        self._notes = []
        model = model.float()
        if device.type == "cuda":
            return self._apply_cuda(model, context)
        return self._apply_cpu(model, context)

    def _apply_cpu(self, model: nn.Module, context: PrecisionContext) -> nn.Module:
        # The context's tensors were made under inference_mode, which torch.export cannot trace.
        example = context.example.clone()
        calibration = [batch.clone() for batch in context.calibration] or [example]
        unshare_stateless_modules(model)
        reduce_range = not cpu_has_vnni()
        started = time.perf_counter()
        cache_key = program_key(model, example, calibration, reduce_range)
        found = cached_program(cache_key)
        if found is not None:
            converted, share = found
            origin = "loaded from the cache"
        else:
            # This forward also fills shape-keyed caches (YOLO's anchors) so export sees constants, not .item() reads.
            census = LayerCensus.of(model, example)
            converted = quantize_pt2e_x86(model, example, calibration, reduce_range)
            share = census.share(pt2e_quantized_layers(converted))
            if not share["params"]:
                raise UnsupportedError(
                    "the x86 inductor quantizer found no conv or linear layer to quantize in this model"
                )
            origin = f"export + calibrate + convert, cache {store_program(cache_key, converted, example, share)}"
        quantize_s = time.perf_counter() - started

        torch._inductor.config.freezing = True  # the int8 weight-prepack and fusion passes are freezing passes
        compiled = torch.compile(converted)
        started = time.perf_counter()
        with torch.inference_mode():  # the cell's inputs are inference tensors: compile for the same guards
            compiled(context.example)
        compile_s = time.perf_counter() - started
        runner = CompiledGraph(compiled)
        remember_share(runner, share)
        self._notes = [
            f"PT2E static int8 (X86InductorQuantizer, {sum(batch.shape[0] for batch in calibration)} calibration "
            "photographs"
            + (", activations reduced to 7 bits: this CPU has no VNNI" if reduce_range else "")
            + f"): {origin} {quantize_s:.1f} s",
            f"compiled by inductor inside the precision ({compile_s:.1f} s of prepare_s, never latency): every backend "
            "runs the int8 kernels; backend compile leaves it as it is",
        ]
        return runner

    def _apply_cuda(self, model: nn.Module, context: PrecisionContext) -> nn.Module:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        census = LayerCensus.of(model, context.example)
        if census.linear_param_share() == 0.0:
            raise UnsupportedError(conv_network_on_cuda_reason("torchao int8", census))
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        share = census.share(converted_by_torchao(model))
        remember_share(model, share)
        self._notes = [
            f"torchao Int8DynamicActivationInt8WeightConfig: nn.Linear only ({share['layers']}); convolutions stay in "
            "fp32; its speed needs backend compile",
        ]
        return model
