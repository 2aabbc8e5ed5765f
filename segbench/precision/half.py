"""fp16 and bf16 with the weights cast: what `model.half()` users deploy."""

from __future__ import annotations

import torch
from torch import nn

from segbench.backends.base import Runtime
from segbench.precision.base import Precision, PrecisionContext, cuda_capability
from segbench.system.env import cpu_flags

FP16_ON_CPU = "fp16 on a CPU is emulated or slow on most CPUs: impractical for deployment, shown for completeness"
NO_BF16_CPU = (
    "this CPU has no bf16 instructions (avx512_bf16 / amx_bf16): bf16 is emulated and usually far slower than fp32"
)


class FP16(Precision):
    name = "fp16"
    description = "weights and activations cast to float16"
    matmul_class = "fp16"
    input_dtype = torch.float16

    def notes(self, device: torch.device) -> list[str]:
        return [FP16_ON_CPU] if device.type == "cpu" else []

    def impractical_reason(self, device: torch.device, runtime: Runtime) -> str | None:
        # OpenVINO computes a cast model in its own inference precision; PyTorch's CPU kernels emulate fp16.
        return FP16_ON_CPU if device.type == "cpu" and runtime == "pytorch" else None

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        return model.half()


class BF16(Precision):
    name = "bf16"
    description = "weights and activations cast to bfloat16"
    matmul_class = "bf16"
    input_dtype = torch.bfloat16

    def notes(self, device: torch.device) -> list[str]:
        return [NO_BF16_CPU] if _emulated_bf16(device) else []

    def impractical_reason(self, device: torch.device, runtime: Runtime) -> str | None:
        return NO_BF16_CPU if _emulated_bf16(device) and runtime == "pytorch" else None

    def unsupported_reason(self, device: torch.device) -> str | None:
        capability = cuda_capability(device)
        if capability is not None and capability < (8, 0):
            return f"bf16 needs compute capability >= 8.0 (Ampere); this GPU is {capability[0]}.{capability[1]}"
        return None

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        return model.to(torch.bfloat16)


def _emulated_bf16(device: torch.device) -> bool:
    return device.type == "cpu" and not {"avx512_bf16", "amx_bf16"} & set(cpu_flags())
