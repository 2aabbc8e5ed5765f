"""Backends: one file per way of executing a model, discovered automatically."""

from __future__ import annotations

from segbench.backends.base import Backend
from segbench.errors import SegbenchError
from segbench.naming import discover_instances, unknown_name_message

_BACKENDS: dict[str, Backend] = {}


def _registry() -> dict[str, Backend]:
    if not _BACKENDS:
        _BACKENDS.update(discover_instances(__name__, __path__, Backend))
    return _BACKENDS


def backend_names() -> list[str]:
    return sorted(_registry())


def unknown_backend_message(name: str) -> str:
    return unknown_name_message("backend", name, backend_names())


def get_backend(name: str) -> Backend:
    if name not in _registry():
        raise SegbenchError(unknown_backend_message(name))
    return _registry()[name]


__all__ = ["Backend", "backend_names", "get_backend"]
