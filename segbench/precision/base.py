"""The precision interface: apply a numeric format to a model, and say when a device cannot run it."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager, Literal

import torch
from torch import nn

from segbench.backends.base import Runtime


@dataclass(frozen=True)
class PrecisionContext:
    """Inputs a precision may need: an example batch (for export/tracing) and calibration batches.

    Both are preprocessed float32 tensors at the cell's shape on the cell's device; calibration
    batches come from real photographs (see `segbench.data.images`), the same ones fidelity uses.
    """

    example: torch.Tensor
    calibration: tuple[torch.Tensor, ...] = ()


MatmulClass = Literal["fp32", "tf32", "fp16", "bf16", "int8", "fp8"]


class Precision(ABC):
    """One numeric format. Subclasses live one per file and register themselves by `name`.

    `matmul_class` is the arithmetic its matmuls and convolutions actually run in (which peak and
    measured ceiling bound it): int8 weight-only dequantizes into fp32 matmuls, so it is fp32.
    `is_reference` marks the numerics every other precision is judged against (fp32).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    matmul_class: ClassVar[MatmulClass]
    is_reference: ClassVar[bool] = False
    input_dtype: ClassVar[torch.dtype] = torch.float32
    warm_imports: ClassVar[tuple[str, ...]] = ()  # what a warm template imports for this precision's cells
    # The runtimes that can run the converted model: a cast travels into an exported graph; a rewrite of the PyTorch
    # module (PT2E, torchao, autocast) does not; a runtime's own quantization runs only there; a library's pipeline
    # applies its own precision handling (fp32 in, so only fp32 lists it).
    runs_on: ClassVar[tuple[Runtime, ...]] = ("pytorch", "onnxruntime", "openvino")

    def unsupported_reason(self, device: torch.device) -> str | None:
        """Why this device cannot run the precision, or None when it can."""
        return None

    def impractical_reason(self, device: torch.device, runtime: Runtime) -> str | None:
        """Why this precision runs but is no deployment choice on this device and runtime (an emulated format), or
        None. `--all-paths` leaves such pairs out; a suite that names them runs them."""
        return None

    def notes(self, device: torch.device) -> list[str]:
        """Caveats worth recording next to the numbers (e.g. a format the device only emulates)."""
        return []

    @abstractmethod
    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        """Convert the model (in place where possible) and return the module to run."""

    def quantized_share(self, model: nn.Module) -> dict[str, Any] | None:
        """Share of parameters (and FLOPs, where known) the conversion actually changed; None for plain casts."""
        return None

    def autocast(self, device: torch.device) -> ContextManager[object]:
        """The context the forward pass runs in (autocast precisions override it)."""
        return contextlib.nullcontext()


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_capability(device)
