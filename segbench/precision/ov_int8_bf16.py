"""ov-int8-bf16: NNCF int8 where it quantized, bf16 for the layers it left in float (backend openvino only).

What OpenVINO's CPU plugin does with an int8 model when nobody sets its inference precision, on a CPU
that computes bf16 natively (avx512_bf16 or AMX): the quantized convolutions run int8 kernels and the
float remainder (the detection head ultralytics' recipe keeps in float, SiLU, concat, upsample) runs in
bf16 instead of f32. `ov-int8` keeps the remainder in f32, true to its float origin; this precision is the
combination users of an OpenVINO int8 export get by default there. The quantized graph is built as
`ov-int8` builds it: only the inference precision differs. On a CPU without native
bf16 it is unsupported, with the reason, since OpenVINO would then run the remainder in f32 anyway.
"""

from __future__ import annotations

import torch

from segbench.backends.openvino import OV_DEVICES, native_reason
from segbench.precision.ov_int8 import OvInt8, OvInt8Graph


class OvInt8Bf16Graph(OvInt8Graph):
    precision_name = "ov-int8-bf16"
    float_hint = "bf16"


class OvInt8Bf16(OvInt8):
    name = "ov-int8-bf16"
    description = (
        "OpenVINO int8 via NNCF (as ov-int8), with the layers left in float computed in bf16 (OpenVINO's default on "
        "CPUs with native bf16); backend openvino only"
    )
    graph_class = OvInt8Bf16Graph

    def unsupported_reason(self, device: torch.device) -> str | None:
        missing = super().unsupported_reason(device)
        if missing or device.type not in OV_DEVICES:
            return missing
        return native_reason("bf16", OV_DEVICES[device.type])

    def notes(self, device: torch.device) -> list[str]:
        return [*super().notes(device), "the layers NNCF left in float run in bf16 (OpenVINO's inference precision)"]
