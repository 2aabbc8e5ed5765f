"""channels_last (NHWC) variants of the PyTorch backends: `eager-cl` and `compile-cl`.

Convolution libraries (oneDNN on CPUs, cuDNN on tensor cores) prefer NHWC; converting the weights
and the inputs once lets every conv skip the layout reorders. The wrapper converts the model, makes
the adapter's preprocess emit channels_last inputs (so the stage pass measures a pipeline that
produces them directly), then delegates to the wrapped backend.
"""

from __future__ import annotations

import types
from abc import abstractmethod
from typing import Any

import torch

from segbench.backends.base import Backend, ForwardFn
from segbench.backends.compile import Compile
from segbench.backends.eager import Eager
from segbench.models.base import SegmentationAdapter

NHWC = torch.channels_last


def _channels_last_memory_format(self: SegmentationAdapter) -> torch.memory_format:
    return NHWC


def as_channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """NHWC when the tensor is an image batch; a no-op copy-free when it already is."""
    return tensor.contiguous(memory_format=NHWC) if tensor.dim() == 4 else tensor


class _ChannelsLast(Backend):
    """Wraps another backend; subclasses name which."""

    @property
    @abstractmethod
    def inner(self) -> Backend:
        """The backend that runs the converted model."""

    def unsupported_reason(self, device: torch.device) -> str | None:
        return self.inner.unsupported_reason(device)

    def describe(self, adapter: SegmentationAdapter) -> dict[str, Any] | None:
        return {"memory_format": "channels_last", "wraps": self.inner.name, **(self.inner.describe(adapter) or {})}

    def prepare(self, adapter: SegmentationAdapter, example: torch.Tensor) -> ForwardFn:
        assert adapter.model is not None
        adapter.model = adapter.model.to(memory_format=NHWC)
        # From now on preprocess hands the model NHWC batches, as a channels_last pipeline would.
        adapter.memory_format = types.MethodType(_channels_last_memory_format, adapter)  # type: ignore[method-assign]
        forward = self.inner.prepare(adapter, as_channels_last(example))

        def channels_last_forward(inputs: torch.Tensor) -> Any:
            # The harness made its timed input before prepare; converting it here costs nothing once it is NHWC.
            return forward(as_channels_last(inputs))

        return channels_last_forward


class EagerChannelsLast(_ChannelsLast):
    name = "eager-cl"
    description = "plain PyTorch eager execution, model and inputs in channels_last (NHWC)"
    inner = Eager()


class CompileChannelsLast(_ChannelsLast):
    name = "compile-cl"
    description = "torch.compile (inductor) with model and inputs in channels_last (NHWC); compile time is prepare_s"
    inner = Compile()
    warm_imports = Compile.warm_imports
