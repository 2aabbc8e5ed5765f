from __future__ import annotations

import torch

from segbench.backends.base import Backend, ForwardFn
from segbench.models.base import SegmentationAdapter
from segbench.naming import REFERENCE_BACKEND


class Eager(Backend):
    name = REFERENCE_BACKEND
    description = "plain PyTorch eager execution"
    is_reference = True

    def prepare(self, adapter: SegmentationAdapter, example: torch.Tensor) -> ForwardFn:
        return adapter.forward
