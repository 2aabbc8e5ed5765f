"""Accuracy against ground truth: a confusion matrix over labelled pixels, and mIoU, pixel accuracy, per-class IoU.

The definitions are mmsegmentation's: pixels at the ignore index count for nothing; a class's IoU is
TP / (TP + FP + FN); a class absent from both the ground truth and the prediction has no IoU and is left
out of the mean; a class present in only one of them has IoU 0. A predicted id outside the model's classes
is counted (`invalid_predictions`) and scored as a miss of the true class, never clamped into a class.

Two protocols (the suite's `dataset.protocol`):
- `benchmarked` (default): the image is resized to the cell's resolution (its aspect ratio distorted where the
  two differ), and the cell's class map is resized back to the mask with nearest: mIoU *at the benchmarked
  resolution*, what the configuration that was timed delivers;
- `mmseg`: mmsegmentation's test protocol, the per-class scores (logits) resized bilinearly to the mask's
  (original) size and then the argmax: comparable with published mIoU. It needs the family's logits, so a
  pipeline backend (its forward returns masks) cannot give it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F

from segbench.data.datasets import PROTOCOL_TEXT
from segbench.data.images import read_rgb, resized
from segbench.errors import SegbenchError

if TYPE_CHECKING:
    from segbench.data.datasets import Dataset
    from segbench.models.base import SegmentationAdapter


@dataclass
class ConfusionMatrix:
    num_classes: int
    ignore_index: int = 255
    counts: np.ndarray = field(init=False)
    invalid: np.ndarray = field(init=False)  # per true class: labelled pixels predicted as no class of the model

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)  # rows: truth, columns: prediction
        self.invalid = np.zeros(self.num_classes, dtype=np.int64)

    def add(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        """Count one image's labelled pixels; truth and prediction have the same shape."""
        if truth.shape != prediction.shape:
            raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
        keep = truth != self.ignore_index
        truth, prediction = truth[keep].astype(np.int64), prediction[keep].astype(np.int64)
        if truth.size and int(truth.max()) >= self.num_classes:
            raise ValueError(f"label id {int(truth.max())} is beyond the {self.num_classes} classes")
        valid = (prediction >= 0) & (prediction < self.num_classes)
        self.invalid += np.bincount(truth[~valid], minlength=self.num_classes)
        truth, prediction = truth[valid], prediction[valid]
        flat = truth * self.num_classes + prediction
        self.counts += np.bincount(flat, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def iou(self) -> list[float | None]:
        """Per-class IoU; None for a class absent from both truth and prediction."""
        true_positive = np.diag(self.counts)
        union = self.counts.sum(axis=0) + self._in_truth() - true_positive
        return [float(tp / u) if u else None for tp, u in zip(true_positive, union)]

    def _in_truth(self) -> np.ndarray:
        """Labelled pixels per true class, the invalid predictions of it included (they are misses)."""
        return self.counts.sum(axis=1) + self.invalid

    def result(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        ious = self.iou()
        present = [value for value in ious if value is not None]
        in_truth = self._in_truth()
        labelled = int(in_truth.sum())
        recalls = [float(self.counts[c, c] / in_truth[c]) for c in range(self.num_classes) if in_truth[c]]
        names = (
            list(class_names)
            if class_names and len(class_names) == self.num_classes
            else [str(c) for c in range(self.num_classes)]
        )
        return {
            "miou": float(np.mean(present)) if present else None,
            "pixel_accuracy": float(np.trace(self.counts) / labelled) if labelled else None,
            "mean_accuracy": float(np.mean(recalls)) if recalls else None,
            "per_class_iou": {name: value for name, value in zip(names, ious) if value is not None},
            "classes_evaluated": len(present),
            "pixels": labelled,
            "invalid_predictions": int(self.invalid.sum()),
        }


def _to_truth_size(labels: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A predicted class map brought to its ground truth's size (nearest: class ids never blend)."""
    if tuple(labels.shape) != size:
        labels = F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return labels.numpy()


def mmseg_labels(
    scores: torch.Tensor, resolution: tuple[int, int], padded: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """mmseg's test protocol for one image: its scores (C, h, w) brought to the padded model input, the padding
    cropped, resized bilinearly to the label's size, then the argmax (the first maximum on ties, as postprocess)."""
    scores = scores.float()[None]
    if tuple(scores.shape[-2:]) != padded:
        scores = F.interpolate(scores, size=padded, mode="bilinear", align_corners=False)
    scores = scores[..., : resolution[0], : resolution[1]]
    if tuple(scores.shape[-2:]) != size:
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    return scores[0].argmax(dim=0).cpu().numpy()


def _predicted(
    adapter: SegmentationAdapter,
    outputs: Any,
    resolution: tuple[int, int],
    truths: list[np.ndarray],
    protocol: str,
) -> list[np.ndarray]:
    """Each image's class map at its label's size, under the protocol."""
    if protocol == "benchmarked":
        labels = adapter.postprocess(outputs, resolution)
        return [_to_truth_size(predicted, truth.shape) for predicted, truth in zip(labels, truths)]
    try:
        scores = adapter.logits(outputs)
    except NotImplementedError:
        raise SegbenchError(
            "dataset.protocol mmseg needs the model's per-class scores, which this backend's output does not carry; "
            "use protocol: benchmarked"
        ) from None
    padded = adapter.model_input_size(*resolution)
    return [mmseg_labels(score, resolution, padded, truth.shape) for score, truth in zip(scores, truths)]


def accuracy_pass(
    adapter: SegmentationAdapter,
    forward: Callable[[Any], Any],
    dataset: Dataset,
    resolution: tuple[int, int],
    batch_size: int,
    autocast: ContextManager[object],
) -> dict[str, Any]:
    """Run the dataset's images through the cell's own forward at the cell's resolution and score the class maps.

    Each image is resized to the cell's resolution (what the benchmarked configuration sees); its class map is
    brought to the mask's size by the dataset's protocol (module docstring) and scored there. A last, short batch
    is filled with copies whose outputs are dropped, so fixed-shape backends see their shape.
    """
    samples = dataset.samples()
    protocol = dataset.config.protocol
    matrix = ConfusionMatrix(adapter.num_classes, dataset.ignore_index)
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            frames = [resized(read_rgb(sample.image), *resolution) for sample in chunk]
            frames += [frames[-1]] * (batch_size - len(frames))
            with autocast:
                outputs = forward(adapter.preprocess(torch.stack(frames)))
            truths = [dataset.read_mask(sample.mask) for sample in chunk]
            predictions = _predicted(adapter, outputs, resolution, truths, protocol)
            for sample, truth, predicted in zip(chunk, truths, predictions):
                try:
                    matrix.add(truth, predicted)
                except ValueError as exc:
                    raise SegbenchError(
                        f"{sample.mask}: {exc} of {adapter.card.name}; set options.num_classes"
                    ) from None
    return {
        **matrix.result(adapter.class_names),
        "images": len(samples),
        "dataset": dataset.describe(),
        "protocol": protocol,
        "protocol_text": PROTOCOL_TEXT[protocol],
    }
