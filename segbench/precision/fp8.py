"""fp8 through torchao float8: dynamic float8 (e4m3) activations and weights, per tensor.

Float8 matmuls need the fp8 tensor cores of compute capability 8.9+ (Ada, Hopper, Blackwell). Per
tensor scaling is used because it is the granularity torchao's float8 config also accepts for
convolution weights, so conv layers with channel counts in multiples of 16 are converted as well as
nn.Linear; depthwise and odd-sized layers stay in bf16 and the quantized share says how much that is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segbench.errors import UnsupportedError
from segbench.precision.base import Precision, PrecisionContext, cuda_capability
from segbench.precision.int8 import LayerCensus, converted_by_torchao, recall_share, remember_share

FP8_CAPABILITY = (8, 9)


def fp8_convertible(module: nn.Module, name: str) -> bool:
    """Layers torchao's float8 config converts: Linear, and dense conv2d/3d with 16-aligned channel counts."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        return module.groups == 1 and module.in_channels % 16 == 0 and module.out_channels % 16 == 0
    return False


class FP8(Precision):
    name = "fp8"
    warm_imports = ("torchao.quantization",)
    description = (
        "torchao float8 dynamic activations and weights (e4m3, per tensor), bf16 elsewhere; CUDA capability >= 8.9"
    )
    matmul_class = "fp8"
    runs_on = ("pytorch",)
    input_dtype = torch.bfloat16

    def unsupported_reason(self, device: torch.device) -> str | None:
        capability = cuda_capability(device)
        if capability is None:
            return (
                "fp8 (torchao float8) needs an NVIDIA GPU with compute capability >= 8.9 (Ada/Hopper); this cell "
                "runs on the CPU"
            )
        if capability < FP8_CAPABILITY:
            return (
                "fp8 needs compute capability >= 8.9 (Ada/Hopper float8 tensor cores); this GPU is "
                f"{capability[0]}.{capability[1]}"
            )
        return None

    def quantized_share(self, model: nn.Module) -> dict[str, Any] | None:
        return recall_share(model)

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerTensor, quantize_

        model = model.to(torch.bfloat16)
        census = LayerCensus.of(model, context.example.to(torch.bfloat16))
        quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerTensor()), filter_fn=fp8_convertible)
        share = census.share(converted_by_torchao(model))
        if not share["params"]:
            raise UnsupportedError(
                "fp8 converted no layer of this model (float8 needs Linear or dense convs with channels in multiples "
                "of 16)"
            )
        remember_share(model, share)
        return model
