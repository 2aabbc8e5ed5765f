"""Roofline figures: how far a cell is from what the card could do.

Two yardsticks, both for the cell's precision:
- the target profile's published peak (`percent_of_peak`), when a profile names one;
- a ceiling measured once per run on the device itself (`measure_ceiling`): for each precision class in the run the
  best of the kernels the stack offers (BLAS GEMMs, oneDNN/cuDNN convolutions, int8 GEMMs and quantized
  convolutions) at several sizes, plus a copy bandwidth. It works on CPUs and on cards with no profile.
  A cell above it is shown with `above_ceiling` (the ceiling was not the maximum), never clipped;
- the memory roof: bytes moved per image (`segbench.models.flops.count_bytes`) over the copy bandwidth gives the
  arithmetic intensity and the attainable rate min(ceiling, bandwidth x intensity) (`percent_of_attainable`), so a
  depthwise-heavy net is judged against memory, not against the GEMM it cannot use.

FLOPs follow `segbench.models.flops` (2 per multiply-add), the convention of the peak figures.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.ao.nn.quantized as quantized

from segbench.hardware.profiles import HardwareProfile
from segbench.measure.canary import reference_canary
from segbench.precision import get_precision, precision_names
from segbench.system.cpus import default_threads, torch_threads
from segbench.system.env import cpu_model
from segbench.system.process import die_with_parent

# Which profile figure bounds each matmul class (a precision declares its class: `Precision.matmul_class`).
PEAK_FIGURE = {
    "fp32": "fp32_tflops",
    "tf32": "tf32_tensor_tflops",
    "fp16": "fp16_tensor_tflops",
    "bf16": "bf16_tensor_tflops",
    "int8": "int8_tensor_tops",
}
MATMUL_DTYPE = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "int8": torch.int8,
    "fp8": torch.float8_e4m3fn,
}
# Bytes per element a class's kernels read and write: the scale from a forward's element counts
# (segbench.models.flops.Work) to its bytes moved.
ELEMENT_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "int8": 1, "fp8": 1}
FP8_CAPABILITY = (8, 9)
MAX_SIDE = {"cpu": 2048, "cuda": 8192}
COPY_MB = {"cpu": 128, "cuda": 512}
START_SIDE = 256


def matmul_classes(precisions: list[str]) -> dict[str, str | None]:
    """Each precision name's declared matmul class; None for a name no precision registers."""
    known = set(precision_names())
    return {name: get_precision(name).matmul_class if name in known else None for name in precisions}


# ---- against the profile's published peak ---------------------------------------------------------


def achieved_tflops(flops_per_image: float, images_per_second: float) -> float:
    return flops_per_image * images_per_second / 1e12


def peak_tflops(profile: HardwareProfile, kind: str) -> tuple[float | None, str]:
    """(peak, figure name) for a matmul class, or (None, reason) when the profile has no such figure."""
    figure = PEAK_FIGURE.get(kind)
    if figure is None:
        return None, f"card profiles carry no peak figure for {kind} matmuls"
    value = getattr(profile, figure)
    if value is None:
        why = profile.source_of(figure) or "unknown"
        return None, f"{profile.title} has no {figure} ({why})"
    return value, figure


def percent_of_peak(achieved: float, profile: HardwareProfile, kind: str) -> tuple[float | None, str | None]:
    """(percent, None) or (None, reason)."""
    peak, figure_or_reason = peak_tflops(profile, kind)
    if peak is None:
        return None, figure_or_reason
    return 100.0 * achieved / peak, None


# ---- against the ceiling measured on this device ---------------------------------------------------


def percent_of_ceiling(achieved: float, ceiling: dict[str, Any] | None, kind: str) -> tuple[float | None, str | None]:
    """(percent of the measured matmul rate for the matmul class, None) or (None, reason)."""
    if not ceiling:
        return None, "no measured ceiling in this run"
    entry = (ceiling.get("matmul") or {}).get(kind)
    if not entry or not entry.get("gflops"):
        reason = (ceiling.get("unavailable") or {}).get(kind)
        return None, reason or f"no measured matmul ceiling for {kind} matmuls"
    return 100.0 * achieved * 1000.0 / entry["gflops"], None


