"""Issue 34, root causes 1 and 15: a run folder someone handed you, and one whose logs/ is deleted mid-run.

Root cause 1: `--resume` wrote through a `.lock` symlink (opened, then truncated), a `meta.json.tmp` symlink
(written, then renamed), a `results.jsonl` symlink (rewritten by the torn-line repair before any validation, then
appended to) and a `logs/` symlink. Root cause 15: with logs/ deleted mid-run, later cells failed "before
reporting" and the final log write raised a traceback, so the exit line never printed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from segbench.results import store as results
from tests.helpers import FAST_TIMING, FAULT_PLUGIN, TESTS_DIR, segbench

HOSTILE_PLUGIN = str(TESTS_DIR / "hostile_models.py")
PRECIOUS = b"precious, not a record"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real one-cell run (suite file, run folder), copied by each test that edits it."""
    from segbench.run.runner import run_suite
    from segbench.suite.schema import load_suite

    base = tmp_path_factory.mktemp("handed")
    suite = base / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "device": "cpu",
                "plugins": [FAULT_PLUGIN],
                "models": ["test-tiny"],
                "resolutions": [16],
                "timing": FAST_TIMING,
                "roofline": {"measure_ceiling": False},
            }
        )
    )
    return suite, run_suite(load_suite(suite), suite, base / "out").run_dir


def handed_over(run: tuple[Path, Path], tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run[1], target)
    return target


def plant_link(run_dir: Path, name: str, tmp_path: Path) -> Path:
    """Replace `name` in the run folder with a link to a victim outside it (a file, or a folder for logs/)."""
    victim = tmp_path / "victim"
    entry = run_dir / name
    if entry.is_dir():
        shutil.rmtree(entry)
        victim.mkdir()
    else:
        entry.unlink(missing_ok=True)
        victim.write_bytes(PRECIOUS)
    entry.symlink_to(victim)
    return victim


def untouched(victim: Path) -> bool:
    return list(victim.iterdir()) == [] if victim.is_dir() else victim.read_bytes() == PRECIOUS


@pytest.mark.parametrize("name", [".lock", "meta.json.tmp", "results.jsonl", "logs"])
def test_resume_refuses_a_folder_with_a_link_and_writes_nothing_through_it(
    finished_run: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    """Guards root cause 1: a link among a run folder's files is refused in one line before anything is opened."""
    run_dir = handed_over(finished_run, tmp_path)
    victim = plant_link(run_dir, name, tmp_path)
    meta_before = (run_dir / results.META_FILE).read_bytes()
    done = segbench("run", str(finished_run[0]), "--resume", str(run_dir))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "symbolic link" in line and name in line, line
    assert untouched(victim)
    assert (run_dir / results.META_FILE).read_bytes() == meta_before


def test_the_store_never_writes_through_a_link_planted_after_the_check(tmp_path: Path) -> None:
    """Guards root cause 1 at the writes themselves: appends refuse a link (O_NOFOLLOW) and meta.json is written
    through a fresh temporary file, so a `meta.json.tmp` link is never followed."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    victim = plant_link(run_dir, results.RESULTS_FILE, tmp_path)
    with pytest.raises(OSError):
        results.append_record(run_dir, {"cell_id": "c"})
    assert untouched(victim)
    (run_dir / results.RESULTS_FILE).unlink()
    victim.unlink()
    victim = plant_link(run_dir, f"{results.META_FILE}.tmp", tmp_path)
    results.write_json(run_dir / results.META_FILE, {"suite": "t", "device": "cpu"})
    assert untouched(victim) and not (run_dir / results.META_FILE).is_symlink()
    assert json.loads((run_dir / results.META_FILE).read_text())["suite"] == "t"


def test_a_refused_resume_leaves_a_torn_tail_where_it_was(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    """Guards root cause 1's "validate before rewriting": the torn-line repair ran before validation, so a resume
    refused for a corrupt first line had already rewritten results.jsonl."""
    run_dir = handed_over(finished_run, tmp_path)
    [line] = (run_dir / results.RESULTS_FILE).read_bytes().splitlines()
    damaged = b"{not json\n" + line + b"\n" + b'{"cell_id": "torn'
    (run_dir / results.RESULTS_FILE).write_bytes(damaged)
    done = segbench("run", str(finished_run[0]), "--resume", str(run_dir))
    assert done.returncode == 2 and "line 1: corrupt record" in done.stderr, done.stderr
    assert (run_dir / results.RESULTS_FILE).read_bytes() == damaged


def test_logs_deleted_mid_run_are_recreated_and_the_exit_line_prints(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    """Guards root cause 15: the first cell deletes logs/; the next cells still run and log, and the run ends with
    its exit line instead of a traceback."""
    suite = write_suite(plugins=[FAULT_PLUGIN, HOSTILE_PLUGIN], models=["hostile-log-deleter", "test-tiny"])
    done = segbench("run", str(suite), "--out", str(tmp_path / "out"))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    *_, exit_line, next_step = done.stdout.strip().splitlines()
    assert exit_line.startswith("exit 0") and next_step.startswith("next: segbench report "), done.stdout
    [run_dir] = (tmp_path / "out").iterdir()
    records = results.read_records(run_dir)
    assert [r["status"] for r in records] == ["ok", "ok"], [r.get("error") for r in records]
    assert (run_dir / results.LOG_DIR / f"{records[1]['cell_id']}.log").is_file()  # the later cell logged again
    assert not os.path.islink(run_dir / results.LOG_DIR)
