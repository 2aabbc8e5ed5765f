"""Self-check: is the harness's timing as fast and as stable as a bare `inference_mode` loop?

In one process, the same model and input are timed alternately by the harness's timer and by a
bare loop. The ratio of medians shows the harness's overhead; the CV of the harness median over
the repeats shows its stability.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from segbench.cell.passes import synthetic_images
from segbench.device import is_gpu
from segbench.measure.timing import StopRule, synchronize, time_steps
from segbench.models.registry import create_model
from segbench.naming import REFERENCE_BACKEND, REFERENCE_PRECISION
from segbench.suite.matrix import CellSpec


@dataclass(frozen=True)
class SelfCheckReport:
    device: str
    harness_medians: list[float]
    bare_medians: list[float]

    @property
    def on_gpu(self) -> bool:
        return is_gpu(self.device)

    @property
    def ratio(self) -> float:
        return statistics.median(self.harness_medians) / statistics.median(self.bare_medians)

    @property
    def cv_of_median(self) -> float:
        return _cv(self.harness_medians)

    @property
    def bare_cv_of_median(self) -> float:
        """The bare loop's own stability: when it varies, the machine did, and no ratio can be trusted."""
        return _cv(self.bare_medians)

    @property
    def ratio_floor(self) -> float:
        """Below this the harness is 'faster' than a bare loop of the same calls: a broken measurement, not a win.

        The harness's latency pass is synchronous on every device (issue 27 item 1), as the bare loop is: both time
        the same calls with the same clock and a sync after each.
        """
        return 0.95

    @property
    def ratio_target(self) -> float:
        return 1.02 if self.on_gpu else 1.03

    @property
    def cv_target(self) -> float:
        return 0.02 if self.on_gpu else 0.05

    @property
    def failures(self) -> list[str]:
        """Each reason the check fails, in words; empty when it passes."""
        found = []
        if self.ratio > self.ratio_target:
            found.append(f"harness overhead: ratio {self.ratio:.4f} > {self.ratio_target}")
        if self.ratio < self.ratio_floor:
            found.append(
                f"broken measurement: ratio {self.ratio:.4f} < {self.ratio_floor} (the two timings of the same calls "
                "disagree)"
            )
        if self.cv_of_median > self.cv_target:
            found.append(
                f"harness unstable: CV of its median {self.cv_of_median * 100:.2f} % > {self.cv_target * 100:.0f} %"
            )
        if self.bare_cv_of_median > self.cv_target:
            found.append(
                f"machine unstable: CV of the bare loop's median {self.bare_cv_of_median * 100:.2f} % > "
                f"{self.cv_target * 100:.0f} % (rerun on a quiet machine)"
            )
        return found

    @property
    def passed(self) -> bool:
        return not self.failures


def _cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def bare_loop_median(model: torch.nn.Module, inputs: torch.Tensor, seconds: float, device: torch.device) -> float:
    """The simplest honest timing a user would write: perf_counter around each call, synchronised."""
    samples = []
    deadline = time.perf_counter() + seconds
    with torch.inference_mode():
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            model(inputs)
            synchronize(device)
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def run_selfcheck(model_name: str, resolution: int, repeats: int, seconds: float, device_name: str) -> SelfCheckReport:
    device = torch.device(device_name)
    adapter = create_model(model_name)
    model = adapter.build(device)
    cell = CellSpec(model_name, (resolution, resolution), 1, REFERENCE_PRECISION, REFERENCE_BACKEND)
    inputs = adapter.preprocess(synthetic_images(cell, device))
    rule = StopRule(min_iters=10, max_iters=100_000, min_time_s=seconds, max_time_s=seconds * 2)
    harness, bare = [], []
    with torch.inference_mode():
        # Warm up for as long as one timing lasts: allocator caches and clocks settle before the first repeat.
        warm_up_rule = StopRule(min_iters=5, max_iters=100_000, min_time_s=seconds, max_time_s=seconds * 2)
        time_steps(lambda: model(inputs), warm_up_rule, device)
        for _ in range(repeats):
            run = time_steps(lambda: adapter.forward(inputs), rule, device)
            harness.append(statistics.median(run.samples_ms))
            bare.append(bare_loop_median(model, inputs, seconds, device))
    return SelfCheckReport(device_name, harness, bare)
