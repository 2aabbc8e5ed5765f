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


STALE_ENERGY_RUN = REPO / "results" / "rtx3060-claims-h100-20261125T224130Z"


def test_the_stale_h100_energy_figures_are_withheld_with_their_reason() -> None:
    """Issue 27 item 13: rtx3060-claims-h100 stored 0.0 J/image and 9.6 J/image (28.9 J over 0.021 s: 1,356 W on a
    700 W card). The committed file stays as it is; the reader nulls what cannot be right and says why."""
    from segbench.report.exports import render_markdown
    from segbench.results.metrics import METRICS
    from segbench.results.runs import load_run

    run = load_run(STALE_ENERGY_RUN)
    ok = [record for record in run.records if record["status"] == "ok"]
    assert ok and all(METRICS["joules_per_image"].value(record) is None for record in ok)
    fast_scnn = next(r for r in ok if r["model"] == "fast-scnn" and r["precision"] == "fp32")
    reason = METRICS["joules_per_image"].missing_reason(fast_scnn)
    assert "1,356 W" in reason and "700 W TDP" in reason
    zero = next(r for r in ok if r["model"] == "fast-scnn" and r["precision"] == "fp16")
    assert "0 J over" in METRICS["joules_per_image"].missing_reason(zero)
    assert "1,356 W" in render_markdown(run)  # the report shows the reason beside the withheld figure
    raw = (STALE_ENERGY_RUN / "results.jsonl").read_text()
    assert '"energy_j": 28.941' in raw  # the committed file is unchanged


def test_plausible_energy_passes_and_short_windows_are_withheld() -> None:
    from segbench.results.runs import energy_problem

    meta = {"device": "cuda:0", "fingerprint": {"gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}]}}
    good = {"device": "cuda:0", "telemetry": {"energy_j": 600.0, "window_s": 2.0}}  # 300 W
    assert energy_problem(good, meta) is None
    short = {"device": "cuda:0", "telemetry": {"energy_j": 30.0, "window_s": 0.1}}  # 300 W, but 0.1 s
    assert "power averaging" in (energy_problem(short, meta) or "")
    assert energy_problem({"device": "cpu", "telemetry": {}}, {"device": "cpu"}) is None
