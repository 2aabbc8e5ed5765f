"""Where a GPU cell's memory went: the CUDA context, the allocator's live and cached blocks, and what lies
outside the allocator (cuDNN/cuBLAS handles and workspaces, lazily loaded kernel images).

NVML's per-process figure is what the driver charges the process, so it is the one a card's capacity is
compared with; the allocator's figures are a subset of it. The rows here make the difference explicit.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from segbench.device import is_gpu
from segbench.results.labels import axes_label
from segbench.results.metrics import number
from segbench.results.runs import RunData

BREAKDOWN_NOTE = (
    "NVML's per-process peak is what the driver charges this process, and what a card's capacity must hold. "
    "It splits into: the baseline (CUDA context, created before the model, with the CUDA runtime's and "
    "cuDNN's kernel images as far as they are loaded then); the allocator's reserved peak, which is its "
    "live tensors (allocated peak: weights, activations, and cuDNN workspaces, which PyTorch routes through "
    "its allocator) plus blocks it cached for reuse but did not hand out at that moment; and the rest, "
    "outside the allocator: cuDNN and cuBLAS handles and their own workspaces, and kernel images loaded "
    "lazily on the first forward pass. The context differs between cards and drivers, so a baseline measured "
    "on one card is not another card's."
)


def _mb(record: dict[str, Any], key: str) -> float | None:
    return number((record.get("memory_mb") or {}).get(key))


def breakdown_row(record: dict[str, Any]) -> dict[str, Any] | None:
    """One cell's memory split into context, allocator (live + cached) and outside-allocator, in MiB."""
    process, baseline = _mb(record, "nvml_process_peak"), _mb(record, "baseline")
    allocated, reserved = _mb(record, "torch_allocated_peak"), _mb(record, "torch_reserved_peak")
    if None in (process, baseline, allocated, reserved):
        return None
    return {
        "model": record["model"],
        "cell": axes_label(record),
        "NVML process peak": process,
        "baseline (context)": baseline,
        "allocator reserved peak": reserved,
        "allocated peak": allocated,
        "cached, not in use": reserved - allocated,
        "outside the allocator": process - baseline - reserved,
        "weights": _mb(record, "weights"),
    }


def gpu_memory_breakdown(run: RunData) -> pd.DataFrame:
    """Rows for every ok CUDA cell with NVML and allocator figures; empty for CPU runs or without NVML."""
    rows = [
        row
        for record in run.ok
        if is_gpu(record.get("device"))
        for row in [breakdown_row(record)]
        if row
    ]
    return pd.DataFrame(rows)
