"""Issue 34, "decide and document": values the suite schema accepted though they meant something else. Each failed
on the old code (the value was accepted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from segbench.errors import SuiteError
from segbench.suite.schema import MAX_THREADS, load_suite
from tests.helpers import segbench


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_sizes": [True]}, r"batch_sizes\[0\]: Input should be a valid integer \(got True\)"),
        ({"timing": {"min_iters": True}}, r"timing.min_iters: Input should be a valid integer"),
        (
            {"models": [{"name": "test-tiny", "weights": ""}]},
            r"models\[0\].weights: empty weights; give a weights file",
        ),
        ({"threads": MAX_THREADS + 1}, rf"threads: Input should be less than or equal to {MAX_THREADS}"),
        ({"threads": True}, r"threads: Input should be a valid integer"),
    ],
    ids=["batch-true", "min-iters-true", "empty-weights", "threads-unbounded", "threads-true"],
)
def test_values_that_meant_something_else_are_one_line(
    write_suite: Callable[..., Path], fields: dict[str, Any], message: str
) -> None:
    """`batch_sizes: [true]` ran batch 1, `weights: ""` became the working directory, `threads:` had no bound."""
    with pytest.raises(SuiteError, match=rf"suite.yaml: {message}") as caught:
        load_suite(write_suite(**fields))
    assert "\n" not in str(caught.value)


def test_a_bool_override_on_the_command_line_is_refused(write_suite: Callable[..., Path]) -> None:
    """`-s batch_sizes=[true]` was accepted as batch 1."""
    done = segbench("run", str(write_suite()), "-s", "batch_sizes=[true]", "--dry-run")
    assert done.returncode == 2 and "batch_sizes[0]: Input should be a valid integer (got True)" in done.stderr
