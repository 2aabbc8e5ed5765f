"""The profile pass: where one forward's time goes, per operator and per model block, from the runtime's own profiler.

It runs after every timed pass (the headline figures never carry a profiler's cost), over `profile.iters` forwards
of the latency pass's batch:

- PyTorch backends (eager, channels_last, compile, pipelines): torch.profiler (CPU, and CUDA kernels on a GPU), each
  op's self time; on an eager module, forward hooks open a `record_function` range where each block begins, so each op
  knows the block it ran in. A compiled graph (compile, int8's inductor graph) runs as one region: its ops and
  kernels are named (oneDNN int8 convolutions as `onednn::qconv...`), their module is not.
- onnxruntime: a second session on the same graph with `enable_profiling` (the JSON trace: node, op type, provider,
  input types), node names mapped to module paths through the export's `pkg.torch.onnx.name_scopes`.
- openvino: the same IR compiled again with the timed settings and `PERF_COUNT` on, `get_profiling_info()` per node
  (layer type, `exec_type` such as `jit_avx512_I8`, real time), fused nodes mapped to module paths through the
  runtime model's `originalLayersNames`.

Each collector hands back `NodeTime` rows; the rest (operators, blocks, precision shares) is shared.
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from segbench.backends.base import Backend
from segbench.backends.onnxruntime import make_session, session_options
from segbench.models.blocks import BlockMap, strip_wrapper

TOP_OPERATORS = 40  # operators kept in the record; the rest is one "other" row
RANGE_PREFIX = "segbench.module::"
# What a compiled graph wraps its ops in: region markers, not ops the model called (their own self time is the
# generated code's, which stays a row of its own).
REGION_PREFIXES = ("Torch-Compiled Region", "CompiledFunction", "## Call CompiledFxGraph", "ProfilerStep")
UNGROUPED = "none: a compiled graph runs as one region"
COMPILED_BLOCK = "compiled graph (not split by module)"
WARM_RUNS = 3  # a fresh profiling session or compile runs these before its counted forwards (arenas, prepacking)
LOW_PRECISIONS = ("int8", "bf16", "fp16", "fp8")
QUANT_OPS = ("quantize", "dequantize", "quantizelinear", "dequantizelinear", "dynamicquantizelinear")
INT8_MARKERS = ("qconv", "qlinear", "quantized::", "int8", "_int_mm", "qmatmul", "integer", "qgemm", "qlinear")
FLOAT_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float": "fp32", "double": "fp64"}


@dataclass
class NodeTime:
    """One operator occurrence as the runtime reported it, summed over the profiled forwards."""

    op: str  # what the model asked for: aten::conv2d, Conv, Convolution
    implementation: str  # what ran: the kernel, the provider, the exec_type
    precision: str  # fp32, bf16, fp16, int8, quant/dequant, unknown
    path: str | None  # module path relative to the model, when the runtime names it
    total_us: float
    calls: int


def precision_of_name(name: str, fallback: str) -> str:
    """int8 when a kernel or op name says so, q/dq for the conversions, else `fallback`."""
    lowered = name.lower()
    if any(lowered.endswith(op) or f"::{op}" in lowered for op in QUANT_OPS) or "quantize_per" in lowered:
        return "quant/dequant"
    if any(marker in lowered for marker in INT8_MARKERS):
        return "int8"
    return fallback


def dtype_name(dtype: torch.dtype) -> str:
    return FLOAT_NAMES.get(str(dtype).removeprefix("torch."), str(dtype).removeprefix("torch."))


# ---- PyTorch ------------------------------------------------------------------------------------------------


def _module_ranges(model: nn.Module | None, stack: ExitStack, blocks: BlockMap) -> bool:
    """Forward hooks that open and close a named profiler range on each module where a new block begins (few hooks:
    each adds the profiler's cost); False where the model is a compiled or exported graph (hooks would recompile it,
    and its ops run in one region)."""
    if model is None or any(
        isinstance(module, (torch.fx.GraphModule, torch._dynamo.eval_frame.OptimizedModule))
        for module in model.modules()
    ):
        return False
    open_ranges: list[Any] = []

    def enter(path: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            handle = torch.autograd.profiler.record_function(RANGE_PREFIX + path)
            handle.__enter__()
            open_ranges.append(handle)

        return hook

    def leave(*_: Any) -> None:
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    for path, module in model.named_modules():
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        if path and blocks.block(path) != blocks.block(parent):
            stack.callback(module.register_forward_pre_hook(enter(path)).remove)
            stack.callback(module.register_forward_hook(leave, always_call=True).remove)
    return True


def _outer_op_and_path(event: Any) -> tuple[Any, str | None]:
    """The outermost op above an event (what the model called) and the innermost module range around it."""
    outer, path, parent = event, None, event.cpu_parent
    while parent is not None:
        if parent.name.startswith(RANGE_PREFIX):
            path = path or parent.name[len(RANGE_PREFIX) :]
        elif not parent.name.startswith(REGION_PREFIXES):
            outer = parent
        parent = parent.cpu_parent
    return outer, path


def torch_nodes(
    forward: Callable[[Any], Any],
    inputs: Any,
    iters: int,
    device: torch.device,
    model: nn.Module | None,
    blocks: BlockMap,
    fallback: str,
) -> tuple[list[NodeTime], list[float], str]:
    """torch.profiler over `iters` forwards: each op's self time, summed into the outermost op the model called
    (aten::conv2d); its implementation is the inner op or CUDA kernel that spent most of it (aten::mkldnn_convolution).
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    walls: list[float] = []
    with ExitStack() as stack:
        hooked = _module_ranges(model, stack, blocks)
        with profile(activities=activities) as prof:
            for _ in range(iters):
                began = time.perf_counter()
                forward(inputs)
                if cuda:
                    torch.cuda.synchronize(device)
                walls.append((time.perf_counter() - began) * 1000.0)
    # Per call of an outermost op: its module range, and the self time of each op inside it.
    calls: dict[int, tuple[str, str | None, dict[str, float]]] = {}
    for event in prof.events():
        if event.name.startswith((RANGE_PREFIX, "ProfilerStep")):
            continue
        if event.device_type != DeviceType.CPU:  # a kernel's own event: its time is its launching op's device time
            continue
        self_us = float(event.self_device_time_total if cuda else event.self_cpu_time_total)
        if self_us <= 0:
            continue
        outer, path = _outer_op_and_path(event)
        inner = calls.setdefault(id(outer), (outer.name, path, defaultdict(float)))[2]
        kernels = getattr(event, "kernels", None) if cuda else None
        inner[kernels[0].name if kernels else event.name] += self_us
    rows: dict[tuple[str, str, str | None], NodeTime] = {}
    for op, path, inner in calls.values():
        implementation = max(inner.items(), key=lambda item: item[1])[0]  # what this call spent most in
        row = rows.get((op, implementation, path))
        if row is None:
            precision = precision_of_name(f"{op} {implementation}", fallback)
            row = rows[(op, implementation, path)] = NodeTime(op, implementation, precision, path, 0.0, 0)
        row.total_us += sum(inner.values())
        row.calls += 1
    how = "module ranges (forward hooks)" if hooked else UNGROUPED
    return list(rows.values()), walls, how


