"""Memory-budget emulation: make a bigger GPU behave, memory-wise, like a smaller target card.

The card's *total* is emulated, not an allocator cap: at cell start, after the CUDA context exists and before the
model loads, a raw device allocation (cuMemAlloc on the driver API, outside PyTorch's caching allocator) occupies the
real card's free memory down to what the target would have free with this cell's context on it:

    target free = target total - context measured in this cell
    occupied    = real free - target free

so every allocator in the process (PyTorch's, cuDNN's workspace heuristics that read the free memory, ONNX Runtime's
and TensorRT's arenas) sees the target's free memory, and a cell that would not fit the target fails with an
out-of-memory error here as well (`oom`). (It used to cap only PyTorch's allocator with
`set_per_process_memory_fraction`, against a context estimate 170-240 MiB below the 622-690 MiB measured on an H200.)
What it cannot cover: the real card's context may differ from the target's (the measured one is used), and other
processes on the real card are part of the real free memory (run on an idle card).
"""

from __future__ import annotations

import ctypes
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from segbench.errors import SegbenchError
from segbench.hardware.profiles import HardwareProfile

MB = 1024 * 1024
METHOD = "occupy: a raw cuMemAlloc outside every allocator holds the real card's free memory down to the target's"


class BudgetError(SegbenchError):
    """The real card cannot emulate the target's budget (it has less free memory than the target would)."""


@dataclass(frozen=True)
class BudgetInfo:
    """What a cell ran under. `occupied_mb` and `emulated_on` are None when nothing was emulated (see `note`).

    `budget_mb` is the target's total (what its driver reports, comparable with NVML's per-process peak). `fraction`
    is always None now: kept so older readers see no allocator cap.
    """

    target: str
    budget_mb: float
    emulated_on: str | None
    real_total_mb: float | None
    note: str
    real_free_mb: float | None = None
    context_mb: float | None = None
    context_source: str | None = None
    target_free_mb: float | None = None
    occupied_mb: float | None = None
    method: str | None = None
    fraction: float | None = None

    @property
    def emulated(self) -> bool:
        return self.occupied_mb is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RawDevice(Protocol):
    """The two device calls emulation makes; tests drive the arithmetic with a fake."""

    def name(self, index: int) -> str: ...
    def mem_get_info(self, index: int) -> tuple[int, int]: ...  # (free, total) bytes, as cudaMemGetInfo
    def occupy(self, nbytes: int) -> None: ...  # allocate outside every allocator, kept for the process's life


class DriverApi:
    """RawDevice on torch.cuda and the CUDA driver API (libcuda.so.1, present wherever a CUDA driver is)."""

    def __init__(self) -> None:
        self._held: list[ctypes.c_uint64] = []  # the device pointers, alive until the cell's process ends

    def name(self, index: int) -> str:
        return torch.cuda.get_device_properties(index).name

    def mem_get_info(self, index: int) -> tuple[int, int]:
        return torch.cuda.mem_get_info(index)

    def occupy(self, nbytes: int) -> None:
        libcuda = ctypes.CDLL("libcuda.so.1")
        pointer = ctypes.c_uint64()
        # The current context is the primary one torch made current (the cell created it before the budget).
        result = libcuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(nbytes))
        if result != 0:
            raise BudgetError(f"cuMemAlloc of {nbytes / MB:.0f} MiB to emulate the budget failed (CUresult {result})")
        self._held.append(pointer)


_DRIVER = DriverApi()


def allocator_budget_mb(profile: HardwareProfile) -> float:
    """Room the target leaves PyTorch's allocator: the total its driver reports minus its (estimated) CUDA context.

    Not `memory_gb x 1024`: ECC and driver-reserved memory never reach CUDA (an H100 80GB reports 81079 MiB). Used
    by `fit` to say what it searches within; a cell emulates the total with its measured context instead.
    """
    return profile.total_mb - profile.cuda_context_mb


def occupy_mb(real_free_mb: float, target_total_mb: float, context_mb: float) -> float:
    """How much of the real card's free memory to hold so that what is left is the target's free memory.

    Raises BudgetError when the real card has less free memory than the target would: it cannot emulate a bigger
    card, and running as it is is already at least as strict as the target.
    """
    if target_total_mb <= 0 or context_mb < 0:
        raise BudgetError(
            f"target total must be positive and context non-negative, got {target_total_mb:g} and {context_mb:g} MiB"
        )
    target_free = target_total_mb - context_mb
    if target_free > real_free_mb:
        raise BudgetError(
            f"this card has {real_free_mb:.0f} MiB free, less than the {target_free:.0f} MiB the target would have "
            f"({target_total_mb:.0f} MiB total minus this cell's {context_mb:.0f} MiB context); not emulated, the "
            "cell runs with this card's own (smaller) memory"
        )
    return real_free_mb - target_free


def _cpu_info(profile: HardwareProfile) -> BudgetInfo:
    return BudgetInfo(profile.name, profile.total_mb, None, None, "not emulated: CPU cell")


def apply_budget(
    device: torch.device, profile: HardwareProfile, context_mb: float | None = None, api: RawDevice | None = None
) -> BudgetInfo:
    """Occupy the real card down to the target's free memory; call after the CUDA context exists, before the model
    loads. `context_mb` is the context measured in this cell (NVML's figure for this process); without it, the
    profile's estimate."""
    if device.type != "cuda":
        return _cpu_info(profile)
    api = api or _DRIVER
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = api.mem_get_info(index)
    real_free_mb, real_total_mb = free / MB, total / MB
    if context_mb is None:
        context_mb, context_source = profile.cuda_context_mb, f"{profile.name}'s context estimate (NVML unavailable)"
    else:
        context_source = "measured in this cell (NVML, this process after CUDA context creation)"
    common = dict(real_free_mb=real_free_mb, context_mb=context_mb, context_source=context_source, method=METHOD)
    try:
        occupied = occupy_mb(real_free_mb, profile.total_mb, context_mb)
    except BudgetError as exc:
        return BudgetInfo(profile.name, profile.total_mb, None, real_total_mb, str(exc), **common)
    api.occupy(int(occupied * MB))
    name = api.name(index)
    note = (
        f"{profile.title}'s memory emulated on {name}: {occupied:.0f} MiB occupied outside every allocator, leaving "
        f"{profile.total_mb - context_mb:.0f} MiB free ({profile.name}'s {profile.total_basis} minus this cell's "
        f"{context_mb:.0f} MiB context, {context_source})"
    )
    return BudgetInfo(
        profile.name, profile.total_mb, name, real_total_mb, note,
        target_free_mb=profile.total_mb - context_mb, occupied_mb=occupied, **common,
    )  # fmt: skip


def over_budget(budget: dict[str, Any] | None, process_peak_mb: float | None) -> str | None:
    """Why an ok cell exceeded its emulated card (its NVML process peak above the target's total), or None."""
    if not budget or budget.get("occupied_mb") is None or process_peak_mb is None:
        return None
    total = float(budget["budget_mb"])
    if process_peak_mb <= total:
        return None
    return (
        f"NVML process peak {process_peak_mb:.0f} MiB exceeds {budget['target']}'s {total:.0f} MiB total: it would "
        "not fit the target card although it ran here"
    )