def bytes_per_image(traffic: dict[str, Any] | None, kind: str) -> float | None:
    """Bytes one image moves (parameters + input + activations) at the class's element size, from a record's
    `traffic` element counts; None when they were not counted or the class is unknown."""
    if not traffic or kind not in ELEMENT_BYTES:
        return None
    elements = sum(traffic.get(key) or 0 for key in ("parameter_elements", "input_elements", "activation_elements"))
    return float(elements * ELEMENT_BYTES[kind]) or None


def _ceiling_rate_gflops(ceiling: dict[str, Any] | None, kind: str) -> float | None:
    return ((ceiling or {}).get("matmul") or {}).get(kind, {}).get("gflops") or None


def _copy_gbs(ceiling: dict[str, Any] | None) -> float | None:
    return ((ceiling or {}).get("copy") or {}).get("device_copy_gbs") or None


def memory_roof(
    achieved: float, flops_per_image: float, bytes_per_image: float | None, ceiling: dict[str, Any] | None, kind: str
) -> dict[str, Any]:
    """The roofline's memory side: arithmetic intensity (FLOPs per byte moved), the attainable rate
    min(compute ceiling, copy bandwidth x intensity) and the achieved share of it, with which roof binds.

    Fields are None with a reason under `unavailable` when bytes per image, the bandwidth or the compute ceiling
    are missing.
    """
    out: dict[str, Any] = dict.fromkeys(
        ("arithmetic_intensity", "attainable_tflops", "percent_of_attainable", "bound", "above_roof")
    )
    out["unavailable"] = {}
    rate, bandwidth = _ceiling_rate_gflops(ceiling, kind), _copy_gbs(ceiling)
    missing = (
        "bytes moved per image unknown"
        if not bytes_per_image
        else "no measured copy bandwidth in this run"
        if not bandwidth
        else f"no measured {kind} compute ceiling"
        if not rate
        else None
    )
    if missing:
        out["unavailable"] = dict.fromkeys(("arithmetic_intensity", "percent_of_attainable"), missing)
        if bytes_per_image:
            out["arithmetic_intensity"] = flops_per_image / bytes_per_image
            del out["unavailable"]["arithmetic_intensity"]
        return out
    intensity = flops_per_image / bytes_per_image
    memory_bound_tflops = bandwidth * intensity / 1000.0  # GB/s x FLOP/byte = GFLOP/s
    attainable = min(rate / 1000.0, memory_bound_tflops)
    percent = 100.0 * achieved / attainable
    out.update(
        arithmetic_intensity=intensity,
        attainable_tflops=attainable,
        percent_of_attainable=percent,
        bound="memory" if memory_bound_tflops < rate / 1000.0 else "compute",
        above_roof=percent > 100.0,
    )
    return out


