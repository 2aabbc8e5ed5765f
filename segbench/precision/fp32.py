from __future__ import annotations

import torch
from torch import nn

from segbench.naming import REFERENCE_PRECISION
from segbench.precision.base import Precision, PrecisionContext


class FP32(Precision):
    name = REFERENCE_PRECISION
    description = "float32 weights and activations; TF32 tensor cores explicitly off (the reference)"
    matmul_class = "fp32"
    is_reference = True
    runs_on = ("pytorch", "onnxruntime", "openvino", "pipeline")

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        # Explicit, because some builds enable TF32 by default and fp32 must mean fp32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return model.float()
