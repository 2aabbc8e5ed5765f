"""The CLI's parent-side paths that never measure (help, suite errors, flag errors) must not import torch.

Importing torch costs seconds per process; the error paths, `--help` and the suite schema run in the parent,
so they stay light and torch is imported only where a cell (or the registries' validation) needs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs the CLI in-process, then reports whether torch got imported (the CLI's exit is swallowed).
PROBE = """
import sys
from segbench.cli.main import main
sys.argv = ["segbench", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("torch loaded:", "torch" in sys.modules, file=sys.stderr)
"""


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


def test_importing_the_cli_and_suite_schema_leaves_torch_unloaded() -> None:
    code = "import sys, segbench.cli.main, segbench.suite.schema; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--help",), None),
        (("run", "--help"), None),
        (("run", "no-such-suite.yaml"), "suite file not found"),
        (("run", "{suite}"), "did you mean 'batch_sizes'"),
        (("run", "{suite}", "--model", "fast-scnn"), "give a SUITE file or --model, not both"),
    ],
)
def test_cli_paths_that_measure_nothing_leave_torch_unloaded(
    args: tuple[str, ...], error: str | None, tmp_path: Path
) -> None:
    suite = tmp_path / "typo.yaml"
    suite.write_text("name: typo\nmodels: [fast-scnn]\nresolutions: [64]\nbatch_size: [1]\n")
    done = _probe(*(arg.format(suite=suite) for arg in args))
    assert "torch loaded: False" in done.stderr, done.stderr[-2000:]
    if error is not None:
        assert error in done.stderr, done.stderr[-2000:]
