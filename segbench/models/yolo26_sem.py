"""YOLO26-sem (ultralytics): the semantic-segmentation YOLO the installed ultralytics builds from a YAML.

The head returns per-class logits at 1/8 of the input in eval mode; the base postprocess (bilinear
upsample, crop the padding, argmax) is what ultralytics' SemanticSegmentationPredictor does. The
auxiliary P4 head exists only for training: it stays in the module (and its parameter count) but
does not run at inference.
"""

from __future__ import annotations

from typing import ClassVar

from segbench.models._ultralytics import UltralyticsAdapter
from segbench.models.base import ModelCard
from segbench.models.labels import CITYSCAPES_NAMES
from segbench.models.registry import register

CITYSCAPES_CLASSES = 19


class Yolo26SemAdapter(UltralyticsAdapter):
    task_class: ClassVar[str] = "SemanticSegmentationModel"
    head_keys: ClassVar[tuple[str, ...]] = (r"model\.\d+\.classifier\.1\.weight",)


# No published parameter count: the summary comments in yolo26-sem.yaml (e.g. n: 2,572,280) describe
# a different head from the one this ultralytics version builds (n: 1,632,902), so none is cited.
for _scale in "nsmlx":
    register(
        ModelCard(
            name=f"yolo26{_scale}-sem",
            family="yolo26-sem",
            variant=_scale,
            source="ultralytics",
            num_classes=CITYSCAPES_CLASSES,
            dataset="cityscapes",
            description="YOLO26 semantic segmentation (Cityscapes 19 classes); logits at 1/8 resolution",
            extra={"yaml": f"yolo26{_scale}-sem.yaml"},
            class_names=CITYSCAPES_NAMES,
        ),
        Yolo26SemAdapter,
    )
