"""Matrix axes shared by the suite schema, the matrix and expectations: resolutions and include/exclude rules.

Kept apart from `schema.py` so that modules the schema imports (expectations, targets) can match cells
without importing the schema back.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

MAX_SIDE = 16384


class Rule(BaseModel):
    """Matches cells on any subset of axes; a list means any of its values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | list[str] | None = None
    resolution: Any = None
    batch_size: int | list[int] | None = None
    precision: str | list[str] | None = None
    backend: str | list[str] | None = None


class HasAxes(Protocol):
    model: str
    resolution: tuple[int, int]
    batch_size: int
    precision: str
    backend: str


def parse_resolution(value: Any) -> tuple[int, int]:
    """An int means a square; [height, width] otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"resolution must be an int or [height, width], got {value!r}")
    if isinstance(value, int):
        height = width = value
    elif (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        height, width = value
    else:
        raise ValueError(f"resolution must be an int (square) or [height, width], got {value!r}")
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ValueError(f"impossible resolution {value!r}: each side must be between 1 and {MAX_SIDE} px")
    return height, width


def rule_resolutions(value: Any) -> list[tuple[int, int]]:
    """A rule's resolution: 512, [360, 640] (one height x width), or a list of those ([[360, 640], 512])."""
    if isinstance(value, list) and not (len(value) == 2 and all(isinstance(v, int) for v in value)):
        return [parse_resolution(v) for v in value]
    return [parse_resolution(value)]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def rule_matches(rule: Rule, cell: HasAxes) -> bool:
    """True when every axis the rule names matches the cell (model names accept wildcards)."""
    if rule.model is not None and not any(fnmatch.fnmatch(cell.model, pattern) for pattern in _as_list(rule.model)):
        return False
    if rule.resolution is not None and tuple(cell.resolution) not in rule_resolutions(rule.resolution):
        return False
    if rule.batch_size is not None and cell.batch_size not in _as_list(rule.batch_size):
        return False
    if rule.precision is not None and cell.precision not in _as_list(rule.precision):
        return False
    if rule.backend is not None and cell.backend not in _as_list(rule.backend):
        return False
    return True
