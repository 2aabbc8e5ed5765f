"""Shared helpers for name-keyed registries: discovery of one-file-per-entry packages and typo hints."""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from typing import Iterable, TypeVar

T = TypeVar("T")

# The cell every speed-up, memory saving and fidelity figure is measured against, and the matrix's default axes.
REFERENCE_PRECISION = "fp32"
REFERENCE_BACKEND = "eager"


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.5) -> str:
    """' did you mean 'x'?' style hint, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'? " if close else ""


MAX_NAMES_LISTED = 12  # a longer list is cut off by terminals and hides the hint: name the command that lists them


def unknown_name_message(kind: str, name: str, known: Iterable[str], lister: str | None = None) -> str:
    """'unknown model 'x' (did you mean 'y'? known: a, b)'; past a dozen names, the closest few and where the rest are
    listed (`lister`, e.g. `segbench models`)."""
    known = sorted(known)
    if len(known) <= MAX_NAMES_LISTED or lister is None:
        return f"unknown {kind} '{name}' ({did_you_mean(name, known)}known: {', '.join(known)})"
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    if len(close) > 1:
        hint += f"also close: {', '.join(close[1:])}; "
    return f"unknown {kind} '{name}' ({hint}{len(known)} known: `{lister}` lists them)"


def discover_instances(
    package: str, search_path: Iterable[str], base: type[T], skip: Iterable[str] = ("base",)
) -> dict[str, T]:
    """Import every module of a package and instantiate each concrete `base` subclass it defines, keyed by `.name`."""
    found: dict[str, T] = {}
    for module_info in pkgutil.iter_modules(list(search_path)):
        if module_info.name in skip or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, base) and not inspect.isabstract(cls) and cls.__module__ == module.__name__:
                found[cls.name] = cls()  # type: ignore[attr-defined]
    return found


def shorten(text: str, limit: int = 200) -> str:
    """At most `limit` characters of a user's value in a message: an expanded YAML alias can be megabytes."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
