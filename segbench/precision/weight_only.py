"""Weight-only quantization through torchao `quantize_`: int8 (per channel) and int4 (groups of 128).

Weight-only configs store nn.Linear weights in int8/int4 and dequantize them inside the matmul;
activations stay in floating point. They convert nn.Linear layers only, so a conv network has
nothing to convert and its cell is `unsupported` rather than a speed-up from nothing.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from segbench.errors import UnsupportedError
from segbench.precision.base import Precision, PrecisionContext
from segbench.precision.int8 import (
    LayerCensus,
    converted_by_torchao,
    recall_share,
    remember_share,
    require_linear_layers,
)

INT4_GROUP_SIZE = 128


class _WeightOnly(Precision):
    """The shared flow: census, refuse conv-only models, quantize_ the Linear layers, record the share."""

    runs_on = ("pytorch",)  # torchao tensor subclasses neither export to ONNX nor convert to OpenVINO

    warm_imports = ("torchao.quantization",)

    def quantized_share(self, model: nn.Module) -> dict[str, Any] | None:
        return recall_share(model)

    @abstractmethod
    def config(self) -> Any:
        """The torchao config to hand quantize_."""

    def accepts(self, module: nn.Module, name: str) -> bool:
        """quantize_'s filter: which layers this format can convert (torchao's default: every nn.Linear)."""
        return isinstance(module, nn.Linear)

    def cast(self, model: nn.Module) -> nn.Module:
        return model.float()

    def apply(self, model: nn.Module, device: torch.device, context: PrecisionContext) -> nn.Module:
        from torchao.quantization import quantize_

        model = self.cast(model)
        census = LayerCensus.of(model, context.example.to(self.input_dtype))
        require_linear_layers(self.name, census)
        quantize_(model, self.config(), filter_fn=self.accepts)
        share = census.share(converted_by_torchao(model))
        if not share["params"]:
            raise UnsupportedError(
                f"{self.name} converted none of this model's Linear layers (their shapes do not fit the format)"
            )
        remember_share(model, share)
        return model


class Int8WeightOnly(_WeightOnly):
    name = "int8-wo"
    description = "torchao int8 weight-only (nn.Linear weights per channel; activations in fp32)"
    matmul_class = "fp32"

    def config(self) -> Any:
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


class Int4WeightOnly(_WeightOnly):
    name = "int4-wo"
    description = (
        f"torchao int4 weight-only (nn.Linear weights in groups of {INT4_GROUP_SIZE}, tinygemm kernel; bf16 "
        "activations)"
    )
    matmul_class = "bf16"
    input_dtype = torch.bfloat16  # the tinygemm int4 kernel takes bf16 activations

    def unsupported_reason(self, device: torch.device) -> str | None:
        if device.type != "cuda":
            # Checked against torchao 0.18: plain/preshuffled need the mslk CUDA kernels, plain_int32 is XPU/NPU only,
            # tile_packed_to_4d is CUDA tinygemm; IntxWeightOnlyConfig(int4) runs on a CPU but only unpacks to int8.
            return (
                "torchao's int4 weight-only kernels are CUDA-only (no int4 packing format of Int4WeightOnlyConfig "
                "runs on a CPU)"
            )
        return None

    def config(self) -> Any:
        from torchao.quantization import Int4WeightOnlyConfig

        return Int4WeightOnlyConfig(group_size=INT4_GROUP_SIZE, int4_packing_format="tile_packed_to_4d")

    def accepts(self, module: nn.Module, name: str) -> bool:
        # The tinygemm layout needs the input dim in whole groups and the output dim in tiles of 8.
        return (
            isinstance(module, nn.Linear) and module.in_features % INT4_GROUP_SIZE == 0 and module.out_features % 8 == 0
        )

    def cast(self, model: nn.Module) -> nn.Module:
        return model.to(torch.bfloat16)
