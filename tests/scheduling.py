"""How the test suite shares a machine under pytest-xdist: how many workers, which tests stay together, which start
first, and the lock that lets a test marked `alone` run with nothing beside it. Loaded by conftest.py."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator

import pytest

MAX_WORKERS = 4  # `-n auto` beyond this oversubscribes: every cell process already runs one thread per core


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def _uses_a_module_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a fixture its module builds once (a run, a Ray cluster, a browser)."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    return any(definition.scope == "module" for defs in definitions for definition in defs)


# A Ray cluster's runs; the quantized cells (minutes each).
LONGEST_GROUPS = ("tests.run.test_ray", "tests.precision.test_precision")


def _start_order(item: pytest.Item) -> int:
    group = item.get_closest_marker("xdist_group")
    if group is None:
        return len(LONGEST_GROUPS) + 1
    name = group.args[0] if group.args else group.kwargs.get("name")
    return LONGEST_GROUPS.index(name) if name in LONGEST_GROUPS else len(LONGEST_GROUPS)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into each test's id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # Under `--dist loadgroup` a module's tests that share a module-scoped fixture run on one worker, so the
        # fixture (a real run, a Ray cluster, a browser: tens of seconds) is built once, not once per worker.
        if _uses_a_module_fixture(item) and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))
    # On xdist workers, longest first (with --no-loadscope-reorder): the longest groups, then the other groups, then
    # single tests, so no long group starts late and becomes the run's tail while the other workers sit idle. A serial
    # run keeps the files' order.
    if getattr(config.option, "numprocesses", None):
        items.sort(key=_start_order)


@contextmanager
def _machine_share(item: pytest.Item) -> Iterator[None]:
    """Hold the machine shared with other workers' tests, or alone for a test marked `alone`.

    A reader-writer lock across xdist workers: every test holds the main lock shared; an `alone` test holds it
    exclusive, so it starts once the other workers' current tests end and none starts until it is done. The
    gate (taken briefly by every test, held by a waiting `alone` test) keeps a stream of shared tests from
    starving it. Without xdist the run is serial already and nothing is locked.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    folder = item.config._tmp_path_factory.getbasetemp().parent  # shared by this run's workers
    alone = item.get_closest_marker("alone") is not None
    with open(folder / "segbench-alone.gate", "a") as gate, open(folder / "segbench-alone.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    with _machine_share(item):  # around setup too: a module fixture that times a run is built in its first test
        yield
