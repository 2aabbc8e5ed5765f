"""Precisions: one file per numeric format, discovered automatically; `get_precision(name)` maps a name to behaviour."""

from __future__ import annotations

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


__all__ = ["Precision", "get_precision", "precision_names"]
