from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from segbench.precision.base import Precision, PrecisionContext


@contextlib.contextmanager
def true_fp32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN convolutions (PyTorch leaves cuDNN's on by default), restored on exit.

    The fidelity reference runs inside it, so a tf32 cell (which turns both on for the process) or any
    cell on PyTorch's defaults is judged against true fp32, not against TF32.
    """
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


class FP32(Precision):
    name = "fp32"
    description = "float32 weights and activations; TF32 tensor cores explicitly off (the reference)"
    matmul_class = "fp32"
    is_reference = True

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        # Explicit, because some builds enable TF32 by default and fp32 must mean fp32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return model.float()
