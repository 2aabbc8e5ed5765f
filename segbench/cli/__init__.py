"""The command line: `segbench` is `segbench.cli:main`."""

from segbench.cli.main import main

__all__ = ["main"]
