"""The package's shape stays the one docs/architecture.md draws: rooms as folders, leaves at the top, no import circle.

`lint-imports` (in .ci/run) checks the layer order itself; these tests check what it does not: that no two modules
import each other through any chain, that every room is in the contract, and that the document names every file.
"""

from __future__ import annotations

import sys
import tomllib

import grimp

from tests.helpers import REPO

PACKAGE = REPO / "segbench"
LEAVES = {"errors", "naming", "formatting", "paths", "safe_yaml", "device", "plain"}
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text()


def _rooms() -> list[str]:
    return sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file())


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Groups of modules that import each other through some chain (Tarjan's algorithm), function-level included."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_two_modules_import_each_other_through_any_chain() -> None:
    graph = grimp.build_graph("segbench", cache_dir=None)
    # The graph has function-level imports too: fit imports the cell launcher inside a function.
    assert graph.direct_import_exists(importer="segbench.tools.fit", imported="segbench.run.isolation")
    assert _strongly_connected(graph) == []


def test_the_top_level_holds_only_leaves_and_rooms() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == LEAVES, f"add a new module to a room (or to LEAVES and docs/architecture.md): {modules - LEAVES}"


def test_every_room_is_a_layer_of_the_import_contract() -> None:
    contract = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layered = {name.strip().removeprefix("segbench.") for layer in contract["layers"] for name in layer.split("|")}
    assert set(_rooms()) | LEAVES <= layered
    assert "ignore_imports" not in contract


def test_the_architecture_document_names_every_room_and_module() -> None:
    missing = [f"{room}/" for room in _rooms() if f"`{room}/`" not in ARCHITECTURE]
    for room in _rooms():
        for module in (PACKAGE / room).glob("*.py"):
            private_or_family = module.stem.startswith("_") or room in ("models", "precision", "backends", "demo")
            named = f"`{module.name}`" in ARCHITECTURE or f"`{room}/{module.name}`" in ARCHITECTURE
            if not private_or_family and not named:
                missing.append(f"{room}/{module.name}")
    missing += [f"{leaf}.py" for leaf in LEAVES if f"`{leaf}.py`" not in ARCHITECTURE]
    assert not missing, f"docs/architecture.md does not name: {missing}"