# ---- ONNX Runtime ---------------------------------------------------------------------------------------------


def onnx_paths(graph_path: Path) -> dict[str, str]:
    """Node name -> module path (relative to the model) from the export's name scopes."""
    import onnx

    paths: dict[str, str] = {}
    for node in onnx.load(str(graph_path), load_external_data=False).graph.node:
        props = {prop.key: prop.value for prop in node.metadata_props}
        scopes = props.get("pkg.torch.onnx.name_scopes")
        if scopes:
            try:
                names = ast.literal_eval(scopes)
            except (ValueError, SyntaxError):
                continue
            modules = [name for name in names[:-1] if name]  # the last scope is the op itself
            if modules:
                # ORT renames what it rewrites after the node or its output (`relu_1_nchwc`): both are keys
                for name in (node.name, *node.output):
                    paths[name] = strip_wrapper(modules[-1])
        elif node.name.startswith("/"):  # the TorchScript exporter: /model.22/cv2/Conv
            paths[node.name] = strip_wrapper(".".join(node.name.strip("/").split("/")[:-1]))
    return paths


def module_of_node(name: str, paths: dict[str, str]) -> str | None:
    """The module path of an ORT node, its name trimmed of what ORT's rewrites append (`_nchwc`, `_quant`, ...)."""
    candidate = re.sub(r"_token_\d+", "", name)  # what ORT appends to the nodes it inserts
    while candidate:
        if candidate in paths:
            return paths[candidate]
        stem, _, last = candidate.rpartition("_")
        if not stem or last.isdigit():  # never strip a number: `relu_11` is not `relu`
            return None
        candidate = stem
    return None


