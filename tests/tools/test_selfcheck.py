"""selfcheck judges its own measurement: an unstable bare loop or a ratio far below 1 fails it (exit 1)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from segbench.cli.main import app
from segbench.tools.selfcheck import SelfCheckReport

HARNESS = [19.96, 19.98, 20.01, 19.97, 19.99]
BROKEN_BARE = [19.98, 1263.9, 1263.9, 1270.2, 1251.4]  # the bare loop went from 19.98 ms to 1263.9 ms mid-check


def test_a_bare_loop_that_jumps_fails_as_unstable_and_broken() -> None:
    report = SelfCheckReport("cpu", HARNESS, BROKEN_BARE)
    assert report.ratio < 0.02 and report.cv_of_median < report.cv_target  # what used to pass
    assert not report.passed
    assert any(line.startswith("broken measurement: ratio 0.0158") for line in report.failures)
    assert any(line.startswith("machine unstable") for line in report.failures)


def test_a_steady_check_passes() -> None:
    report = SelfCheckReport("cpu", HARNESS, [19.9, 19.95, 19.97, 19.92, 19.94])
    assert report.passed and report.failures == []


def test_the_cli_exits_1_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import segbench.tools.selfcheck

    monkeypatch.setattr(
        segbench.tools.selfcheck, "run_selfcheck", lambda *args: SelfCheckReport("cpu", HARNESS, BROKEN_BARE)
    )
    result = CliRunner().invoke(app, ["selfcheck", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "FAIL: broken measurement" in result.stdout and "FAIL: machine unstable" in result.stdout
