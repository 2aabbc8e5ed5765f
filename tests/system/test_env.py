"""The run's fingerprint: which source tree a run came from (segbench.system.env)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from segbench.system.env import fingerprint, git_state


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_a_dirty_tree_is_recorded_with_a_hash_of_its_diff(tmp_path: Path) -> None:
    """Issue 27 item 13: a run from a dirty tree recorded only '<commit>-dirty', so two different edits of one commit
    read the same. The fingerprint now holds a hash of `git diff HEAD` and whether untracked files exist."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = git_state(tmp_path)
    assert clean["dirty"] is False and clean["diff_sha256"] is None and clean["untracked_files"] is False
    assert len(clean["commit"]) == 40
    (tmp_path / "a.py").write_text("x = 2\n")
    first = git_state(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    second = git_state(tmp_path)
    assert first["dirty"] and second["dirty"] and first["diff_sha256"] != second["diff_sha256"]
    (tmp_path / "new.py").write_text("")
    assert git_state(tmp_path)["untracked_files"] is True
    assert git_state(tmp_path / "not-a-repo") == dict.fromkeys(("commit", "dirty", "diff_sha256", "untracked_files"))


def test_the_fingerprint_carries_the_source_state() -> None:
    source = fingerprint()["segbench"]
    assert {"version", "commit", "dirty", "diff_sha256", "untracked_files"} <= set(source)
    assert source["commit"] is None or source["commit"].endswith("-dirty") == bool(source["dirty"])
