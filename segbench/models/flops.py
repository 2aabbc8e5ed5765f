"""FLOPs and bytes moved by one forward pass, counted the same way for every family.

torch.utils.flop_counter.FlopCounterMode counts the matrix-multiply and convolution ops it sees at
dispatch (2 FLOPs per multiply-add; elementwise ops, norms and resampling count 0), so it needs no
per-family hooks.

On YOLO it equals ultralytics' own count (`model.info()`, `get_flops`: thop on the fused model at 640, 2 x
multiply-adds), checked with ultralytics 8.4.190 offline on models built from its yaml: 12.00 / 40.09 / 104.54 /
210.39 / 328.36 GFLOPs for YOLOv8n/s/m/l/x-seg (COCO, 80 classes) at 640, both counters alike to the last digit.
Two things differ from the figures people quote:
- the model cards' 12.6 / 42.6 / 110.2 / 220.5 / 344.1 come from an older ultralytics release: this release counts
  12.14 / 40.34 / 104.98 / 211.06 / 329.19 even on the unfused model (batch norms and all), so the gap is that
  release's counting, not segbench's;
- 11.34 in `cpu-best-*` is not the COCO YOLOv8n-seg but the bundled demo weights (`yolov8n-seg-shapes.pt`, 4
  classes): the Segment head's class convolutions shrink with the class count (ultralytics' get_flops: 11.34 too).

Bytes moved (`count_work`): parameters (read once) + the input + every leaf module's output (written once),
counted in elements on the fp32 model at batch 1; the roofline scales them by its class's element size
(`segbench.hardware.roofline.ELEMENT_BYTES`). An estimate of an unfused forward's traffic, the memory side
of the roofline: a compiled, fused forward moves less, which reads as `above_roof`.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from segbench.models.base import SegmentationAdapter


@dataclass(frozen=True)
class Work:
    """What one forward of one image does: FLOPs and the elements it reads and writes."""

    flops: float
    parameter_elements: int
    input_elements: int
    activation_elements: int

    def traffic(self) -> dict[str, Any]:
        """The element counts as stored in a record (`traffic`)."""
        counts = asdict(self)
        counts.pop("flops")
        return counts


def _tensors(value: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor)]


class _OutputCounter:
    """Forward hooks on every leaf module summing the elements of the tensors each one writes."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.elements = 0
        self.leaves = [child for child in module.modules() if not list(child.children())]

    def hook(self, _module: torch.nn.Module, inputs: Any, output: Any) -> None:
        # An output that aliases an input (Identity, Dropout in eval, in-place activations) writes nothing new.
        read = {tensor.data_ptr() for tensor in _tensors(inputs)}
        self.elements += sum(tensor.numel() for tensor in _tensors(output) if tensor.data_ptr() not in read)

    def attached(self, stack: ExitStack) -> _OutputCounter:
        for leaf in self.leaves:
            stack.callback(leaf.register_forward_hook(self.hook).remove)
        return self


def count_work(adapter: SegmentationAdapter, height: int, width: int) -> Work:
    """FLOPs and element traffic of adapter.forward on one (1, 3, height, width) image, after the family's padding.

    Builds the adapter on the CPU if it is not built yet; neither count depends on the device.
    Preprocessing and postprocessing are not counted.
    """
    if adapter.model is None:
        adapter.build("cpu")
    images = torch.zeros((1, height, width, 3), dtype=torch.uint8)
    inputs = adapter.preprocess(images)
    with ExitStack() as stack, torch.no_grad(), FlopCounterMode(display=False) as counter:
        outputs = _OutputCounter(adapter.model).attached(stack)
        adapter.forward(inputs)
    parameters = sum(parameter.numel() for parameter in adapter.model.parameters())
    return Work(
        flops=float(counter.get_total_flops()),
        parameter_elements=parameters,
        input_elements=sum(tensor.numel() for tensor in _tensors(inputs)),
        activation_elements=outputs.elements,
    )


def count_flops(adapter: SegmentationAdapter, height: int, width: int, batch: int = 1) -> float:
    """FLOPs of adapter.forward on a (batch, 3, height, width) image, after the family's padding."""
    if adapter.model is None:
        adapter.build("cpu")
    images = torch.zeros((batch, height, width, 3), dtype=torch.uint8)
    inputs = adapter.preprocess(images)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        adapter.forward(inputs)
    return float(counter.get_total_flops())
