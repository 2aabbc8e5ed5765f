"""Precisions: one file per numeric format, discovered automatically; `get_precision(name)` maps a name to behaviour."""

from __future__ import annotations

import torch

from segbench.backends import backend_names, get_backend
from segbench.backends.base import Backend
from segbench.errors import SegbenchError
from segbench.naming import discover_instances, unknown_name_message
from segbench.precision.base import Precision

_PRECISIONS: dict[str, Precision] = {}


def _registry() -> dict[str, Precision]:
    if not _PRECISIONS:
        _PRECISIONS.update(discover_instances(__name__, __path__, Precision))
    return _PRECISIONS


def precision_names() -> list[str]:
    return sorted(_registry())


def unknown_precision_message(name: str) -> str:
    return unknown_name_message("precision", name, precision_names())


def get_precision(name: str) -> Precision:
    if name not in _registry():
        raise SegbenchError(unknown_precision_message(name))
    return _registry()[name]


def pair_reason(precision: Precision, backend: Backend, device: torch.device) -> str | None:
    """Why this precision cannot run on this backend (on this device), known before any model is built; None when
    the pair can run. The device's own support for each is `unsupported_reason`."""
    if backend.runtime not in precision.runs_on:
        if backend.runtime == "pipeline":
            return f"{backend.name} applies its library's own precision handling: it runs precision fp32 only"
        where = [name for name in backend_names() if get_backend(name).runtime in precision.runs_on]
        return f"{precision.name} runs only on backend {', '.join(where)}"
    return backend.precision_reason(precision.input_dtype, device)


def cell_reason(precision_name: str, backend_name: str, device: torch.device) -> str | None:
    """All that is known before building about why a cell cannot run: the device, for each of the two; the pair."""
    precision, backend = get_precision(precision_name), get_backend(backend_name)
    return (
        precision.unsupported_reason(device)
        or backend.unsupported_reason(device)
        or pair_reason(precision, backend, device)
    )


__all__ = ["Precision", "cell_reason", "get_precision", "pair_reason", "precision_names"]
