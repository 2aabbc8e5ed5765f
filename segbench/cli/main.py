"""`segbench`: every command registered on the app, in the order --help lists them."""

from __future__ import annotations

from segbench.cli import report, run, tools
from segbench.cli.app import app

COMMANDS = (run.run, tools.env, tools.models, tools.fit, tools.predict, tools.selfcheck, report.report, report.compare)
for command in COMMANDS:
    app.command()(command)


def main() -> None:
    app()
