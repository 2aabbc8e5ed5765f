"""`segbench`: every command registered on the app, in the order --help lists them."""

from __future__ import annotations

from segbench.cli import artifacts, report, run, tools
from segbench.cli.app import app

COMMANDS = (
    run.run,
    tools.env,
    tools.models,
    tools.fit,
    tools.predict,
    tools.selfcheck,
    report.report,
    report.compare,
    artifacts.export,
    artifacts.cache_command,
)
for command in COMMANDS:
    app.command(name=command.__name__.removesuffix("_command"))(command)


def main() -> None:
    app()