def _ort_precision(args: dict[str, Any], op: str) -> str:
    lowered = op.lower()
    if lowered in QUANT_OPS:
        return "quant/dequant"
    kinds = {kind for shapes in args.get("input_type_shape", []) for kind in shapes}
    if kinds & {"int8", "uint8"} or precision_of_name(op, "") == "int8":
        return "int8"
    floats = sorted(FLOAT_NAMES.get(kind, kind) for kind in kinds if kind in FLOAT_NAMES)
    return floats[0] if floats else "unknown"


def ort_nodes(source: dict[str, Any], inputs: torch.Tensor, iters: int) -> tuple[list[NodeTime], list[float], str]:
    """A profiling session on the cell's graph (same options, providers): its trace's node events."""
    graph = Path(source["graph"])
    options = session_options()
    workdir = Path(tempfile.mkdtemp(prefix="segbench-profile-"))
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "ort")
    session = make_session(graph, source["device"], options, int8=source["int8"])
    name = session.get_inputs()[0].name
    feed = {name: inputs.detach().cpu().contiguous().numpy()}
    for _ in range(WARM_RUNS):  # the first runs allocate and prepack; their events are dropped below
        session.run(None, feed)
    walls: list[float] = []
    for _ in range(iters):
        began = time.perf_counter()
        session.run(None, feed)
        walls.append((time.perf_counter() - began) * 1000.0)
    trace = json.loads(Path(session.end_profiling()).read_text())
    del session
    paths = onnx_paths(graph)
    runs = [event for event in trace if event.get("name") == "model_run"]
    warm_end = runs[WARM_RUNS - 1]["ts"] + runs[WARM_RUNS - 1]["dur"] if len(runs) >= WARM_RUNS else 0
    rows: dict[tuple[str, str, str | None, str], NodeTime] = {}
    for event in trace:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or event["ts"] < warm_end:
            continue
        args = event.get("args", {})
        node = event["name"].removesuffix("_kernel_time")
        op, provider = args.get("op_name", "?"), args.get("provider", "?").removesuffix("ExecutionProvider")
        path = module_of_node(node, paths)
        key = (op, provider, path, _ort_precision(args, op))
        row = rows.setdefault(key, NodeTime(op, provider, key[3], path, 0.0, 0))
        row.total_us += float(event.get("dur", 0))
        row.calls += 1
    return list(rows.values()), walls, "node names through the export's name scopes"


# ---- OpenVINO ------------------------------------------------------------------------------------------------

OV_MODULE = re.compile(r"__module\.([\w.]+)")


def _ov_precision(exec_type: str) -> str:
    lowered = exec_type.lower()
    for marker, name in (("i8", "int8"), ("u8", "int8"), ("bf16", "bf16"), ("f16", "fp16"), ("f32", "fp32")):
        if re.search(rf"(^|_){marker}($|_)", lowered) or lowered.endswith(marker):
            return name
    return "unknown"


