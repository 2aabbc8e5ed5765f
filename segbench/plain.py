"""Plain JSON data: what a cell hands back is converted to it, and what is read back is checked for depth.

A plugin's adapter may return numpy scalars or torch tensors where segbench expects numbers (`detections()`
returning `numpy.int64(3)` or a 0-d tensor). Sent as they are, a tensor crosses the cell's pipe as a shared-memory
handle that dies with the cell, and `json.dumps(default=str)` turns a numpy integer into the string "3" that the
record schema then rejects. `to_plain` turns any such value into the JSON type it stands for, by duck typing (this
leaf imports neither numpy nor torch); any other object (a dtype, a device, a date) becomes its text, as the store
always wrote it, and the record schema then judges the fields it types.

`nesting_problem` walks data iteratively and says where it nests deeper than `MAX_DEPTH`, so a hand-made file never
reaches a recursive reader (pydantic, pandas, json.dumps) as a RecursionError.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

MAX_DEPTH = 64  # levels of lists and objects; a record needs about five, as a suite does (safe_yaml)


class NotPlain(TypeError):
    """A value too deeply nested to store; the message names where."""


def to_plain(value: Any, where: str = "outcome", depth: int = 0) -> Any:
    """`value` as JSON types only (dict with str keys, list, str, int, float, bool, None)."""
    if depth > MAX_DEPTH:
        raise NotPlain(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)  # an IntEnum or a bool subclass becomes the int it is
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {_plain_key(key, where): to_plain(item, f"{where}.{key}", depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    return _array_like(value, where, depth)


def _plain_key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (bool, int, float)) or key is None:
        return json_key(key)
    return str(key)


def json_key(key: bool | int | float | None) -> str:
    """The key json.dumps would write for a non-string key."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return repr(key) if isinstance(key, float) and math.isfinite(key) else str(key)


def _array_like(value: Any, where: str, depth: int) -> Any:
    """numpy and torch scalars (`.item()`), their arrays and tensors (`.tolist()`), converted; anything else as text."""
    size = getattr(value, "size", None)
    numel = getattr(value, "numel", None)
    elements = numel() if callable(numel) else size if isinstance(size, int) else None
    shape = getattr(value, "shape", None)
    if callable(getattr(value, "item", None)) and (shape == () or (shape is None and elements in (None, 1))):
        return to_plain(value.item(), where, depth)
    if callable(getattr(value, "tolist", None)):
        return to_plain(value.tolist(), where, depth)
    if isinstance(value, (set, frozenset)):
        return [to_plain(item, f"{where}[]", depth + 1) for item in sorted(value, key=repr)]
    return str(value)


def nesting_problem(value: Any, where: str = "", limit: int = MAX_DEPTH) -> str | None:
    """Where `value` nests deeper than `limit` levels ('accuracy.a.b…: nested deeper than 64 levels'), or None."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth >= limit:
            return f"{path or '(top level)'}: nested deeper than {limit} levels"
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            child_path = f"{path}.{key}" if isinstance(item, dict) else f"{path}[{key}]"
            stack.append((child, child_path.lstrip("."), depth + 1))
    return None
