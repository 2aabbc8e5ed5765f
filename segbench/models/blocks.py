"""Which block of a model (backbone stage, neck, head, decoder) a module path belongs to, and what each block does.

A profile groups its operators by block. PyTorch names the module an op ran in (`model.22.cv2.0.conv`); an exported
graph carries the same path in its node names or metadata (ONNX `pkg.torch.onnx.name_scopes`, OpenVINO's
`__module.model.22.cv2.0.conv/aten::_convolution/Convolution`), so one mapping serves every runtime. The mapping is
per family (YOLO: layers 0-9 backbone, then neck, the last layer the head); a family without rules gets its top-level
modules as blocks.

`count_block_work` counts each block's FLOPs (torch.utils.flop_counter, as `flops.py`) and the elements it reads and
writes (parameters, leaf outputs) on the float model at batch 1: the inputs of a block's roofline.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from segbench.models.base import SegmentationAdapter

OUTSIDE = "(outside any module)"  # ops the runtime ran that no module path names (graph glue, reorders)
WRAPPERS = ("model", "module", "_orig_mod", "compiled")  # wrapper attributes a path may start with
YOLO_FAMILIES = ("yolov8-seg", "yolo26-sem")
YOLO_BACKBONE_LAST = 9  # ultralytics' yaml: layers 0-9 are the backbone (SPPF is 9), then the neck, the last the head
FAST_SCNN = {
    "learning_to_downsample": "learning to downsample",
    "global_features": "global feature extractor",
    "fusion": "feature fusion",
    "classifier": "classifier (head)",
}
# transformers' SegFormer: encoder.block.N / patch_embeddings.N (older releases) or stages.N (newer)
SEGFORMER_STAGE = re.compile(r"(?:encoder\.(?:patch_embeddings|block|layer_norm)|stages)\.(\d+)")
MASK2FORMER = {
    "pixel_level_module.encoder": "backbone",
    "pixel_level_module.decoder": "pixel decoder",
    "transformer_module": "transformer decoder",
}


@dataclass(frozen=True)
class BlockMap:
    """The family's rule from a module path (relative to the adapter's model) to a block name."""

    family: str | None
    last_layer: int | None = None  # YOLO: the index of the head layer in model.model

    @classmethod
    def for_model(cls, family: str | None, model: nn.Module | None) -> BlockMap:
        layers = getattr(model, "model", None)
        last = len(layers) - 1 if family in YOLO_FAMILIES and isinstance(layers, nn.Sequential) else None
        return cls(family, last)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "last_layer": self.last_layer}

    def block(self, path: str | None) -> str:
        if not path:
            return OUTSIDE
        if self.family in YOLO_FAMILIES:
            return self._yolo(path)
        if self.family == "fast-scnn":
            return FAST_SCNN.get(path.split(".")[0], path.split(".")[0])
        if self.family == "segformer":
            stage = SEGFORMER_STAGE.search(path)
            if stage:
                return f"encoder stage {int(stage.group(1)) + 1}"
            return "decode head" if "decode_head" in path else _generic(path)
        if self.family == "mask2former":
            return next((name for key, name in MASK2FORMER.items() if key in path), "head")
        return _generic(path)

    def _yolo(self, path: str) -> str:
        match = re.match(r"(?:model\.)?(\d+)(?:\.|$)", path)
        if not match:
            return _generic(path)
        index = int(match.group(1))
        if index <= YOLO_BACKBONE_LAST:
            return "backbone"
        return "head" if self.last_layer is not None and index >= self.last_layer else "neck"


def _generic(path: str) -> str:
    """The first component that is not a wrapper attribute; a Sequential's index reads as a layer."""
    parts = path.split(".")
    while len(parts) > 1 and parts[0] in WRAPPERS:
        parts = parts[1:]
    head = parts[0]
    return f"layer {head}" if head.isdigit() else head


def strip_wrapper(path: str, prefix: str = "model.") -> str:
    """A path as exported through a wrapper (FlatOutputs holds the model as `model`), made relative to the model."""
    return path[len(prefix) :] if path.startswith(prefix) else ("" if path == prefix.rstrip(".") else path)


# ---- per block work ----------------------------------------------------------------------------------------


def _tensors(value: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor)]


def count_block_work(adapter: SegmentationAdapter, height: int, width: int, blocks: BlockMap) -> dict[str, Any]:
    """Per block: FLOPs, parameter elements and leaf-output elements of one (1, 3, H, W) forward on the float model."""
    assert adapter.model is not None
    model = adapter.model
    root = type(model).__name__
    work: dict[str, dict[str, float]] = {}

    def entry(path: str) -> dict[str, float]:
        return work.setdefault(
            blocks.block(path), {"flops": 0.0, "parameter_elements": 0.0, "activation_elements": 0.0}
        )

    def hook(path: str) -> Any:
        def count(_module: nn.Module, inputs: Any, output: Any) -> None:
            read = {tensor.data_ptr() for tensor in _tensors(inputs)}
            entry(path)["activation_elements"] += sum(t.numel() for t in _tensors(output) if t.data_ptr() not in read)

        return count

    leaves = [(path, module) for path, module in model.named_modules() if path and not list(module.children())]
    images = torch.zeros((1, height, width, 3), dtype=torch.uint8, device=next(model.parameters()).device)
    inputs = adapter.preprocess(images)
    with ExitStack() as stack, torch.no_grad(), FlopCounterMode(display=False) as counter:
        for path, module in leaves:
            stack.callback(module.register_forward_hook(hook(path)).remove)
        adapter.forward(inputs)
    for path, module in leaves:
        entry(path)["parameter_elements"] += sum(p.numel() for p in module.parameters(recurse=False))
    totals = {
        (name[len(root) + 1 :] if name.startswith(root + ".") else ""): float(sum(ops.values()))
        for name, ops in counter.get_flop_counts().items()
        if name == root or name.startswith(root + ".")
    }
    for path, total in totals.items():  # each module's own FLOPs: its total less its nearest counted descendants'
        children = sum(
            value for other, value in totals.items() if other != path and _counted_parent(other, totals) == path
        )
        entry(path)["flops"] += total - children
    return work


def _counted_parent(path: str, totals: dict[str, float]) -> str:
    """The nearest ancestor the counter saw run (ultralytics calls its layers one by one, never their Sequential)."""
    while path:
        path = path.rsplit(".", 1)[0] if "." in path else ""
        if path in totals:
            return path
    return ""
