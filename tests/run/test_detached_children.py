"""Issue 34, root cause 10 (last part): what a cell starts dies with the cell however it detaches. A process the
cell started in its own session (setsid after a double fork, so neither the cell's process group nor its parent
reaches it) outlived the run; the cell is now its subreaper and kills its descendants as it ends, and the runner
kills them when it kills the cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import psutil

from tests.helpers import FAST_TIMING, segbench

DAEMON_PLUGIN = """
import os, subprocess, sys, time
from pydantic import BaseModel, ConfigDict
from torch import nn
from segbench.models.base import InputConstraints, ModelCard, SegmentationAdapter
from segbench.models.registry import register


class DaemonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pid_file: str = ""
    hang: bool = False


DAEMON = (
    "import os, sys, time\\n"
    "if os.fork():\\n    os._exit(0)\\n"  # the intermediate exits: the daemon is an orphan
    "os.setsid()\\n"  # and in its own session and process group
    "open(sys.argv[1], 'w').write(str(os.getpid()))\\n"
    "time.sleep(3600)\\n"
)


class DaemonAdapter(SegmentationAdapter):
    constraints = InputConstraints(min_size=8)
    options_schema = DaemonOptions

    def build_module(self):
        subprocess.run([sys.executable, "-c", DAEMON, self.options.pid_file], check=True)
        while not (os.path.exists(self.options.pid_file) and os.path.getsize(self.options.pid_file)):
            time.sleep(0.01)  # the daemon writes its pid once it has detached
        return nn.Conv2d(3, 4, 1)

    def forward(self, inputs):
        if self.options.hang:
            time.sleep(3600)
        return super().forward(inputs)


register(ModelCard(name="test-daemon", family="test", variant="d", source="tests", num_classes=4,
                   dataset="synthetic"), DaemonAdapter)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_daemon_a_cell_starts_in_its_own_session_dies_with_the_cell(
    write_suite: Callable[..., Path], tmp_path: Path
) -> None:
    plugin = tmp_path / "daemons.py"
    plugin.write_text(DAEMON_PLUGIN)
    finishing, hanging = tmp_path / "finishing.pid", tmp_path / "hanging.pid"
    models: list[Any] = [
        {"name": "test-daemon", "options": {"pid_file": str(finishing)}},
        {"name": "test-daemon", "options": {"pid_file": str(hanging), "hang": True}},
    ]
    suite = write_suite(plugins=[str(plugin)], models=models, timing={**FAST_TIMING, "timeout_s": 15})
    done = segbench("run", str(suite), "--out", str(tmp_path / "out"), timeout=300)
    pids = [int(path.read_text()) for path in (finishing, hanging)]
    try:
        assert done.returncode == 1 and "(timeout)" in done.stdout, done.stdout + done.stderr
        alive = [pid for pid in pids if not _gone(pid)]
        assert not alive, f"daemons started by cells outlived them: {alive}"
    finally:
        for pid in pids:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
