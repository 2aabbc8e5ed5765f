"""The suite's `profile` field: `true` takes the defaults, a mapping sets the forwards, a bad value is one line; it
reaches the cell's request and back."""

from __future__ import annotations

from typing import Any

import pytest

from segbench.cell.request import CellRequest
from segbench.errors import SuiteError
from segbench.suite.matrix import expand
from segbench.suite.schema import apply_overrides, parse_suite

BASE: dict[str, Any] = {"name": "p", "models": ["fast-scnn"], "resolutions": [64], "device": "cpu"}


def test_true_takes_the_defaults_false_or_absent_means_no_profile() -> None:
    assert parse_suite({**BASE, "profile": True}, "s.yaml").profile.iters == 10
    assert parse_suite({**BASE, "profile": False}, "s.yaml").profile is None
    assert parse_suite(BASE, "s.yaml").profile is None
    assert parse_suite({**BASE, "profile": {"iters": 3}}, "s.yaml").profile.iters == 3
    assert parse_suite(apply_overrides(BASE, ["profile=true"]), "s.yaml").profile is not None  # what --profile sets


def test_a_bad_profile_value_names_the_field() -> None:
    with pytest.raises(SuiteError, match="profile.iters"):
        parse_suite({**BASE, "profile": {"iters": 0}}, "s.yaml")
    with pytest.raises(SuiteError, match="profile"):
        parse_suite({**BASE, "profile": {"iter": 5}}, "s.yaml")


def test_the_profile_reaches_the_cell_request_and_back() -> None:
    suite = parse_suite({**BASE, "profile": {"iters": 4}}, "s.yaml")
    (cell,) = expand(suite)
    request = CellRequest(cell, "cpu", suite.timing, 10.0, None, profile=suite.profile)
    assert CellRequest.from_dict(request.to_dict()).profile.iters == 4
    assert CellRequest.from_dict(CellRequest(cell, "cpu", suite.timing, 10.0, None).to_dict()).profile is None
