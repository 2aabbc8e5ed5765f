"""A test plugin for the capacity scenario: a model whose service time is known, so arithmetic predicts N.

`test-paced` sleeps `base_ms` per call plus `per_extra_ms` per frame beyond the first in a batch (time.sleep releases
the GIL, so replicas overlap as separate devices would); its network is negligible. `ballast_mb` adds a buffer of
that size to the model, for the memory-budget tests.
"""

from __future__ import annotations

import time

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from segbench.models.base import InputConstraints, ModelCard, SegmentationAdapter
from segbench.models.registry import register


class PacedNet(nn.Module):
    def __init__(self, num_classes: int, ballast_mb: int):
        super().__init__()
        self.head = nn.Conv2d(3, num_classes, 1)
        self.register_buffer("ballast", torch.ones(ballast_mb * 2**18) if ballast_mb else torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class PacedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_ms: float = 10.0
    per_extra_ms: float = 2.0
    ballast_mb: int = 0


class PacedAdapter(SegmentationAdapter):
    constraints = InputConstraints(min_size=8)
    options_schema = PacedOptions

    def build_module(self) -> nn.Module:
        return PacedNet(self.card.num_classes, self.options.ballast_mb)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        time.sleep((self.options.base_ms + self.options.per_extra_ms * (inputs.shape[0] - 1)) / 1000)
        return super().forward(inputs)


register(
    ModelCard(name="test-paced", family="test", variant="paced", source="tests", num_classes=4, dataset="synthetic"),
    PacedAdapter,
)
