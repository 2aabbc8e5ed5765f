"""Automatic mixed precision: fp32 weights, with torch.autocast running matmuls and convolutions in fp16/bf16.

Unlike fp16/bf16 (weights cast), autocast keeps precision-sensitive ops (softmax, norms, losses) in
fp32 and casts per op, which is what `torch.autocast` training and inference code deploys.
On CPUs torch autocasts to both dtypes, but only CPUs with avx512_fp16/amx_fp16 (fp16) or
avx512_bf16/amx_bf16 (bf16) compute them natively; elsewhere the casts and emulated kernels make
it slower than fp32, and the cell says so.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ContextManager

import torch
from torch import nn

from segbench.backends.base import Runtime
from segbench.precision.base import Precision, PrecisionContext, cuda_capability
from segbench.system.env import cpu_flags


def _cpu_flags() -> set[str]:
    return set(cpu_flags())


class _Autocast(Precision):
    """fp32 model, forward pass under torch.autocast(dtype)."""

    runs_on = ("pytorch",)  # autocast is a PyTorch runtime feature an exported graph does not carry

    native_cpu_flags: frozenset[str]

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """The dtype autocast runs eligible ops in."""

    def unsupported_reason(self, device: torch.device) -> str | None:
        if not torch.amp.is_autocast_available(device.type):
            return f"torch has no autocast for device type {device.type!r}"
        return None

    def _emulated_reason(self, device: torch.device) -> str | None:
        if device.type == "cpu" and not self.native_cpu_flags & _cpu_flags():
            flags = " / ".join(sorted(self.native_cpu_flags))
            return (
                f"this CPU has no {flags}: autocast to {self.dtype} is emulated and slower than fp32 (impractical for "
                "deployment, shown for completeness)"
            )
        return None

    def notes(self, device: torch.device) -> list[str]:
        reason = self._emulated_reason(device)
        return [reason] if reason else []

    def impractical_reason(self, device: torch.device, runtime: Runtime) -> str | None:
        return self._emulated_reason(device)  # autocast runs only on PyTorch, whose CPU kernels emulate it

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        return model.float()

    def autocast(self, device: torch.device) -> ContextManager[object]:
        return torch.autocast(device_type=device.type, dtype=self.dtype)


class AmpFP16(_Autocast):
    name = "amp-fp16"
    description = "fp32 weights, torch.autocast to float16 (matmuls and convolutions in fp16, the rest fp32)"
    matmul_class = "fp16"
    native_cpu_flags = frozenset({"avx512_fp16", "amx_fp16"})

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16


class AmpBF16(_Autocast):
    name = "amp-bf16"
    description = "fp32 weights, torch.autocast to bfloat16 (matmuls and convolutions in bf16, the rest fp32)"
    matmul_class = "bf16"
    native_cpu_flags = frozenset({"avx512_bf16", "amx_bf16"})

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16

    def unsupported_reason(self, device: torch.device) -> str | None:
        capability = cuda_capability(device)
        if capability is not None and capability < (8, 0):
            return (
                f"bf16 autocast needs compute capability >= 8.0 (Ampere); this GPU is {capability[0]}.{capability[1]}"
            )
        return super().unsupported_reason(device)
