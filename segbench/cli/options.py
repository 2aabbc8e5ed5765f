"""Command-line options that need more than typer gives: comma lists, a suite built from flags, plugins.

Kept apart from the commands (`run.py`, `tools.py`) so they stay thin and these rules are testable from Python.
"""

from __future__ import annotations

import json
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


def _model_entry(text: str) -> str | dict[str, str]:
    """`--model NAME` or `--model NAME=WEIGHTS` (each model its own weights file, Hub id or asset name)."""
    name, equals, weights = text.partition("=")
    if not equals:
        return name.strip()
    if not name.strip() or not weights.strip():
        raise SegbenchError(f"--model: {text!r} needs a name and weights either side of '=', e.g. yolov8n-seg=best.pt")
    return {"name": name.strip(), "weights": _weights_value(Path(weights.strip()))}


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
    entries = [_model_entry(text) for text in split_values(models)]
    if not entries:
        raise SegbenchError("--model: no model name given; e.g. --model fast-scnn (segbench models lists them)")
    names = [entry["name"] if isinstance(entry, dict) else entry for entry in entries]
    if weights is not None and len(names) != 1:
        raise SegbenchError(
            f"--weights: belongs to one model, but {len(names)} are given; give each its own as --model NAME=WEIGHTS"
        )
    if weights is not None and isinstance(entries[0], dict):
        raise SegbenchError("--weights: the --model already names its weights (NAME=WEIGHTS); give them once")
    if weights is not None:
        entries[0] = {"name": names[0], "weights": _weights_value(weights)}
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
    data["models"] = entries
    data["resolutions"] = [parse_resolution_flag(text) for text in split_values(resolutions) or ["512"]]
    data["batch_sizes"] = [_integer("--batch", text, "--batch 1,4") for text in split_values(batches) or ["1"]]
    data["precisions"] = split_values(precisions) or [REFERENCE_PRECISION]
    data["backends"] = split_values(backends) or [REFERENCE_BACKEND]
    return data


def axis_flags_given(**flags: Any) -> list[str]:
    """Names of the suite-building flags that were used (they make sense only with --model)."""
    return [f"--{name.replace('_', '-')}" for name, value in flags.items() if value]


# ---- the scenario from flags: --scenario capacity --camera-fps 30 ------------------------------------------

SCENARIOS = ("offline", "stream", "capacity")


def scenario_overrides(
    scenario: str | None, camera_fps: float | None, max_p99_ms: float | None, max_latency_ms: float | None,
    percentile: str | None,
) -> list[str]:  # fmt: skip
    """`-s` overrides for --scenario and --camera-fps; with capacity the latency target flags are also its bound."""
    if scenario is not None and scenario not in SCENARIOS:
        raise SegbenchError(f"--scenario: unknown scenario {scenario!r}; use one of {', '.join(SCENARIOS)}")
    if camera_fps is not None and scenario != "capacity":
        raise SegbenchError("--camera-fps: sets the capacity scenario's camera rate; add --scenario capacity")
    if scenario is None:
        return []
    overrides = [f"scenario={scenario}"]
    if scenario != "capacity":
        return overrides
    if camera_fps is not None:
        overrides.append(f"capacity.camera_fps={camera_fps!r}")
    bound = max_p99_ms if max_p99_ms is not None else max_latency_ms
    if bound is not None:
        overrides.append(f"capacity.latency_bound_ms={bound!r}")
        overrides.append(f"capacity.latency_percentile={'p99' if max_p99_ms is not None else percentile or 'p99'}")
    return overrides


# ---- targets: the same flags on `run` and `report` ----------------------------------------------------

