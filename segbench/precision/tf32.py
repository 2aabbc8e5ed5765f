from __future__ import annotations

import torch
from torch import nn

from segbench.precision.base import Precision, PrecisionContext, cuda_capability


class TF32(Precision):
    name = "tf32"
    description = "float32 tensors, matmuls and convolutions on TF32 tensor cores (Ampere and newer)"
    matmul_class = "tf32"
    runs_on = ("pytorch",)  # a PyTorch flag: an exported graph does not carry it

    def unsupported_reason(self, device: torch.device) -> str | None:
        capability = cuda_capability(device)
        if capability is None:
            return "tf32 needs an NVIDIA GPU (tensor cores); this cell runs on the CPU"
        if capability < (8, 0):
            return f"tf32 needs compute capability >= 8.0 (Ampere); this GPU is {capability[0]}.{capability[1]}"
        return None

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return model.float()
