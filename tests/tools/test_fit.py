"""Fit search: bisection over a fake cell runner whose memory need is a known function."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from segbench.tools.fit import SIDE_STEP, fit_search, isolated_runner, probe_timing

BUDGET_MB = 11_838.0


class FakeCell:
    """Memory need = weights + activations per pixel per image; 'oom' above the budget. Counts its runs."""

    def __init__(self, weights_mb: float = 500.0, mb_per_megapixel: float = 400.0, budget_mb: float = BUDGET_MB):
        self.weights_mb, self.mb_per_megapixel, self.budget_mb = weights_mb, mb_per_megapixel, budget_mb
        self.calls: list[tuple[int, int, int]] = []

    def need_mb(self, batch: int, height: int, width: int) -> float:
        return self.weights_mb + self.mb_per_megapixel * batch * height * width / 1e6

    def __call__(self, batch: int, height: int, width: int) -> str:
        self.calls.append((batch, height, width))
        return "ok" if self.need_mb(batch, height, width) <= self.budget_mb else "oom"

    def true_largest_batch(self, height: int, width: int, cap: int) -> int:
        return min(cap, math.floor((self.budget_mb - self.weights_mb) / (self.mb_per_megapixel * height * width / 1e6)))

    def true_largest_side(self, cap: int) -> int:
        side = math.sqrt((self.budget_mb - self.weights_mb) / self.mb_per_megapixel * 1e6)
        return min(cap, int(side // SIDE_STEP) * SIDE_STEP)


def test_finds_the_exact_largest_batch_and_side_with_few_probes() -> None:
    cell = FakeCell()
    resolutions = [(512, 512), (640, 640), (720, 1280), (1024, 2048)]
    table = fit_search(cell, resolutions, max_batch=256, max_side=8192)
    for row, (height, width) in zip(table.batches, resolutions):
        assert row.largest_batch == cell.true_largest_batch(height, width, 256)
        assert row.limited_by == "oom" and row.fits
    assert table.square is not None
    assert table.square.largest_side == cell.true_largest_side(8192) == 5312
    assert table.square.limited_by == "oom"
    assert table.probe_count == len(cell.calls) == len(set(cell.calls))  # each shape runs once
    assert (
        table.probe_count
        <= len(resolutions) * (2 * math.ceil(math.log2(256)) + 1) + 2 * math.ceil(math.log2(8192 // 32)) + 1
    )
    assert table.fits_anywhere


def test_a_batch_that_reaches_the_cap_says_so() -> None:
    table = fit_search(FakeCell(mb_per_megapixel=1.0), [(64, 64)], max_batch=100, max_side=256)
    assert (table.batches[0].largest_batch, table.batches[0].limited_by) == (100, "max_batch")
    assert (table.square.largest_side, table.square.limited_by) == (256, "max_side")


def test_side_search_goes_down_when_the_start_does_not_fit() -> None:
    cell = FakeCell(mb_per_megapixel=100_000.0)  # only ~340 px squares fit
    table = fit_search(cell, [], max_side=8192, start_side=512)
    assert table.square.largest_side == cell.true_largest_side(8192) == 320


def test_a_model_that_never_fits_is_reported_as_not_fitting() -> None:
    cell = FakeCell(weights_mb=20_000.0)  # weights alone exceed the budget
    table = fit_search(cell, [(512, 512), (1024, 1024)], max_batch=64)
    assert [(row.largest_batch, row.limited_by, row.fits) for row in table.batches] == [(0, "oom", False)] * 2
    assert table.square.largest_side == 0 and not table.square.fits
    assert not table.fits_anywhere
    assert table.to_dict()["batches"][0]["largest_batch"] == 0
    assert {batch for batch, _, _ in cell.calls} == {1}


def test_a_failure_other_than_oom_bounds_the_search_and_is_named() -> None:
    def run(batch: int, height: int, width: int) -> dict[str, Any]:
        if batch > 12:
            return {"status": "error", "error": "RuntimeError: cuDNN refused the shape"}
        return {"status": "ok"}

    row = fit_search(run, [(512, 512)], max_batch=64, square=False).batches[0]
    assert (row.largest_batch, row.limited_by, row.limit_error) == (
        12,
        "error",
        "RuntimeError: cuDNN refused the shape",
    )


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        fit_search(FakeCell(), [(512, 512)], max_batch=0)


def test_isolated_runner_builds_one_request_per_probe(tmp_path: Path) -> None:
    executed: list[tuple[Any, float, Any]] = []

    def execute(request: Any, timeout_s: float, log_path: Any) -> dict[str, Any]:
        executed.append((request, timeout_s, log_path))
        return {"status": "oom" if request["batch"] > 3 else "ok"}

    run = isolated_runner(lambda b, h, w: {"batch": b, "size": (h, w)}, 90.0, tmp_path, execute=execute)
    table = fit_search(run, [(256, 512)], max_batch=16, square=False)
    row = table.batches[0]
    assert (row.largest_batch, row.limited_by) == (3, "oom")
    assert table.to_dict()["device"] is None  # the CLI sets where the probes ran (system.env.device_identity)
    assert executed[0] == ({"batch": 1, "size": (256, 512)}, 90.0, tmp_path / "fit-b1-256x512.log")


def test_the_default_executor_is_segbench_isolation() -> None:
    from segbench.tools.fit import _default_execute

    assert _default_execute().__name__ == "execute_isolated"
    assert probe_timing(60).max_iters == 1
    assert probe_timing(60).warmup_s == 0.0  # a probe asks whether a shape fits: no second of pipeline warm-up each


def test_fit_says_what_the_budget_is_and_that_ort_arenas_see_it_too() -> None:
    """Issue 27 item 5: the budget is the card's total (occupied down to it), which ORT's arenas see as well."""
    from segbench.hardware import load_profile
    from segbench.tools.fit import budget_lines

    rtx3060 = load_profile("rtx3060")
    [budget, cpu_note, ort] = budget_lines(rtx3060, "onnxruntime", "cpu")
    assert budget.startswith("budget: the card's 12042 MiB total") and "driver-reported total 12042 MiB" in budget
    assert "host RAM" in cpu_note
    assert ort.startswith("onnxruntime: ONNX Runtime's own arenas") and "see the emulated free memory" in ort
    assert len(budget_lines(rtx3060, "eager", "cuda:0")) == 1