MAX_TARGET_LATENCY_MS = 3_600_000.0  # an hour per frame: beyond it a latency target is a typo
TARGET_FPS = bounded(
    None,
    "--target-fps",
    low=0.001,
    high=1e12,  # finite is the point: an unreachable target (1e9) is a legitimate question
    help="target: achieved FPS at least this (end to end; a stream cell's sustained rate)",
)
MAX_LATENCY_MS = bounded(
    None,
    "--max-latency-ms",
    low=0.001,
    high=MAX_TARGET_LATENCY_MS,
    help="target: latency percentile (see --latency-percentile) at most this",
)
LATENCY_PERCENTILE = typer.Option(None, "--latency-percentile", help="p50, p90, p95 or p99 (default p99)")
MAX_P99_MS = bounded(
    None,
    "--max-p99-ms",
    low=0.001,
    high=MAX_TARGET_LATENCY_MS,
    help="shorthand for --max-latency-ms X --latency-percentile p99",
)
MEMORY_BUDGET = typer.Option(
    None, "--memory-budget", help="target: fit this much memory (e.g. 12GiB, 800MiB) or a card profile's (rtx3060)"
)
MIN_AGREEMENT = bounded(
    None, "--min-agreement", low=0, high=100, help="target: pixel agreement with fp32 eager at least this many %"
)
MIN_MIOU = bounded(
    None, "--min-miou", low=0, high=100, help="target: mIoU against the labelled --dataset at least this many %"
)
# Which flag sets which `targets:` field, so a bad value's one-line error names the flag the user typed.
TARGET_FLAG_OF = {
    "fps": "--target-fps",
    "max_latency_ms": "--max-latency-ms",
    "latency_percentile": "--latency-percentile",
    "memory": "--memory-budget",
    "min_agreement": "--min-agreement",
    "min_miou": "--min-miou",
}


def target_fields(
    fps: float | None,
    max_latency_ms: float | None,
    percentile: str | None,
    max_p99_ms: float | None,
    memory: str | None,
    min_agreement: float | None,
    min_miou: float | None,
) -> dict[str, Any]:
    """The `targets:` fields these flags set (None: not given), with the flags' own conflicts as one-line errors."""
    if max_p99_ms is not None and (max_latency_ms is not None or percentile not in (None, "p99")):
        raise SegbenchError("--max-p99-ms is --max-latency-ms X --latency-percentile p99; give one of them")
    return {
        "fps": fps,
        "max_latency_ms": max_latency_ms if max_p99_ms is None else max_p99_ms,
        "latency_percentile": "p99" if max_p99_ms is not None else percentile,
        "memory": memory,
        "min_agreement": min_agreement,
        "min_miou": min_miou,
    }


def target_overrides(fields: dict[str, Any]) -> list[str]:
    """The given target fields as `-s targets.KEY=VALUE` overrides: checked by the suite schema like a file's, and kept
    in the run folder's suite.yaml."""
    return [f"targets.{key}={json.dumps(value)}" for key, value in fields.items() if value is not None]


# ---- only valid paths: the precision x backend pairs a flags-built matrix keeps -----------------------


def valid_paths(data: dict[str, Any], all_paths: bool) -> list[str]:
    """Limit a flags-built suite to the precision x backend pairs that can run on its device: pairs that never can are
    excluded (`exclude:` rules, kept in the run's suite.yaml), and with `all_paths` every precision and backend the
    device runs is tried, emulated formats left out. Returns a line per pair left out, saying why."""
    import torch

    from segbench.backends import backend_names, get_backend  # lazy: imports torch
    from segbench.precision import get_precision, pair_reason, precision_names  # lazy: imports torch
    from segbench.system.env import resolve_device  # lazy: imports torch

    try:
        device = torch.device(resolve_device(str(data.get("device") or "auto")))
    except SegbenchError:  # a device this machine lacks: the dry run warns and the run stops, each in its own words
        return []
    if all_paths:
        data["precisions"] = [n for n in precision_names() if not get_precision(n).unsupported_reason(device)]
        runnable = [get_backend(name) for name in backend_names() if not get_backend(name).unsupported_reason(device)]
        data["backends"] = [backend.name for backend in runnable if backend.runtime != "pipeline"]
    left_out, excluded = [], []
    known_precisions, known_backends = set(precision_names()), set(backend_names())
    for precision_name in [name for name in data["precisions"] if name in known_precisions]:
        for backend_name in [name for name in data["backends"] if name in known_backends]:  # the schema names the rest
            precision, backend = get_precision(precision_name), get_backend(backend_name)
            reason = pair_reason(precision, backend, device)
            if reason is None and all_paths:
                reason = precision.impractical_reason(device, backend.runtime)
            if reason:
                excluded.append({"precision": precision_name, "backend": backend_name})
                left_out.append(f"{precision_name} on {backend_name}: {reason}")
    if excluded:
        data["exclude"] = [*data.get("exclude", []), *excluded]
    return left_out
