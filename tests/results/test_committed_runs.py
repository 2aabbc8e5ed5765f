"""The example runs committed under results/: each must say which source made it (issue 27 item 13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO

COMMITTED_METAS = sorted((REPO / "results").glob("**/meta.json"))


def dirty_source_problem(meta: dict[str, Any]) -> str | None:
    """Why a run may not be committed: it was made from a tree that differed from its commit. Runs recorded before
    the fingerprint held `dirty` pass (their commit string alone cannot prove it either way)."""
    source = (meta.get("fingerprint") or {}).get("segbench") or {}
    if "dirty" not in source:
        return None
    if source["dirty"] is not False:
        return (
            f"made from a dirty tree (commit {source.get('commit')}, diff sha256 {source.get('diff_sha256')}): commit "
            "the code, then rerun it"
        )
    return None


def test_the_rule_refuses_a_dirty_run_and_allows_old_ones() -> None:
    """The check below fails on a run recorded with dirty = true and passes a run recorded before the field."""
    dirty = {"fingerprint": {"segbench": {"commit": "abc-dirty", "dirty": True, "diff_sha256": "f00"}}}
    assert "dirty tree" in (dirty_source_problem(dirty) or "")
    assert dirty_source_problem({"fingerprint": {"segbench": {"commit": "abc-dirty"}}}) is None
    assert dirty_source_problem({"fingerprint": {"segbench": {"commit": "abc", "dirty": False}}}) is None


@pytest.mark.parametrize("meta_path", COMMITTED_METAS, ids=lambda path: str(path.parent.relative_to(REPO)))
def test_no_committed_run_was_made_from_a_dirty_tree(meta_path: Path) -> None:
    problem = dirty_source_problem(json.loads(meta_path.read_text(encoding="utf-8")))
    assert problem is None, f"{meta_path.parent.relative_to(REPO)}: {problem}"
