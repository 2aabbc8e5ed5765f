"""What pipeline backends share: an adapter whose stages are a library's own convenience API."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segbench.errors import UnsupportedError
from segbench.models.base import SegmentationAdapter


class PipelineAdapter(SegmentationAdapter):
    """Wraps a built adapter; preprocess hands host images to the library, forward is the library call.

    The pipeline does its own resizing, normalisation and postprocessing inside `forward`, so the
    harness's forward latency here is the price of the convenient API, end to end.
    """

    def __init__(self, inner: SegmentationAdapter):
        if inner.input_dtype != torch.float32:
            raise UnsupportedError("pipeline backends apply their library's own precision handling; use precision fp32")
        self.inner = inner
        self.card, self.weights, self.options = inner.card, inner.weights, inner.options
        self.num_classes, self.class_names = inner.num_classes, inner.class_names
        self.model, self.device, self.input_dtype = inner.model, inner.device, inner.input_dtype
        self.constraints = inner.constraints

    def build_module(self) -> torch.nn.Module:  # never called: the inner adapter is built already
        raise NotImplementedError

    def model_input_size(self, height: int, width: int) -> tuple[int, int]:
        return self.inner.model_input_size(height, width)

    def preprocess(self, images: torch.Tensor) -> list[np.ndarray]:  # type: ignore[override]
        return [image.numpy() for image in images.cpu()]

    def logits(self, outputs: Any) -> torch.Tensor:
        raise NotImplementedError("pipelines return masks, not class scores")

    def parameter_count(self) -> int:
        return self.inner.parameter_count()
