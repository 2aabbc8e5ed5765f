"""Issue 34, root cause 10: plugins cannot hang or confuse segbench. Each test names the defect it guards; each failed
on the old code (a traceback, a silently skipped plugin, an escaped BaseException, a command that never exited)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import segbench

ADAPTER = """
from torch import nn
from segbench.models.base import ModelCard, SegmentationAdapter
from segbench.models.registry import register


class Adapter(SegmentationAdapter):
    def build_module(self) -> nn.Module:
        return nn.Conv2d(3, 2, 1)


def card(name: str) -> ModelCard:
    return ModelCard(name=name, family="plug", variant=name, source="plug", num_classes=2, dataset="none")
"""


def _plugin(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def _one_line_error(done: object, *parts: str) -> None:
    stderr: str = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 2, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert all(part in stderr for part in parts), stderr


def test_registering_a_built_in_name_is_one_line(tmp_path: Path) -> None:
    """A plugin registering `fast-scnn` raised ValueError "registered twice" as a traceback when the families loaded."""
    plugin = _plugin(tmp_path / "clash.py", ADAPTER + "register(card('fast-scnn'), Adapter)\n")
    done = segbench("models", "--plugin", str(plugin))
    _one_line_error(done, "clash.py", "'fast-scnn' is already registered", "another name")


def test_two_plugin_files_with_the_same_file_name_both_register(tmp_path: Path) -> None:
    """a/models.py and b/models.py shared the module key `segbench_plugin_models`: the second was silently skipped."""
    first = _plugin(tmp_path / "a/models.py", ADAPTER + "register(card('plug-a'), Adapter)\n")
    second = _plugin(tmp_path / "b/models.py", ADAPTER + "register(card('plug-b'), Adapter)\n")
    done = segbench("models", "plug-*", "--plugin", str(first), "--plugin", str(second))
    assert done.returncode == 0, done.stderr
    assert "plug-a" in done.stdout and "plug-b" in done.stdout


def test_a_base_exception_subclass_from_a_plugin_is_one_line(tmp_path: Path, write_suite: object) -> None:
    """`class Boom(BaseException)` raised while importing escaped every `except Exception` as a traceback."""
    plugin = _plugin(tmp_path / "boom.py", "class Boom(BaseException):\n    pass\n\n\nraise Boom('kaboom')\n")
    _one_line_error(segbench("models", "--plugin", str(plugin)), "boom.py", "Boom: kaboom")
    suite = write_suite(plugins=[str(plugin)])  # type: ignore[operator]
    _one_line_error(segbench("run", str(suite), "--dry-run"), "boom.py", "Boom: kaboom")


THREAD = "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), name='plugin-poller').start()\n"


def test_a_plugins_non_daemon_thread_does_not_keep_segbench_alive(tmp_path: Path, write_suite: object) -> None:
    """A plugin's non-daemon thread kept `segbench models` and `segbench run` waiting at exit forever."""
    plugin = _plugin(tmp_path / "poller.py", THREAD)
    listed = segbench("models", "fast-*", "--plugin", str(plugin), timeout=120)
    assert listed.returncode == 0 and "fast-scnn" in listed.stdout, listed.stderr
    assert "1 thread(s) a plugin or library started are still running (plugin-poller)" in listed.stderr
    from tests.helpers import FAULT_PLUGIN

    suite = write_suite(plugins=[FAULT_PLUGIN, str(plugin)])  # type: ignore[operator]
    ran = segbench("run", str(suite), "--out", str(tmp_path / "runs"), timeout=240)
    assert ran.returncode == 0, ran.stderr
    assert "still running (plugin-poller)" in ran.stderr
