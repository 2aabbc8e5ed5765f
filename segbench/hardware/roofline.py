"""Roofline figures: how far a cell is from what the card could do.

Two yardsticks, both for the cell's precision:
- the target profile's published peak (`percent_of_peak`), when a profile names one;
- a ceiling measured once per run on the device itself (`measure_ceiling`): dense square GEMMs for
  each precision in the run plus a copy bandwidth. It works on CPUs and on cards with no profile.

FLOPs follow `segbench.models.flops` (2 per multiply-add), the convention of the peak figures.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from segbench.hardware.profiles import HardwareProfile
from segbench.measure.canary import reference_canary
from segbench.precision import get_precision, precision_names
from segbench.system.cpus import default_threads
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


def roofline(
    flops_per_image: float | None,
    images_per_second: float | None,
    kind: str,
    profile: HardwareProfile | None = None,
    ceiling: dict[str, Any] | None = None,
    no_profile_reason: str = "no hardware profile for this run",
) -> dict[str, Any]:
    """All roofline fields of one cell (`kind`: its precision's matmul class), None with a reason where a figure is
    missing.

    `profile` must be the card the cell ran on (never an emulated target): its peak is the yardstick.
    """
    out: dict[str, Any] = {
        "matmul_class": kind,
        "achieved_tflops": None,
        "peak_tflops": None,
        "peak_figure": None,
        "peak_card": profile.title if profile else None,
        "percent_of_peak": None,
        "percent_of_ceiling": None,
        "unavailable": {},
    }
    if not flops_per_image or not images_per_second:
        reason = "FLOPs per image unknown" if not flops_per_image else "no throughput (cell did not finish)"
        out["unavailable"] = dict.fromkeys(("achieved_tflops", "percent_of_peak", "percent_of_ceiling"), reason)
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
    return out


# ---- measuring the ceiling --------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """fp32 must measure true fp32 on Ampere+ (TF32 off); tf32 turns it on. Restores the previous setting."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _matmul_op(kind: str, side: int, device: torch.device) -> Callable[[], Any]:
    # Made on the device itself: filling 8192² matrices on the host would cost more than the measurement.
    if kind == "fp8":  # e4m3 x e4m3 with unit scales: the kernel torchao's float8 linear calls
        a = torch.randn(side, side, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(side, side, device=device).to(torch.float8_e4m3fn).t()
        scale = torch.ones((), device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16)
    if kind == "int8":
        a = torch.randint(-128, 128, (side, side), dtype=torch.int8, device=device)
        b = torch.randint(-128, 128, (side, side), dtype=torch.int8, device=device)
        return lambda: torch._int_mm(a, b)  # int8 x int8 -> int32: the kernel int8 inference relies on
    a = torch.randn(side, side, device=device, dtype=MATMUL_DTYPE[kind])
    b = torch.randn(side, side, device=device, dtype=MATMUL_DTYPE[kind])
    return lambda: torch.mm(a, b)


def _seconds_per_op(op: Callable[[], Any], device: torch.device) -> float:
    op()  # warm-up: library initialisation and kernel selection are not the rate
    _sync(device)
    started = time.perf_counter()
    op()
    _sync(device)
    return time.perf_counter() - started


def _matmul_rate(kind: str, device: torch.device, seconds: float, max_side: int) -> dict[str, Any]:
    """Grow the square size while one GEMM stays well inside the time budget, then time GEMMs at that size.

    Slow dtypes (bf16 or int8 on a CPU without the instructions) end at a small size instead of
    running for minutes; the size used is recorded next to the rate.
    """
    side = min(START_SIDE, max_side)
    op = _matmul_op(kind, side, device)
    per_op = _seconds_per_op(op, device)
    while side * 2 <= max_side and per_op * 8 <= seconds / 3:  # room for a few GEMMs at the next size
        side *= 2
        op = _matmul_op(kind, side, device)
        per_op = _seconds_per_op(op, device)
    iterations, started = 0, time.perf_counter()
    while True:
        op()
        iterations += 1
        _sync(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds or (iterations >= 2 and elapsed + elapsed / iterations > seconds * 1.5):
            break
    return {
        "gflops": 2.0 * side**3 * iterations / elapsed / 1e9,
        "unit": "GOP/s" if kind == "int8" else "GFLOP/s",
        "side": side,
        "dtype": str(MATMUL_DTYPE[kind]).removeprefix("torch."),
        "iterations": iterations,
        "seconds": elapsed,
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


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
        "note": "dense square GEMMs, 2 FLOPs per multiply-add; copy counts read + write",
    }
    for name, kind in classes.items():
        if kind is None:
            result["unavailable"][name] = f"no precision named '{name}' declares a matmul class"
    started = time.perf_counter()
    with _threads(threads), torch.inference_mode():
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
    with _threads(threads or default_threads()):
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
