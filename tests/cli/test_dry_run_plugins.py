"""Issue 34, "decide and document": `--dry-run` imports the suite's plugins (checking their models' names needs them),
so it runs their code; it is no sandbox for an untrusted suite. The decision: keep the check, and say so in
`--help` and in the dry run's own output (the old dry run ran them without a word)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from tests.helpers import FAULT_PLUGIN, segbench


def test_a_dry_run_says_it_ran_the_plugins_code(write_suite: Callable[..., Path]) -> None:
    done = segbench("run", str(write_suite()), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "plugins imported to check their models (their code ran): " in done.stdout
    assert Path(FAULT_PLUGIN).name in done.stdout
    helped = segbench("run", "--help", env={**os.environ, "COLUMNS": "200"})
    flowing = " ".join(helped.stdout.replace("│", " ").split())  # help text wraps inside the options box
    assert "plugins are imported, i.e. their code runs" in flowing
