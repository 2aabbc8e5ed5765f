"""DeepLabV3 with a MobileNetV3-Large backbone (torchvision), Pascal VOC label set (21 classes).

Registered with the auxiliary FCN head (aux_loss=True): that is the configuration of torchvision's
released COCO_WITH_VOC_LABELS_V1 weights, whose metadata gives 11,029,328 parameters; without the
head the model has 11,025,477. torchvision's model runs the auxiliary head in eval mode too (its
output lands under "aux"), so the timed forward includes it, as it does for torchvision users.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from segbench.models.base import Checkpoint, ModelCard, SegmentationAdapter
from segbench.models.labels import VOC_NAMES
from segbench.models.registry import register
from segbench.models.weights import torchvision_categories

VOC_CLASSES = 21


class DeepLabV3Adapter(SegmentationAdapter):
    """ImageNet mean/std (the base defaults), any input size; logits come back at the input size."""

    warm_imports = ("torchvision.models.segmentation",)

    head_keys = ("classifier.4.weight",)

    def build_module(self) -> nn.Module:
        from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

        return deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=self.num_classes, aux_loss=True
        )

    def read_weights(self, path: Path) -> Checkpoint:
        """A state dict; given by torchvision weights name, with the class names of its metadata."""
        checkpoint = super().read_weights(path)
        if self.weights_name is None:
            return checkpoint

        return Checkpoint(checkpoint.state, torchvision_categories(self.weights_name))

    def logits(self, outputs: Any) -> torch.Tensor:
        return outputs["out"]


register(
    ModelCard(
        name="deeplabv3-mobilenetv3-large",
        family="deeplabv3",
        variant="mobilenetv3-large",
        source="torchvision",
        num_classes=VOC_CLASSES,
        dataset="voc",
        published_params_m=11.029328,
        params_source=(
            "torchvision DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1 meta num_params (incl. aux head)"
        ),
        description="DeepLabV3 + MobileNetV3-Large (dilated), with torchvision's auxiliary FCN head; VOC 21 classes",
        class_names=VOC_NAMES,
    ),
    DeepLabV3Adapter,
)