def roofline(
    flops_per_image: float | None,
    images_per_second: float | None,
    kind: str,
    profile: HardwareProfile | None = None,
    ceiling: dict[str, Any] | None = None,
    no_profile_reason: str = "no hardware profile for this run",
    bytes_per_image: float | None = None,
) -> dict[str, Any]:
    """All roofline fields of one cell (`kind`: its precision's matmul class), None with a reason where a figure is
    missing.

    `profile` must be the card the cell ran on (never an emulated target): its peak is the yardstick.
    `bytes_per_image` (weights + activations at the class's element size) gives the memory roof. A share above
    100 % is kept and flagged (`above_ceiling`, `above_roof`): the yardstick, not the cell, was wrong.
    """
    out: dict[str, Any] = {
        "matmul_class": kind,
        "achieved_tflops": None,
        "peak_tflops": None,
        "peak_figure": None,
        "peak_card": profile.title if profile else None,
        "percent_of_peak": None,
        "percent_of_ceiling": None,
        "above_ceiling": None,
        "ceiling_kernel": ((ceiling or {}).get("matmul") or {}).get(kind, {}).get("kernel"),
        "bytes_per_image": bytes_per_image,
        "arithmetic_intensity": None,
        "attainable_tflops": None,
        "percent_of_attainable": None,
        "bound": None,
        "above_roof": None,
        "unavailable": {},
    }
    if not flops_per_image or not images_per_second:
        reason = "FLOPs per image unknown" if not flops_per_image else "no throughput (cell did not finish)"
        out["unavailable"] = dict.fromkeys(
            ("achieved_tflops", "percent_of_peak", "percent_of_ceiling", "percent_of_attainable"), reason
        )
        return out
    achieved = achieved_tflops(flops_per_image, images_per_second)
    out["achieved_tflops"] = achieved
    if profile is None:
        out["unavailable"]["percent_of_peak"] = no_profile_reason
    else:
        peak, figure_or_reason = peak_tflops(profile, kind)
        if peak is None:
            out["unavailable"]["percent_of_peak"] = figure_or_reason
        else:
            out.update(peak_tflops=peak, peak_figure=figure_or_reason, percent_of_peak=100.0 * achieved / peak)
    out["percent_of_ceiling"], reason = percent_of_ceiling(achieved, ceiling, kind)
    if reason:
        out["unavailable"]["percent_of_ceiling"] = reason
    else:
        out["above_ceiling"] = out["percent_of_ceiling"] > 100.0
    roof = memory_roof(achieved, flops_per_image, bytes_per_image, ceiling, kind)
    out["unavailable"].update(roof.pop("unavailable"))
    out.update(roof)
    return out


# ---- measuring the ceiling --------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """fp32 must measure true fp32 on Ampere+ (TF32 off, in cuBLAS and cuDNN); tf32 turns it on. Restores both."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _operands(kind: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    # Made on the device itself: filling 8192² matrices on the host would cost more than the measurement.
    if kind == "int8":
        return torch.randint(-128, 128, shape, dtype=torch.int8, device=device)
    if kind == "fp8":
        return torch.randn(shape, device=device).to(torch.float8_e4m3fn)
    return torch.randn(shape, device=device, dtype=MATMUL_DTYPE[kind])


def _blas_mm(kind: str, side: int, device: torch.device) -> tuple[Callable[[], Any], float]:
    """A dense square GEMM through torch.mm (MKL/OpenBLAS on a CPU, cuBLAS on a GPU); int8 through torch._int_mm
    (int8 x int8 -> int32) and fp8 through torch._scaled_mm (e4m3 with unit scales: what torchao's float8 linear
    calls)."""
    a, b = _operands(kind, (side, side), device), _operands(kind, (side, side), device)
    if kind == "fp8":
        scale = torch.ones((), device=device)
        b = b.t()
        return lambda: torch._scaled_mm(a, b, scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16), 2.0 * side**3
    if kind == "int8":
        return lambda: torch._int_mm(a, b), 2.0 * side**3
    return lambda: torch.mm(a, b), 2.0 * side**3


CONV_SPATIAL = 32  # a 32 x 32 feature map: the size of a segmentation backbone's middle stages at 512-1024 px


