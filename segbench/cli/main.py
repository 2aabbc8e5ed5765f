"""`segbench`: the app with every command group registered on it (importing a group registers its commands)."""

from __future__ import annotations

from segbench.cli import run, tools, report  # noqa: F401 (registers the commands, in --help's order)
from segbench.cli.app import app


def main() -> None:
    app()
