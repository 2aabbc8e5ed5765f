"""Command-line options that need more than typer gives: comma lists, a suite built from flags, plugins.

Kept apart from the commands (`run.py`, `tools.py`) so they stay thin and these rules are testable from Python.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import typer
import typer.core

from segbench.errors import SegbenchError
from segbench.naming import REFERENCE_BACKEND, REFERENCE_PRECISION
from segbench.suite.axes import MAX_SIDE


def _flags_without_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """Typer shows boolean flags as `--dry-run <bool>`; a flag takes no value, so show none."""
    if self.is_flag:
        return None
    return _typer_display_type_rich(self, ctx)


# Older typer releases have no display_type_rich (and show no `<bool>`): patch only where it exists.
_typer_display_type_rich = getattr(typer.core.TyperOption, "display_type_rich", None)
if _typer_display_type_rich is not None:
    typer.core.TyperOption.display_type_rich = _flags_without_type  # type: ignore[method-assign]


def _finite(value: Any) -> Any:
    """typer checks `min`/`max`, but NaN passes every comparison: refuse non-finite numbers (lists element-wise)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    for item in values:
        if isinstance(item, float) and not math.isfinite(item):
            raise typer.BadParameter(f"{item} is not a finite number")
    return value


def bounded(default: Any, *flags: str, low: float, high: float, help: str, **options: Any) -> Any:
    """A numeric option that must be finite and within [low, high]: the one rule every command's numbers follow.

    typer shows the range in --help; a value outside it is one line naming the flag (OneLineUsageErrors), exit 2.
    """
    return typer.Option(default, *flags, min=low, max=high, callback=_finite, help=help, **options)


# click's exceptions, wherever this typer takes click from (newer typers vendor it as typer._click).
_USAGE_ERROR: type[Exception] = next(kind for kind in typer.BadParameter.__mro__ if kind.__name__ == "UsageError")
_NO_ARGS_IS_HELP = getattr(sys.modules[_USAGE_ERROR.__module__], "NoArgsIsHelpError", ())  # click >= 8.2


class OneLineUsageErrors(typer.core.TyperGroup):
    """A bad flag or argument is one line and exit 2, as every other input mistake, instead of a usage box."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _NO_ARGS_IS_HELP:
            raise  # `segbench` alone shows the help: not a mistake
        except _USAGE_ERROR as exc:
            typer.echo(f"error: {_usage_error_line(exc)}", err=True)
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None


def _usage_error_line(exc: Exception) -> str:
    """`--timeout: Input should be … (see segbench fit -h)`: the flag first, as the suite's and the commands' own
    errors put the field first."""
    param = getattr(exc, "param", None)
    command = getattr(getattr(exc, "ctx", None), "command_path", "segbench")
    text = f"{param.opts[0]}: {exc.message}" if param is not None and param.opts else exc.format_message()  # type: ignore[attr-defined]
    return f"{text} (see {command} -h)"


def split_values(values: list[str] | None) -> list[str]:
    """Repeatable and comma-separated at once: `--batch 1,4 --batch 8` -> ['1', '4', '8']."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _integer(flag: str, text: str, example: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SegbenchError(f"{flag}: {text!r} is not a whole number; e.g. {example}") from None


def parse_resolution_flag(text: str) -> int | list[int]:
    """`512` is a square; `360x640` is height x width (as the suite's `resolutions` entries)."""
    height, _, width = text.lower().partition("x")
    if width:
        sides: int | list[int] = [
            _integer("--resolution", height, "512 or 360x640"),
            _integer("--resolution", width, "512 or 360x640"),
        ]
    else:
        sides = _integer("--resolution", text, "512 or 360x640")
    for side in sides if isinstance(sides, list) else [sides]:
        if not 0 < side <= MAX_SIDE:
            raise SegbenchError(
                f"--resolution: impossible side {side} in {text!r}; each side must be between 1 and {MAX_SIDE} px"
            )
    return sides


def absolute_plugin(spec: str) -> str:
    """A plugin .py path made absolute, so a spawned cell and a resumed run find it from anywhere."""
    if not spec.endswith(".py"):
        return spec  # an importable module name
    path = Path(spec).expanduser()
    if not path.is_file():
        raise SegbenchError(
            f"--plugin: file not found: {spec}; give a .py file that calls segbench.models.registry.register"
        )
    return str(path.resolve())


def load_plugins(specs: list[str] | None) -> list[str]:
    """Import each --plugin (registering its models in this process); returns them as absolute specs."""
    from segbench.models.registry import load_plugin  # lazy: imports torch

    loaded = []
    for spec in specs or []:
        spec = absolute_plugin(spec)
        try:
            load_plugin(spec)
        except SegbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 (the plugin's own bug, shown as one line about the plugin)
            raise SegbenchError(f"--plugin {spec}: importing it failed: {type(exc).__name__}: {exc}") from None
        loaded.append(spec)
    return loaded


def _weights_value(weights: Path) -> str:
    """A local path made absolute (the suite copy lives elsewhere); a library name (Hub id, asset, enum) kept as
    given."""
    local = weights.expanduser()
    return str(local.resolve()) if local.exists() else str(weights)


def suite_from_flags(
    models: list[str],
    resolutions: list[str],
    batches: list[str],
    precisions: list[str],
    backends: list[str],
    device: str | None,
    weights: Path | None,
    hardware: list[str],
    plugins: list[str],
) -> dict[str, Any]:
    """The suite data a `segbench run --model …` command line means, ready for the suite schema.

    Unknown names and bad values are left to the schema, so they get the same one-line errors as a file.
    """
    names = split_values(models)
    if not names:
        raise SegbenchError("--model: no name given; e.g. --model fast-scnn (segbench models lists them)")
    if weights is not None and len(names) != 1:
        raise SegbenchError(
            f"--weights: belongs to one model, but {len(names)} are given; run one --model with --weights, or write a "
            "suite file"
        )
    entry: Any = {"name": names[0], "weights": _weights_value(weights)} if weights is not None else names[0]
    cards = split_values(hardware)
    data: dict[str, Any] = {
        "name": names[0] if len(names) == 1 else f"{names[0]}-and-{len(names) - 1}-more",
        "description": "built from command-line flags (segbench run --model …)",
        "device": device or "auto",
    }
    if cards:
        data["hardware"] = cards[0] if len(cards) == 1 else cards
    if plugins:
        data["plugins"] = plugins
    data["models"] = [entry, *names[1:]]
    data["resolutions"] = [parse_resolution_flag(text) for text in split_values(resolutions) or ["512"]]
    data["batch_sizes"] = [_integer("--batch", text, "--batch 1,4") for text in split_values(batches) or ["1"]]
    data["precisions"] = split_values(precisions) or [REFERENCE_PRECISION]
    data["backends"] = split_values(backends) or [REFERENCE_BACKEND]
    return data


def axis_flags_given(**flags: Any) -> list[str]:
    """Names of the suite-building flags that were used (they make sense only with --model)."""
    return [f"--{name.replace('_', '-')}" for name, value in flags.items() if value]
