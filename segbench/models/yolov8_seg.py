"""YOLOv8-seg (ultralytics): instance segmentation read out as a semantic class map.

Built offline from the model YAML shipped inside the ultralytics package. Postprocessing is
ultralytics' own: NMS, then prototype-mask assembly cropped to each box. The instances are then
merged into one class-id map: 0 is background and 1..80 are COCO class ids + 1, so the card has
81 classes. Where instances overlap, the most confident one owns the pixel.

The class map is built without materialising any instance's full-size mask: each instance's mask logits
are upsampled only over its box (with a margin of prototype pixels, so every kept pixel reads the same
neighbours as ultralytics' full-size `process_mask(upsample=True)`) and painted in order of confidence. The
labels are those of the full-size path bit for bit (tests/models/test_yolo_postprocess.py), at a fraction
of its cost: ultralytics' path upsamples, thresholds and crops every instance over the whole image.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from segbench.models._imports import import_ultralytics
from segbench.models._ultralytics import UltralyticsAdapter
from segbench.models.base import Checkpoint, HeadOptions, ModelCard, deliver, label_dtype
from segbench.models.labels import coco_names
from segbench.models.registry import register

COCO_CLASSES = 80
PROTO_STRIDE = 4  # the Proto module upsamples the stride-8 P3 features once: masks come at 1/4 of the input
# Scores are clamped to [eps, 1 - eps] before the inverse sigmoid: fp32 sigmoid saturates at 1.0 past a logit of ~16.6,
# and a reduced-precision score of 0 would be -inf; 1e-7 keeps logits within ±16.1 on both sides.
LOGIT_EPS = 1e-7


class YoloSegOptions(HeadOptions):
    """Head and postprocessing thresholds; the thresholds' defaults are ultralytics' predict defaults.

    num_classes counts the class map's classes: the detection classes plus the background (0).
    """

    conf: float = Field(0.25, ge=0.0, le=1.0, description="confidence threshold for detections")
    iou: float = Field(0.7, ge=0.0, le=1.0, description="IoU threshold of the class-aware NMS")
    max_det: int = Field(300, ge=1, description="most instances kept per image")


Instances = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # masks (n, H, W) uint8, confidences (n,), classes (n,)


class YoloV8SegAdapter(UltralyticsAdapter):
    task_class: ClassVar[str] = "SegmentationModel"
    options_schema: ClassVar[type[BaseModel]] = YoloSegOptions
    background_class: ClassVar[bool] = True
    head_keys: ClassVar[tuple[str, ...]] = (r"model\.\d+\.cv3\.0\.2\.weight",)  # the class branch of the first level
    head_extra_rows: ClassVar[int] = -1  # class 0 (background) has no row

    def _default_names(self, checkpoint: Checkpoint | None) -> tuple[str, ...] | None:
        names = super()._default_names(checkpoint)
        if names is None and self.num_classes == self.card.num_classes:  # the COCO head: names ultralytics ships
            return ("background", *coco_names())
        return names

    def kept(self, outputs: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per image the NMS survivors (n, 6 + mask coefficients: box xyxy, confidence, class, coefficients), and the
        prototypes (N, 32, h, w), both float32."""
        import_ultralytics()
        from ultralytics.utils.nms import non_max_suppression

        options: YoloSegOptions = self.options  # type: ignore[assignment]
        (predictions, protos), _ = outputs  # eval output: ((decoded boxes+scores+coefficients, protos), raw head)
        # fp32 on purpose: process_mask multiplies the coefficients with fp32 prototypes
        predictions, protos = predictions.float(), protos.float()
        detections = non_max_suppression(
            predictions, options.conf, options.iou, max_det=options.max_det, nc=self.head_classes
        )
        return detections, protos

    def instances(self, outputs: Any) -> list[Instances]:
        """Per image: the NMS survivors' binary masks at the model-input size, their confidences and classes."""
        from ultralytics.utils.ops import process_mask

        detections, protos = self.kept(outputs)
        size = (protos.shape[-2] * PROTO_STRIDE, protos.shape[-1] * PROTO_STRIDE)
        result = []
        for det, proto in zip(detections, protos):
            masks = process_mask(proto, det[:, 6:], det[:, :4], size, upsample=True)
            result.append((masks, det[:, 4], det[:, 5].long()))
        return result

    def raw_outputs(self, outputs: Any) -> dict[str, torch.Tensor]:
        """The head's outputs before NMS: class logits (the headline), class scores, boxes, mask coefficients,
        prototypes.

        Drift is measured here because the class map after NMS is empty when nothing passes the
        confidence threshold (random weights), which would make every option agree perfectly. The headline is
        the pre-sigmoid logit: with random weights every score is ~1e-5, so an int8 drift on the scores read 0.0
        while its boxes moved 0.47 px. The head's own logits (`scores` of the raw output ultralytics returns
        beside the decoded one) where the output carries them; else the scores' inverse sigmoid, which also
        measures the sigmoid's own error deep in its tail.
        """
        (predictions, protos), raw = outputs
        classes = self.head_classes
        boxes, scores, coefficients = predictions.split((4, classes, predictions.shape[1] - 4 - classes), dim=1)
        return {
            "class_logits": _class_logits(raw, scores),
            "class_scores": scores,
            "boxes": boxes,
            "mask_coefficients": coefficients,
            "prototypes": protos,
        }

    def detections(self, outputs: Any) -> int | None:
        return sum(len(det) for det in self.kept(outputs)[0])

    def logits(self, outputs: Any) -> torch.Tensor:
        """Per-pixel score map (N, num_classes, H, W) at the model-input size, for fidelity comparisons.

        Channel c + 1 holds the confidence of the most confident class-c instance covering the pixel
        (0 where none does); channel 0 (background) holds the confidence threshold, which every kept
        instance exceeds. Its argmax is postprocess's class map; postprocess gets there without
        materialising this map.
        """
        maps = []
        for masks, confidences, classes in self.instances(outputs):
            scores = torch.zeros(self.num_classes, *masks.shape[-2:], device=masks.device)
            scores[0] = self.options.conf  # type: ignore[attr-defined]
            if len(classes):
                weighted = masks.float() * confidences.view(-1, 1, 1)
                channel = (classes + 1).view(-1, 1, 1).expand_as(weighted)
                scores.scatter_reduce_(0, channel, weighted, reduce="amax")
            maps.append(scores)
        return torch.stack(maps)

    def notes(self) -> list[str]:
        if self.weights is None:
            return [
                "postprocess time depends on the detections: NMS and mask assembly scale with the boxes kept, and with "
                "random weights few pass the confidence threshold, so trained weights postprocess slower"
            ]
        return []

    def postprocess(self, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
        """Class-id map (N, H, W), uint8, where output_policy says: 0 background, 1..80 COCO class + 1."""
        dtype = label_dtype(self.num_classes)
        detections, protos = self.kept(outputs)
        labels = [paint_instances(det, proto, dtype) for det, proto in zip(detections, protos)]
        return deliver(torch.stack(labels)[:, : size[0], : size[1]], self.output_policy)


def painting_order(confidences: torch.Tensor) -> list[int]:
    """Least confident first, so the most confident instance is painted last and owns the pixel; among equal
    confidences the first instance wins, as `max(dim=0)` over stacked masks picks it."""
    reversed_indices = torch.arange(len(confidences) - 1, -1, -1)
    order = torch.argsort(confidences[reversed_indices], stable=True)
    return reversed_indices[order].tolist()


def _source_window(start: int, stop: int, stride: int, length: int) -> tuple[int, int]:
    """The prototype rows (or columns) the bilinear upsample reads for output pixels [start, stop), with one more on
    each side, so no kept pixel reads an edge clamped by the window that the full-size upsample would not clamp."""
    first = math.floor((start + 0.5) / stride - 0.5)
    last = math.floor((stop - 1 + 0.5) / stride - 0.5) + 1
    return max(0, first - 1), min(length, last + 2)


def paint_instances(det: torch.Tensor, proto: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One image's class map at the model-input size from its NMS survivors: ultralytics' `process_mask` (mask
    logits upsampled bilinearly from the prototypes, > 0, cropped to the box) computed only over each box."""
    channels, height, width = proto.shape
    size = (height * PROTO_STRIDE, width * PROTO_STRIDE)
    labels = torch.zeros(size, dtype=dtype, device=proto.device)
    if not len(det):
        return labels
    logits = (det[:, 6:] @ proto.view(channels, -1)).view(-1, height, width)
    boxes = det[:, :4].tolist()
    classes = (det[:, 5].long() + 1).tolist()
    for index in painting_order(det[:, 4]):
        x1, y1, x2, y2 = boxes[index]
        # crop_mask keeps pixel (r, c) where y1 <= r < y2 and x1 <= c < x2
        rows = (max(0, math.ceil(y1)), min(size[0], math.ceil(y2)))
        cols = (max(0, math.ceil(x1)), min(size[1], math.ceil(x2)))
        if rows[0] >= rows[1] or cols[0] >= cols[1]:
            continue
        r0, r1 = _source_window(*rows, PROTO_STRIDE, height)
        c0, c1 = _source_window(*cols, PROTO_STRIDE, width)
        window = F.interpolate(
            logits[index, r0:r1, c0:c1][None, None],
            size=((r1 - r0) * PROTO_STRIDE, (c1 - c0) * PROTO_STRIDE),
            mode="bilinear",
            align_corners=False,
        )[0, 0]
        top, left = r0 * PROTO_STRIDE, c0 * PROTO_STRIDE
        inside = window[rows[0] - top : rows[1] - top, cols[0] - left : cols[1] - left] > 0
        labels[rows[0] : rows[1], cols[0] : cols[1]].masked_fill_(inside, classes[index])
    return labels


def _class_logits(raw: Any, scores: torch.Tensor) -> torch.Tensor:
    """The class head's pre-sigmoid output: the raw head's `scores` (ultralytics >= 8.3 returns them in a dict), or
    the inverse sigmoid of the decoded scores where the output does not carry them."""
    logits = raw.get("scores") if isinstance(raw, dict) else None
    if isinstance(logits, torch.Tensor) and logits.shape == scores.shape:
        return logits
    return torch.logit(scores.float(), eps=LOGIT_EPS)


# Published parameter counts (M) are those of the fused model, as ultralytics prints them.
_VARIANTS = {"n": 3.4, "s": 11.8, "m": 27.3, "l": 46.0, "x": 71.8}

for _scale, _params in _VARIANTS.items():
    register(
        ModelCard(
            name=f"yolov8{_scale}-seg",
            family="yolov8-seg",
            variant=_scale,
            source="ultralytics",
            num_classes=COCO_CLASSES + 1,
            dataset="coco",
            published_params_m=_params,
            params_source="Ultralytics docs, docs/en/models/yolov8.md (segmentation table; Conv+BN fused)",
            description=(
                "YOLOv8-seg instances (NMS conf 0.25, IoU 0.7) merged into a semantic map: 0 = background, "
                "k = COCO class k-1; overlaps go to the most confident instance"
            ),
            extra={"yaml": f"yolov8{_scale}-seg.yaml"},
        ),
        YoloV8SegAdapter,
    )
