"""A plugin of test models that hand back what a plugin author might (issue 34): numpy and tensor counts, a count
that is no integer at all, and a cell that deletes its run's logs/ folder while it runs.

Suites in the tests name this file under `plugins:` (beside `tests/fault_models.py`), so the cell's process imports
it, exactly as a user's plugin.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy
import torch
from torch import nn

from segbench.models.base import InputConstraints, ModelCard, SegmentationAdapter
from segbench.models.registry import register


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.body = nn.Conv2d(3, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class HostileAdapter(SegmentationAdapter):
    constraints = InputConstraints(min_size=8)

    def build_module(self) -> nn.Module:
        return TinyNet(self.card.num_classes)


class TensorCountAdapter(HostileAdapter):
    """detections() as a 0-d tensor: sent as it was, it crossed the pipe as a handle that died with the cell."""

    def detections(self, outputs: Any) -> Any:
        return torch.tensor(3)


class NumpyCountAdapter(HostileAdapter):
    """detections() as numpy.int64: stored as it was, the record held "3" and the folder could not be read."""

    def detections(self, outputs: Any) -> Any:
        return numpy.int64(3)


class FractionCountAdapter(HostileAdapter):
    """detections() that is no count at all: the record schema refuses it, so the cell is an error."""

    def detections(self, outputs: Any) -> Any:
        return 2.5


class LogDeletingAdapter(HostileAdapter):
    """Deletes the folder its own log is in (fd 1 is that log), as a clean-up job or log rotation would mid-run."""

    def build_module(self) -> nn.Module:
        log = os.readlink(f"/proc/{os.getpid()}/fd/1")
        if log.endswith(".log"):
            shutil.rmtree(os.path.dirname(log))
        return super().build_module()


def _card(name: str) -> ModelCard:
    return ModelCard(name=name, family="test", variant=name, source="tests", num_classes=4, dataset="synthetic")


for _name, _adapter in {
    "hostile-tensor-count": TensorCountAdapter,
    "hostile-numpy-count": NumpyCountAdapter,
    "hostile-fraction-count": FractionCountAdapter,
    "hostile-log-deleter": LogDeletingAdapter,
}.items():
    register(_card(_name), _adapter)
