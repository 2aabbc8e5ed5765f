"""The backend interface: turn a built adapter into the callable that the harness times."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Literal, TypeVar

import torch

from segbench.models.base import SegmentationAdapter

ForwardFn = Callable[[torch.Tensor], Any]


LatencyScope = Literal["forward", "end_to_end"]


ModuleClass = TypeVar("ModuleClass", bound=type)


def forward_runs_eagerly_under_compile(cls: ModuleClass) -> ModuleClass:
    """Class decorator: torch.compile runs this module's `forward` eagerly (a graph break around it).

    The same as decorating `forward` with `torch.compiler.disable`, but applied when the first instance is made:
    `torch.compiler.disable` imports dynamo (1.5 s), and every `segbench run` defines these classes (listing the
    registries to check the suite's names) without making one.
    """
    make = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not cls.__dict__.get("_forward_compile_disabled", False):
            cls.forward = torch.compiler.disable(cls.__dict__["forward"])
            cls._forward_compile_disabled = True
        make(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


Runtime = Literal["pytorch", "onnxruntime", "openvino", "pipeline"]


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
    # What executes the model: PyTorch itself, an exported graph in another runtime, or a library's own pipeline. A
    # precision names the runtimes it can run on (`Precision.runs_on`), so a pair is judged before anything is built.
    runtime: ClassVar[Runtime] = "pytorch"

    def unsupported_reason(self, device: torch.device) -> str | None:
        return None

    def precision_reason(self, dtype: torch.dtype, device: torch.device) -> str | None:
        """Why this backend cannot run a model cast to `dtype` on this device (known before any model is built)."""
        return None

    def wrap(self, adapter: SegmentationAdapter) -> SegmentationAdapter:
        """The adapter whose three stages the harness times; pipeline backends substitute their library's own."""
        return adapter

    def describe(self, adapter: SegmentationAdapter) -> dict[str, Any] | None:
        """What the backend did that a reader should know (threads a library chose, its own stage timings)."""
        return None

    profiling: bool = False  # set by the cell when a profile pass follows: a backend keeps what it will need

    def profile_source(self) -> dict[str, Any] | None:
        """What the profile pass needs to profile this backend's graph with its runtime's own profiler (the ONNX file,
        the compiled OpenVINO model), or None: a PyTorch backend is profiled by torch.profiler around its forward."""
        return None

    @abstractmethod
    def prepare(self, adapter: SegmentationAdapter, example: torch.Tensor) -> ForwardFn:
        """Return the forward callable. Its cost (compile, export) is recorded as prepare_s, never as latency."""