def _ov_text(value: Any) -> str:
    """An rt_info entry as text (an OVAny prints as its class)."""
    for read in (lambda: value.astype(str), lambda: value.value, lambda: str(value)):
        try:
            return str(read())
        except Exception:  # noqa: BLE001 (OVAny's accessors differ between releases)
            continue
    return ""


def ov_paths(compiled: Any) -> dict[str, str]:
    """Executed node name -> module path, through the runtime model's list of the layers each node fused."""
    paths: dict[str, str] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        fused = _ov_text(info["originalLayersNames"]) if "originalLayersNames" in info else ""
        names = [op.get_friendly_name(), *fused.split(",")]
        found = next((OV_MODULE.search(name) for name in names if OV_MODULE.search(name)), None)
        if found:
            paths[op.get_friendly_name()] = strip_wrapper(found.group(1))
    return paths


def ov_nodes(source: dict[str, Any], inputs: torch.Tensor, iters: int) -> tuple[list[NodeTime], list[float], str]:
    """The timed graph (its IR) compiled again with the same settings and PERF_COUNT on; per node real time."""
    import openvino as ov

    core = ov.Core()
    config = {**source["config"], "PERF_COUNT": True}
    profiled = core.compile_model(core.read_model(source["xml"]), source["device"], config)
    request = profiled.create_infer_request()
    feed = {0: inputs.detach().cpu().contiguous().numpy()}
    for _ in range(WARM_RUNS):
        request.infer(feed)
    paths = ov_paths(profiled)
    totals: dict[str, list[Any]] = {}
    walls: list[float] = []
    for _ in range(iters):
        began = time.perf_counter()
        request.infer(feed)
        walls.append((time.perf_counter() - began) * 1000.0)
        for info in request.get_profiling_info():  # the last inference's counters
            if str(info.status).endswith("EXECUTED") and not str(info.status).endswith("NOT_EXECUTED"):
                entry = totals.setdefault(info.node_name, [info.node_type, info.exec_type, 0.0, 0])
                entry[2] += info.real_time.total_seconds() * 1e6
                entry[3] += 1
    rows: dict[tuple[str, str, str | None], NodeTime] = {}
    for node, (op, exec_type, total_us, calls) in totals.items():
        path = paths.get(node)
        row = rows.setdefault((op, exec_type, path), NodeTime(op, exec_type, _ov_precision(exec_type), path, 0.0, 0))
        row.total_us += total_us
        row.calls += calls
    return list(rows.values()), walls, "fused nodes through the runtime model's originalLayersNames"


# ---- the shared part -------------------------------------------------------------------------------------------


