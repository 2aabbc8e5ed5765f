"""What bounds each block of a profile: compute, memory, or overhead, against the run's measured ceilings.

A block's FLOPs and elements moved (counted on the float model at batch 1, `segbench.models.blocks`) over its self
time in the profile give its achieved rate and arithmetic intensity. The attainable rate at that intensity is
min(the matmul ceiling, copy bandwidth x intensity), as the cell's roofline (`roofline.memory_roof`): the lower roof
names the bound. A block reaching under OVERHEAD_PERCENT of it is bound by neither: its time goes to dispatch, launches,
layout reorders and small kernels (what Nsight-style tools call launch- or latency-bound).
"""

from __future__ import annotations

from typing import Any

from segbench.hardware.roofline import ELEMENT_BYTES

OVERHEAD_PERCENT = 10.0


def _ceiling_gflops(ceiling: dict[str, Any] | None, kind: str) -> float | None:
    return ((ceiling or {}).get("matmul") or {}).get(kind, {}).get("gflops") or None


def _bandwidth_gbs(ceiling: dict[str, Any] | None) -> float | None:
    return ((ceiling or {}).get("copy") or {}).get("device_copy_gbs") or None


def block_bound(
    block: dict[str, Any], batch_size: int, ceiling: dict[str, Any] | None, kind: str
) -> dict[str, Any]:
    """The block's bound fields: achieved GFLOP/s, bytes, intensity, attainable, percent, bound (or why not)."""
    flops, self_ms = block.get("flops"), block.get("self_ms")
    if not flops or not self_ms:
        return {"bound": None, "bound_unavailable": "no FLOPs counted for this block" if not flops else "no time"}
    elements = (block.get("parameter_elements") or 0) + (block.get("activation_elements") or 0) * batch_size
    moved = elements * ELEMENT_BYTES.get(kind, 4)
    achieved = flops * batch_size / (self_ms / 1000.0) / 1e9
    out: dict[str, Any] = {
        "achieved_gflops": round(achieved, 3),
        "bytes": moved,
        "arithmetic_intensity": round(flops * batch_size / moved, 3) if moved else None,
    }
    rate, bandwidth = _ceiling_gflops(ceiling, kind), _bandwidth_gbs(ceiling)
    if not rate or not bandwidth or not out["arithmetic_intensity"]:
        missing = "no measured ceiling in this run" if not rate or not bandwidth else "no bytes counted"
        return {**out, "bound": None, "bound_unavailable": missing}
    memory_roof = bandwidth * out["arithmetic_intensity"]
    attainable = min(rate, memory_roof)
    percent = 100.0 * achieved / attainable
    bound = "overhead" if percent < OVERHEAD_PERCENT else "memory" if memory_roof < rate else "compute"
    out.update(attainable_gflops=round(attainable, 3), percent_of_attainable=round(percent, 2), bound=bound)
    return out


def profile_bounds(
    profile: dict[str, Any] | None, batch_size: int, ceiling: dict[str, Any] | None, kind: str
) -> dict[str, Any] | None:
    """The profile with each block's bound added (the runner calls it with the run's ceiling)."""
    if not profile or not profile.get("blocks"):
        return profile
    blocks = [{**block, **block_bound(block, batch_size, ceiling, kind)} for block in profile["blocks"]]
    return {**profile, "blocks": blocks, "matmul_class": kind}
