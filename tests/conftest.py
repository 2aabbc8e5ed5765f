from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

from tests.helpers import FAST_TIMING, FAULT_PLUGIN

pytest_plugins = ["tests.scheduling"]  # xdist workers, groups, start order and the `alone` lock


# One prepare cache for the session, never the user's: tests that export or compile the same graph reuse it
# (set at import, so CLI subprocesses and cells inherit it). Tests of the cache itself point elsewhere.
SESSION_CACHE = tempfile.mkdtemp(prefix="segbench-test-cache-")
os.environ["SEGBENCH_CACHE_DIR"] = SESSION_CACHE
os.environ.pop("SEGBENCH_NO_CACHE", None)



def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU; this machine has none (run these where CUDA exists: pytest -m gpu)"
    )
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not `in item.keywords`: that also matches a folder named gpu
            item.add_marker(skip)


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    """Write a suite YAML into tmp_path; fields override a small valid CPU suite of test models."""

    def write(filename: str = "suite.yaml", **fields: Any) -> Path:
        data: dict[str, Any] = {
            "name": "t",
            "device": "cpu",
            "plugins": [FAULT_PLUGIN],
            "models": ["test-tiny"],
            "resolutions": [16],
            "timing": FAST_TIMING,
            "roofline": {"measure_ceiling": False},  # a 4 s measurement per run; its own tests cover it
        }
        data.update(fields)
        path = tmp_path / filename
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
