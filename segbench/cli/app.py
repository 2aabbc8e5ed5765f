"""The typer app every command registers on, and what all commands share: the consoles and one-line user errors."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

from segbench import __version__
from segbench.cli.options import OneLineUsageErrors  # importing it also shows boolean flags as flags in --help
from segbench.errors import SegbenchError
from segbench.formatting import printable
from segbench.naming import shorten

app = typer.Typer(
    cls=OneLineUsageErrors,
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Benchmark semantic-segmentation models: latency, FPS and peak memory you can trust.",
)


class TerminalSafeConsole(Console):
    """A console that never writes a control character it did not make itself: every rendered segment's text goes
    through `printable`, so an ESC sequence in a suite name, a results file or an error cannot retitle or clear the
    terminal; rich's own styling and cursor codes (added after rendering) are kept."""

    def render_str(self, text: str, **kwargs: Any) -> Any:  # strings: cleaned before they are measured
        return super().render_str(printable(text), **kwargs)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Any:
        for segment in super().render(renderable, options):
            yield segment if segment.control else Segment(printable(segment.text), segment.style)


console = TerminalSafeConsole()
if not console.is_terminal:  # logs and CI: rich would wrap tables at 80 columns
    console = TerminalSafeConsole(width=160)
errors = TerminalSafeConsole(stderr=True, width=1000)
F = TypeVar("F", bound=Callable[..., Any])
MAX_ERROR_LINE = 500  # an error quoting a user's value never floods the terminal (YAML alias bombs)


def user_errors(command: F) -> F:
    """A user's mistake prints one line and exits 2; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SegbenchError as exc:
            for line in str(exc).splitlines():
                errors.print(f"error: {shorten(line, MAX_ERROR_LINE)}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # Ctrl-C outside a run's cells (loading, a report): no traceback
            errors.print("interrupted", markup=False, highlight=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_version(value: bool) -> None:
    if value:
        console.print(f"segbench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_print_version, is_eager=True, help="print segbench's version and exit"
    ),
) -> None:
    """Benchmark semantic-segmentation models: latency, FPS and peak memory you can trust."""
