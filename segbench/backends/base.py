"""The backend interface: turn a built adapter into the callable that the harness times."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Literal

import torch

from segbench.models.base import SegmentationAdapter

ForwardFn = Callable[[torch.Tensor], Any]


LatencyScope = Literal["forward", "end_to_end"]


class Backend(ABC):
    """How a cell's model runs. `is_reference` marks the backend fidelity and speed-ups are judged against (eager);
    `latency_scope` says what its timed forward covers: the model alone, or (pipelines) the whole library call."""

    name: ClassVar[str]
    description: ClassVar[str]
    # Memory this backend allocates outside PyTorch's caching allocator, which a budget cap cannot limit; None if none.
    memory_outside_torch: ClassVar[str | None] = None
    warm_imports: ClassVar[tuple[str, ...]] = ()  # what a warm template imports for this backend's cells
    is_reference: ClassVar[bool] = False
    latency_scope: ClassVar[LatencyScope] = "forward"

    def unsupported_reason(self, device: torch.device) -> str | None:
        return None

    def wrap(self, adapter: SegmentationAdapter) -> SegmentationAdapter:
        """The adapter whose three stages the harness times; pipeline backends substitute their library's own."""
        return adapter

    def describe(self, adapter: SegmentationAdapter) -> dict[str, Any] | None:
        """What the backend did that a reader should know (threads a library chose, its own stage timings)."""
        return None

    @abstractmethod
    def prepare(self, adapter: SegmentationAdapter, example: torch.Tensor) -> ForwardFn:
        """Return the forward callable. Its cost (compile, export) is recorded as prepare_s, never as latency."""
