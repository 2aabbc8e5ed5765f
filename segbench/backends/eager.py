from __future__ import annotations

import torch

from segbench.backends.base import Backend, ForwardFn
from segbench.models.base import SegmentationAdapter


class Eager(Backend):
    name = "eager"
    description = "plain PyTorch eager execution"
    is_reference = True

    def prepare(self, adapter: SegmentationAdapter, example: torch.Tensor) -> ForwardFn:
        return adapter.forward