def _conv(kernel_size: int) -> Callable[[str, int, torch.device], tuple[Callable[[], Any], float]]:
    """A channels_last convolution (oneDNN on a CPU, cuDNN on a GPU): the kernels the models' own layers run, which on
    some CPUs beat the BLAS GEMM by 2x. `side` is the channel count of the 1 x 1 convolution (side x side x side
    multiply-adds, as the GEMM) and four times that of the 3 x 3 one."""

    def build(kind: str, side: int, device: torch.device) -> tuple[Callable[[], Any], float]:
        channels = side if kernel_size == 1 else max(side // 4, 8)
        spatial = (max(side // 16, 1), 16) if kernel_size == 1 else (CONV_SPATIAL, CONV_SPATIAL)
        layout = torch.channels_last
        x = _operands(kind, (1, channels, *spatial), device).contiguous(memory_format=layout)
        w = _operands(kind, (channels, channels, kernel_size, kernel_size), device).contiguous(memory_format=layout)
        padding = kernel_size // 2
        flops = 2.0 * channels * channels * kernel_size**2 * spatial[0] * spatial[1]
        return lambda: torch.nn.functional.conv2d(x, w, padding=padding), flops

    return build


def _quantized_conv(kind: str, side: int, device: torch.device) -> tuple[Callable[[], Any], float]:
    """A quantized 1 x 1 convolution (quint8 activations, qint8 weights) on the x86 engine (oneDNN + fbgemm): the
    kernel eager int8 models (precision `int8`) run on a CPU."""
    with warnings.catch_warnings():  # torch's quantized tensors are deprecated; the kernels are what int8 runs
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
        conv = quantized.Conv2d(side, side, 1)
        x = torch.quantize_per_tensor(torch.randn(1, side, max(side // 16, 1), 16), 0.05, 128, torch.quint8)
        x = x.contiguous(memory_format=torch.channels_last)
    return lambda: conv(x), 2.0 * side * side * side


# The kernels each class's ceiling tries, by name (recorded with the winner): the best of them is the ceiling.
KERNELS: dict[str, Callable[[str, int, torch.device], tuple[Callable[[], Any], float]]] = {
    "mm (BLAS)": _blas_mm,
    "conv2d 1x1 (oneDNN/cuDNN)": _conv(1),
    "conv2d 3x3 (oneDNN/cuDNN)": _conv(3),
    "quantized conv2d 1x1 (x86)": _quantized_conv,
}


def _kernels_for(kind: str, device: torch.device) -> list[str]:
    if kind == "int8":
        return ["mm (BLAS)"] + (["quantized conv2d 1x1 (x86)"] if device.type == "cpu" else [])
    if kind == "fp8":
        return ["mm (BLAS)"]
    return ["mm (BLAS)", "conv2d 1x1 (oneDNN/cuDNN)", "conv2d 3x3 (oneDNN/cuDNN)"]


def _seconds_per_op(op: Callable[[], Any], device: torch.device) -> float:
    op()  # warm-up: library initialisation and kernel selection are not the rate
    _sync(device)
    started = time.perf_counter()
    op()
    _sync(device)
    return time.perf_counter() - started


def _best_seconds(op: Callable[[], Any], device: torch.device, seconds: float) -> tuple[float, int]:
    """(fastest single call, calls made) over `seconds`: a ceiling is the best the kernel does, not its average."""
    best, iterations, started = float("inf"), 0, time.perf_counter()
    while True:
        call_started = time.perf_counter()
        op()
        _sync(device)
        now = time.perf_counter()
        best, iterations = min(best, now - call_started), iterations + 1
        if now - started >= seconds and iterations >= 2:
            return best, iterations


def _kernel_rates(kind: str, kernel: str, device: torch.device, seconds: float, max_side: int) -> list[dict[str, Any]]:
    """The kernel's rate at each size from START_SIDE doubling while a call stays well inside the time budget.

    Slow dtypes (bf16 or int8 on a CPU without the instructions) end at a small size instead of running for minutes.
    """
    rows, side = [], min(START_SIDE, max_side)
    sizes = max(1, (max_side // side).bit_length())  # how many doublings fit: each size gets its share of the time
    while True:
        op, flops = KERNELS[kernel](kind, side, device)
        per_op = _seconds_per_op(op, device)
        best, iterations = _best_seconds(op, device, seconds / sizes)
        rows.append({"kernel": kernel, "side": side, "gflops": flops / best / 1e9, "iterations": iterations})
        if side * 2 > max_side or per_op * 8 > seconds / 3:  # the next size's few calls would overrun the budget
            return rows
        side *= 2


def _matmul_rate(kind: str, device: torch.device, seconds: float, max_side: int) -> dict[str, Any]:
    """The best rate of every kernel the stack offers for the class, at several sizes; the winner is the ceiling.

    Each candidate's rate is recorded (`candidates`), the winner's kernel and size beside the rate: the fp32 GEMM
    through BLAS read 196-220 GFLOP/s on a Zen 5 whose oneDNN convolutions ran a model at 365, so a single-kernel
    ceiling is not one.
    """
    kernels = _kernels_for(kind, device)
    started, rows, failed = time.perf_counter(), [], {}
    engine = torch.backends.quantized.engine  # the quantized conv picks its engine; the caller's is restored
    try:
        for kernel in kernels:
            try:
                rows += _kernel_rates(kind, kernel, device, seconds / len(kernels), max_side)
            except Exception as exc:  # a kernel the device lacks is a finding; the others still measure
                failed[kernel] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    finally:
        torch.backends.quantized.engine = engine
    if not rows:
        raise RuntimeError("; ".join(f"{kernel}: {why}" for kernel, why in failed.items()))
    best = max(rows, key=lambda row: row["gflops"])
    return {
        "gflops": best["gflops"],
        "unit": "GOP/s" if kind == "int8" else "GFLOP/s",
        "kernel": best["kernel"],
        "side": best["side"],
        "dtype": str(MATMUL_DTYPE[kind]).removeprefix("torch."),
        "iterations": best["iterations"],
        "seconds": time.perf_counter() - started,
        "candidates": [{**row, "gflops": round(row["gflops"], 2)} for row in rows],
        "failed": failed,
    }


def _copy_seconds(copy: Callable[[], Any], device: torch.device, seconds: float) -> float:
    copy()
    _sync(device)
    iterations, started = 0, time.perf_counter()
    while True:
        copy()
        iterations += 1
        _sync(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed / iterations


def _copy_rates(device: torch.device, seconds: float, copy_mb: int) -> dict[str, Any]:
    """Device-to-device copy (read + write counted, as STREAM copy and CUDA's bandwidthTest do) and pinned
    host-to-device."""
    count = copy_mb * 1024 * 1024 // 4
    nbytes = count * 4
    src, dst = torch.empty(count, device=device), torch.empty(count, device=device)
    src.fill_(1.0)
    rates: dict[str, Any] = {"bytes": nbytes, "host_to_device_gbs": None}
    share = seconds / 2 if device.type == "cuda" else seconds
    rates["device_copy_gbs"] = 2 * nbytes / _copy_seconds(lambda: dst.copy_(src), device, share) / 1e9
    if device.type == "cuda":
        host = torch.empty(count).pin_memory()
        rates["host_to_device_gbs"] = (
            nbytes / _copy_seconds(lambda: dst.copy_(host, non_blocking=True), device, share) / 1e9
        )
    return rates


def _kind_unavailable(kind: str, device: torch.device) -> str | None:
    if kind == "tf32" and device.type != "cuda":
        return "TF32 is a CUDA tensor-core mode; a CPU has no TF32 matmul"
    if kind == "fp8" and device.type != "cuda":
        return "fp8 matmuls (torch._scaled_mm) need a CUDA GPU with compute capability >= 8.9"
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if kind in ("tf32", "bf16") and capability < (8, 0):
            return f"{kind} needs compute capability >= 8.0"
        if kind == "fp8" and capability < FP8_CAPABILITY:
            return "fp8 needs compute capability >= 8.9"
    return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)

    return cpu_model()


def measure_ceiling(
    device: torch.device | str,
    precisions: list[str],
    seconds: float = 4.0,
    threads: int | None = None,
    max_side: int | None = None,
    copy_mb: int | None = None,
) -> dict[str, Any]:
    """The device's achievable dense matmul rate per precision class in the run, and its copy bandwidth.

    `seconds` is the total budget, shared between the precision classes and the copy test. On CUDA run
    it in a child (see `measure_ceiling_isolated`): a CUDA context in the runner's process would hold
    GPU memory for the whole run.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    max_side = max_side or MAX_SIDE.get(device.type, MAX_SIDE["cpu"])
    classes = matmul_classes(precisions)
    kinds = sorted({kind for kind in classes.values() if kind is not None})
    share = seconds / (len(kinds) + 1)
    result: dict[str, Any] = {
        "device": str(device),
        "device_name": _device_name(device),
        "threads": torch.get_num_threads(),
        "precisions": classes,
        "matmul": {},
        "copy": None,
        "unavailable": {},
        "note": (
            "the best of BLAS GEMMs and oneDNN/cuDNN convolutions (int8: torch._int_mm and quantized convolutions) at "
            "several sizes, 2 FLOPs per multiply-add; copy counts read + write"
        ),
    }
    for name, kind in classes.items():
        if kind is None:
            result["unavailable"][name] = f"no precision named '{name}' declares a matmul class"
    started = time.perf_counter()
    with torch_threads(threads), torch.inference_mode():
        result["threads"] = torch.get_num_threads()
        for kind in kinds:
            reason = _kind_unavailable(kind, device)
            if reason:
                result["unavailable"][kind] = reason
                continue
            try:
                with _tf32(kind == "tf32"):
                    result["matmul"][kind] = _matmul_rate(kind, device, share, max_side)
            except Exception as exc:  # a dtype the device's kernels lack is a finding, not a crash
                result["unavailable"][kind] = (
                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                )
        try:
            result["copy"] = _copy_rates(device, share, copy_mb or COPY_MB.get(device.type, COPY_MB["cpu"]))
        except Exception as exc:
            result["unavailable"]["copy"] = f"{type(exc).__name__}: {exc}"
    # What each cell's canary is compared with (segbench.measure.canary), on the threads a cell with none set uses.
    with torch_threads(threads or default_threads()):
        result["canary"] = reference_canary()
    result["seconds"] = time.perf_counter() - started
    return result


# The parent decides what a stop means: Ctrl-C reaches the whole terminal's process group, and a child that raised
# KeyboardInterrupt itself would print its own traceback while the parent was already stopping the run.
CHILD_IGNORES = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _ceiling_child(arguments: dict[str, Any], connection: Any) -> None:
    for number in CHILD_IGNORES:
        signal.signal(number, signal.SIG_IGN)
    die_with_parent()
    try:
        connection.send(measure_ceiling(**arguments))
    except BaseException as exc:  # noqa: BLE001 (the parent records the failure and the run goes on)
        connection.send({"error": f"{type(exc).__name__}: {exc}"})
    connection.close()


def measure_ceiling_isolated(
    device: str,
    precisions: list[str],
    seconds: float = 4.0,
    threads: int | None = None,
    timeout_s: float = 120.0,
    **sizes: Any,
) -> dict[str, Any]:
    """measure_ceiling in a spawned child, so the caller never creates a CUDA context; {'error': ...} on failure."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    arguments = {"device": device, "precisions": list(precisions), "seconds": seconds, "threads": threads, **sizes}
    process = context.Process(target=_ceiling_child, args=(arguments, sender), name="segbench-ceiling")
    # Blocked while it starts, the child inherits them blocked (through exec too): its seconds of imports never see
    # a Ctrl-C meant for the run; here a signal that came meanwhile is delivered as soon as they are unblocked.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_IGNORES)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            process.kill()
            return {"error": f"ceiling measurement did not finish within {timeout_s:g} s; killed"}
        try:
            return receiver.recv()
        except EOFError:
            return {"error": f"ceiling process exited with code {process.exitcode} before reporting"}
    except BaseException:  # a stop (KeyboardInterrupt) or any error here: the child ends now, not in 30 s
        process.kill()
        raise
    finally:
        receiver.close()
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