def _share(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole > 0 else 0.0


def operators(nodes: list[NodeTime], iters: int, limit: int = TOP_OPERATORS) -> list[dict[str, Any]]:
    """Per (op, implementation, precision), self ms per forward, share and calls per forward; the top `limit` and an
    'other' row."""
    grouped: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    blocks: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for node in nodes:
        key = (node.op, node.implementation, node.precision)
        grouped[key][0] += node.total_us
        grouped[key][1] += node.calls
        blocks[key][node.path or ""] += node.total_us
    total = sum(value[0] for value in grouped.values())
    ranked = sorted(grouped.items(), key=lambda item: -item[1][0])
    rows = [
        {
            "name": op,
            "implementation": implementation,
            "precision": precision,
            "self_ms": round(us / iters / 1000.0, 4),
            "share": _share(us, total),
            "calls": round(calls / iters, 2),
        }
        for (op, implementation, precision), (us, calls) in ranked[:limit]
    ]
    rest = ranked[limit:]
    if rest:
        us = sum(value[0] for _, value in rest)
        rows.append(
            {
                "name": f"other ({len(rest)} operators)",
                "implementation": "",
                "precision": "",
                "self_ms": round(us / iters / 1000.0, 4),
                "share": _share(us, total),
                "calls": round(sum(value[1] for _, value in rest) / iters, 2),
            }
        )
    return rows


def block_rows(
    nodes: list[NodeTime], iters: int, blocks: BlockMap, work: dict[str, Any] | None, ungrouped: str | None = None
) -> list[dict[str, Any]]:
    """Per block: self ms per forward, share of the forward, and how much of it ran in each precision (`ungrouped`
    names the one block of a graph the profiler could not split by module)."""
    times: dict[str, float] = defaultdict(float)
    by_precision: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    order: dict[str, int] = {}
    for node in nodes:
        name = ungrouped or blocks.block(node.path)
        times[name] += node.total_us
        by_precision[name][node.precision] += node.total_us
        order.setdefault(name, len(order))
    total = sum(times.values())
    rows = []
    for name in sorted(times, key=lambda block: -times[block]):
        shares = {precision: _share(us, times[name]) for precision, us in by_precision[name].items()}
        low = sum(share for precision, share in shares.items() if precision in LOW_PRECISIONS)
        row: dict[str, Any] = {
            "name": name,
            "self_ms": round(times[name] / iters / 1000.0, 4),
            "share": _share(times[name], total),
            "precision_share": dict(sorted(shares.items(), key=lambda item: -item[1])),
            "low_precision_share": round(low, 4),
        }
        counted = (work or {}).get(name)
        if counted:
            row.update({key: counted[key] for key in ("flops", "parameter_elements", "activation_elements")})
        rows.append(row)
    return rows


def _collect(
    backend: Backend,
    forward: Callable[[Any], Any],
    inputs: Any,
    iters: int,
    device: torch.device,
    model: nn.Module | None,
    blocks: BlockMap,
    fallback: str,
) -> tuple[list[NodeTime], list[float], str, str]:
    source = backend.profile_source()
    if backend.runtime == "onnxruntime" and source is not None:
        return (*ort_nodes(source, inputs, iters), "onnxruntime session profiling")
    if backend.runtime == "openvino" and source is not None:
        return (*ov_nodes(source, inputs, iters), "openvino PERF_COUNT")
    return (*torch_nodes(forward, inputs, iters, device, model, blocks, fallback), "torch.profiler")


def profile_pass(
    backend: Backend,
    forward: Callable[[Any], Any],
    inputs: Any,
    iters: int,
    device: torch.device,
    model: nn.Module | None,
    blocks: BlockMap,
    work: dict[str, Any] | None,
    float_name: str | torch.dtype,
) -> dict[str, Any]:
    """The profile of `iters` forwards: operators, blocks, how much of the forward the operators account for."""
    nodes, walls, grouping, profiler = _collect(
        backend,
        forward,
        inputs,
        iters,
        device,
        model,
        blocks,
        float_name if isinstance(float_name, str) else dtype_name(float_name),
    )
    attributed_ms = sum(node.total_us for node in nodes) / iters / 1000.0
    wall_ms = sum(walls) / len(walls) if walls else None  # a mean, as the operators' times are
    ops = operators(nodes, iters)
    top = [row for row in ops if not row["name"].startswith("other (")]
    low = sum(node.total_us for node in nodes if node.precision in LOW_PRECISIONS)
    return {
        "profiler": profiler,
        "iters": iters,
        "forward_ms": round(wall_ms, 4) if wall_ms else None,  # mean wall of a profiled forward (profiler on)
        "attributed_ms": round(attributed_ms, 4),  # the operators' self time per forward
        "coverage": round(attributed_ms / wall_ms, 4) if wall_ms else None,  # the rest: Python and dispatch between ops
        "top_coverage": round(sum(row["self_ms"] for row in top) / wall_ms, 4) if wall_ms else None,
        "low_precision_share": _share(low, sum(node.total_us for node in nodes)),
        "grouping": grouping,
        "block_map": blocks.to_dict(),
        "operators": ops,
        "blocks": block_rows(nodes, iters, blocks, work, COMPILED_BLOCK if grouping == UNGROUPED else None),
    }


def profiler_active() -> bool:
    """Whether a torch profiler is recording in this thread (tests check it never is during the timed passes)."""
    return bool(torch.autograd._profiler_enabled())
