"""The CLI's parent-side paths that never measure (help, suite errors, flag errors) must not import torch.

Importing torch costs seconds per process; the error paths, `--help` and the suite schema run in the parent,
so they stay light and torch is imported only where a cell (or the registries' validation) needs it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

# Runs the CLI in-process, then reports whether torch got imported (the CLI's exit is swallowed).
PROBE = """
import sys
from segbench.cli import main
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


# The light paths, and what each must not import when it is imported: the CLI (--help, flag and suite errors),
# the suite schema, and what a cell's process imports before it arms itself (death with the parent, its group).
LIGHT_MODULES = {
    "segbench.cli": ("torch", "numpy", "pandas"),
    "segbench.suite.schema": ("torch", "pandas"),
    "segbench.run.isolation": ("torch", "numpy", "pandas"),
    "segbench.system.process": ("torch", "numpy", "pandas"),
    "segbench.cell.request": ("torch", "pandas"),
}


@pytest.mark.parametrize(("module", "heavy"), LIGHT_MODULES.items())
def test_light_modules_import_nothing_heavy(module: str, heavy: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(sorted(name for name in {heavy!r} if name in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{module} imports {done.stdout.strip()}"


def _function_level_imports() -> list[tuple[Path, int, list[str]]]:
    """(file, line, source lines) of every import of a segbench module inside a function."""
    found = []
    for path in sorted((REPO / "segbench").rglob("*.py")):
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segbench"):
                    found.append((path, node.lineno, lines[node.lineno - 2 : node.lineno]))
                elif isinstance(node, ast.Import) and any(alias.name.startswith("segbench") for alias in node.names):
                    found.append((path, node.lineno, lines[node.lineno - 2 : node.lineno]))
    return found


def test_every_function_level_import_of_segbench_says_why_it_is_lazy() -> None:
    # Imports belong at the top; one inside a function is kept only where it keeps a light path light, and says so.
    unexplained = [
        f"{path.relative_to(REPO)}:{line}"
        for path, line, source in _function_level_imports()
        if not any("# lazy:" in text for text in source)
    ]
    assert _function_level_imports(), "the scan found no function-level import at all: it is broken"
    assert not unexplained, f"function-level imports without a '# lazy:' reason: {unexplained}"
