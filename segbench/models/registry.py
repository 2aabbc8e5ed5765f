"""The model registry: timm-style names, wildcards, and near-match suggestions for typos.

Family modules in `segbench/models/` register their cards when imported; they are discovered
automatically, so a new family is one new file. Plugin modules named in a suite register more.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from segbench.errors import SegbenchError, UnknownModelError
from segbench.models.base import ModelCard, SegmentationAdapter
from segbench.naming import shorten, unknown_name_message

_CARDS: dict[str, ModelCard] = {}
_ADAPTERS: dict[str, type[SegmentationAdapter]] = {}
_NOT_FAMILIES = {"base", "registry", "flops", "labels", "weights"}  # modules here that define no family
_discovered = False


def register(card: ModelCard, adapter: type[SegmentationAdapter]) -> None:
    """Register one model; a name already taken (a built-in model, another plugin's) is refused in one line.

    The built-in families are discovered first, so a plugin that reuses one of their names is told so while it
    registers, not by a traceback when the families are imported later."""
    _discover_families()  # a no-op while the families themselves register (discovery is marked started)
    if card.name in _CARDS and not _same_definition(_ADAPTERS[card.name], adapter):
        raise SegbenchError(
            f"model {card.name!r} is already registered (a built-in model or another plugin's); register yours "
            "under another name"
        )
    _CARDS[card.name] = card
    _ADAPTERS[card.name] = adapter


def _same_definition(first: type, second: type) -> bool:
    """The same class, or the same class of the same file imported twice (a test module imports a plugin file that a
    suite also loads by path): registering it again is no clash."""
    if first is second:
        return True

    def source(cls: type) -> Path | None:
        module = sys.modules.get(cls.__module__)
        file = getattr(module, "__file__", None)
        return Path(file).resolve() if file else None

    return first.__qualname__ == second.__qualname__ and source(first) is not None and source(first) == source(second)


def _discover_families() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):  # this package's folder: the family files
        if module.name not in _NOT_FAMILIES and not module.name.startswith("_"):
            importlib.import_module(f"segbench.models.{module.name}")


class _PluginCalledExit(Exception):
    def __init__(self, code: Any):
        super().__init__(code)
        self.code = code


@contextmanager
def _exits_are_errors() -> Iterator[None]:
    """A plugin that exits while imported (sys.exit, exit(), os._exit) is an error naming it, never a
    silent end of segbench with no output. os._exit is swapped for the import's duration: it cannot be caught."""
    real_exit = os._exit

    def refuse(code: int) -> NoReturn:
        raise _PluginCalledExit(code)

    os._exit = refuse  # type: ignore[assignment]
    try:
        yield
    except SystemExit as exc:
        raise SegbenchError(
            f"the plugin called sys.exit({exc.code!r}) while being imported; a plugin must only register "
            "models (remove the exit)"
        ) from None
    except _PluginCalledExit as exc:
        raise SegbenchError(
            f"the plugin called os._exit({exc.code!r}) while being imported; a plugin must only register "
            "models (remove the exit)"
        ) from None
    finally:
        os._exit = real_exit


def plugin_module_name(path: Path) -> str:
    """The module key of a plugin file: its stem and its resolved path's digest, so two plugins that share a file
    name (`a/models.py`, `b/models.py`) are two modules, and one file imported twice is one."""
    digest = hashlib.sha1(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    return f"segbench_plugin_{stem}_{digest}"


def _reraise_as_one_line(plugin: str, exc: BaseException) -> NoReturn:
    """A plugin's failure while imported as one line naming the plugin; only Ctrl-C stays itself."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    if isinstance(exc, SegbenchError):  # an exit or a refused registration: already one line
        raise SegbenchError(f"{plugin}: {exc}") from None
    text = str(exc).strip().splitlines()
    detail = shorten(text[0] if text else "no detail")
    raise SegbenchError(f"{plugin}: importing the plugin failed: {type(exc).__name__}: {detail}") from None


def load_plugin(spec: str, base_dir: Path | None = None) -> None:
    """Import a plugin that registers extra models: a module name or a path to a .py file.

    Whatever the import raises (a BaseException subclass included; Ctrl-C excepted) is one line naming the plugin.
    """
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise SegbenchError(f"plugins: file not found: {path}")
        name = plugin_module_name(path)
        if name in sys.modules:
            return
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec and module_spec.loader
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            with _exits_are_errors():
                module_spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(name, None)  # half-imported: the next attempt must fail the same way, not pass silently
            _reraise_as_one_line(str(path), exc)
        return
    try:
        with _exits_are_errors():
            importlib.import_module(spec)
    except ImportError as exc:
        raise SegbenchError(
            f"plugins: cannot import {spec!r} ({exc}); give an importable module or a .py path"
        ) from None
    except BaseException as exc:  # noqa: BLE001 (the plugin's own bug: one line naming it)
        _reraise_as_one_line(spec, exc)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard, sorted."""
    _discover_families()
    return sorted(name for name in _CARDS if fnmatch.fnmatch(name, pattern))


def unknown_model_message(name: str) -> str:
    return unknown_name_message("model", name, list_models(), lister="segbench models")


def get_card(name: str) -> ModelCard:
    _discover_families()
    if name not in _CARDS:
        raise UnknownModelError(unknown_model_message(name))
    return _CARDS[name]


def adapter_class(name: str) -> type[SegmentationAdapter]:
    get_card(name)
    return _ADAPTERS[name]


def create_model(
    name: str, weights: Path | str | None = None, options: dict[str, Any] | None = None
) -> SegmentationAdapter:
    """An unbuilt adapter for a registered model; call `.build(device)` on it."""
    card = get_card(name)
    return _ADAPTERS[name](card, Path(weights) if weights else None, options)
