"""Issue 34, root cause 11: terminal control sequences never reach the terminal or a text report. An ESC sequence in
a suite name or a foreign meta.json set the window title and cleared the screen through `run`, `report` and
`compare`, and stood raw in the Markdown report; C0/C1 controls are now stripped at the console and at the one
function that writes text reports (newline and tab kept)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

from tests.helpers import FIXTURES, segbench

HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m\r"
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _foreign_run(path: Path) -> Path:
    shutil.copytree(FIXTURES / "h100-rtx3060", path)
    meta = json.loads((path / "meta.json").read_text())
    meta |= {"suite": HOSTILE, "note": f"note {HOSTILE}"}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_a_foreign_meta_json_cannot_drive_the_terminal_or_the_markdown(tmp_path: Path) -> None:
    a, b = _foreign_run(tmp_path / "a"), _foreign_run(tmp_path / "b")
    shown = segbench("report", str(a), "--format", "md", "-o", str(tmp_path / "a.md"))
    compared = segbench("compare", str(a), str(b), "-o", str(tmp_path / "ab.html"))
    for done in (shown, compared):
        assert done.returncode == 0, done.stderr
        assert not CONTROLS.search(done.stdout + done.stderr.replace("\n", "")), done.stdout
    markdown = (tmp_path / "a.md").read_text()
    assert "evil]0;pwned[2J31m" in markdown and not CONTROLS.search(markdown.replace("\n", "").replace("\t", ""))
    assert not CONTROLS.search((tmp_path / "ab.html").read_text().replace("\n", "").replace("\t", ""))


def test_a_suite_name_cannot_drive_the_terminal(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    done = segbench("run", str(write_suite(name=HOSTILE)), "--out", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert "evil]0;pwned[2J31m" in done.stdout  # the name is shown, its controls are not
    assert not CONTROLS.search((done.stdout + done.stderr).replace("\n", ""))
