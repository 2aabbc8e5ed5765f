"""FLOPs of one forward pass, counted the same way for every family.

torch.utils.flop_counter.FlopCounterMode counts the matrix-multiply and convolution ops it sees at
dispatch (2 FLOPs per multiply-add; elementwise ops, norms and resampling count 0), so it needs no
per-family hooks. It agrees with ultralytics' thop-based GFLOPs on fused YOLO models, which also
count 2 x conv multiply-adds.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from segbench.models.base import SegmentationAdapter


def count_flops(adapter: SegmentationAdapter, height: int, width: int, batch: int = 1) -> float:
    """FLOPs of adapter.forward on a (batch, 3, height, width) image, after the family's padding.

    Builds the adapter on the CPU if it is not built yet; FLOP counts do not depend on the device.
    Preprocessing and postprocessing are not counted.
    """
    if adapter.model is None:
        adapter.build("cpu")
    images = torch.zeros((batch, height, width, 3), dtype=torch.uint8)
    inputs = adapter.preprocess(images)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        adapter.forward(inputs)
    return float(counter.get_total_flops())
