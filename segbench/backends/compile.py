from __future__ import annotations

import torch

from segbench.backends.base import Backend, ForwardFn
from segbench.models.base import SegmentationAdapter


class Compile(Backend):
    name = "compile"
    description = "torch.compile (inductor, default mode); compile time is recorded as prepare_s"
    warm_imports = ("torch._inductor.compile_fx",)

    def prepare(self, adapter: SegmentationAdapter, example: torch.Tensor) -> ForwardFn:
        assert adapter.model is not None
        adapter.model = torch.compile(adapter.model)
        adapter.forward(example)  # triggers compilation inside prepare, not inside the timed loop
        return adapter.forward
