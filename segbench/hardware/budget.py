"""Memory-budget emulation: make a bigger GPU behave, memory-wise, like a smaller target card.

The target's usable allocator room is its memory minus its CUDA context (which lives outside
PyTorch's caching allocator on the target too). On the real card, `set_per_process_memory_fraction`
caps the caching allocator at `fraction x real total`, so a cell that would not fit the target hits
an out-of-memory error here as well and is recorded as `oom`.

What the cap cannot cover: memory allocated outside PyTorch's caching allocator (onnxruntime or
TensorRT arenas, cuDNN/cuBLAS handles, other processes). The note on every BudgetInfo says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from segbench.errors import SegbenchError
from segbench.hardware.profiles import HardwareProfile

MB = 1024 * 1024
CAP_SCOPE = (
    "caps PyTorch's caching allocator only; memory allocated outside it (onnxruntime/TensorRT arenas, "
    "cuDNN/cuBLAS workspaces outside the allocator) is not capped"
)


class BudgetError(SegbenchError):
    """The real card cannot emulate the target's budget (it is smaller)."""


@dataclass(frozen=True)
class BudgetInfo:
    """What a cell ran under. `fraction` and `emulated_on` are None when no cap was applied (see `note`)."""

    target: str
    budget_mb: float
    fraction: float | None
    emulated_on: str | None
    real_total_mb: float | None
    note: str

    @property
    def emulated(self) -> bool:
        return self.fraction is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def allocator_budget_mb(profile: HardwareProfile) -> float:
    """Room the target leaves PyTorch's allocator: the total its driver reports minus its (estimated) CUDA context.

    Not `memory_gb x 1024`: ECC and driver-reserved memory never reach CUDA (an H100 80GB reports 81079 MiB).
    """
    return profile.total_mb - profile.cuda_context_mb


def memory_fraction(profile: HardwareProfile, real_total_mb: float) -> float:
    """The `set_per_process_memory_fraction` value that caps the real card at the target's budget.

    Raises BudgetError when the real card has less memory than the budget: it cannot emulate a bigger
    card, and running uncapped there is already at least as strict as the target.
    """
    if real_total_mb <= 0:
        raise BudgetError(f"real device memory must be positive, got {real_total_mb:g} MiB")
    budget = allocator_budget_mb(profile)
    if budget > real_total_mb:
        raise BudgetError(
            f"cannot emulate {profile.title}: its budget of {budget:.0f} MiB ({profile.total_mb:.0f} MiB minus "
            f"{profile.cuda_context_mb:.0f} MiB CUDA context) exceeds this card's {real_total_mb:.0f} MiB; "
            "not emulated, the cell runs with this card's own (smaller) memory"
        )
    return budget / real_total_mb


def _cpu_info(profile: HardwareProfile) -> BudgetInfo:
    return BudgetInfo(profile.name, allocator_budget_mb(profile), None, None, None, "not emulated: CPU cell")


def apply_budget(device: torch.device, profile: HardwareProfile) -> BudgetInfo:
    """Cap this process's CUDA allocator at the target's budget; call after the CUDA context exists, before the model
    loads."""
    if device.type != "cuda":
        return _cpu_info(profile)
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    real_total_mb = props.total_memory / MB
    budget = allocator_budget_mb(profile)
    try:
        fraction = memory_fraction(profile, real_total_mb)
    except BudgetError as exc:
        return BudgetInfo(profile.name, budget, None, None, real_total_mb, str(exc))
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    note = (
        f"budget emulated on {props.name}: {budget:.0f} MiB of {real_total_mb:.0f} MiB (fraction {fraction:.4f}; "
        f"{profile.name}'s {profile.total_basis} minus {profile.cuda_context_mb:.0f} MiB context estimate); {CAP_SCOPE}"
    )
    return BudgetInfo(profile.name, budget, fraction, props.name, real_total_mb, note)
