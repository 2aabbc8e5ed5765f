"""Accuracy against ground truth: a confusion matrix over labelled pixels, and mIoU, pixel accuracy, per-class IoU.

The definitions are mmsegmentation's: pixels at the ignore index count for nothing; a class's IoU is
TP / (TP + FP + FN); a class absent from both the ground truth and the prediction has no IoU and is left
out of the mean; a class present in only one of them has IoU 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F

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

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)  # rows: truth, columns: prediction

    def add(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        """Count one image's labelled pixels; truth and prediction have the same shape."""
        if truth.shape != prediction.shape:
            raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
        keep = truth != self.ignore_index
        truth, prediction = truth[keep].astype(np.int64), prediction[keep].astype(np.int64)
        if truth.size and int(truth.max()) >= self.num_classes:
            raise ValueError(f"label id {int(truth.max())} is beyond the {self.num_classes} classes")
        prediction = np.clip(prediction, 0, self.num_classes - 1)
        flat = truth * self.num_classes + prediction
        self.counts += np.bincount(flat, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def iou(self) -> list[float | None]:
        """Per-class IoU; None for a class absent from both truth and prediction."""
        true_positive = np.diag(self.counts)
        union = self.counts.sum(axis=0) + self.counts.sum(axis=1) - true_positive
        return [float(tp / u) if u else None for tp, u in zip(true_positive, union)]

    def result(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        ious = self.iou()
        present = [value for value in ious if value is not None]
        labelled = int(self.counts.sum())
        in_truth = self.counts.sum(axis=1)
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
        }


def _to_truth_size(labels: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A predicted class map brought to its ground truth's size (nearest: class ids never blend)."""
    if tuple(labels.shape) != size:
        labels = F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return labels.numpy()


def accuracy_pass(
    adapter: SegmentationAdapter,
    forward: Callable[[Any], Any],
    dataset: Dataset,
    resolution: tuple[int, int],
    batch_size: int,
    autocast: ContextManager[object],
) -> dict[str, Any]:
    """Run the dataset's images through the cell's own forward at the cell's resolution and score the class maps.

    Each image is resized to the cell's resolution (what the benchmarked configuration sees); its class
    map is brought back to the mask's size with nearest-neighbour resizing, and scored there. A last,
    short batch is filled with copies whose outputs are dropped, so fixed-shape backends see their shape.
    """
    samples = dataset.samples()
    matrix = ConfusionMatrix(adapter.num_classes, dataset.ignore_index)
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            frames = [resized(read_rgb(sample.image), *resolution) for sample in chunk]
            frames += [frames[-1]] * (batch_size - len(frames))
            with autocast:
                outputs = forward(adapter.preprocess(torch.stack(frames)))
            labels = adapter.postprocess(outputs, resolution)
            for sample, predicted in zip(chunk, labels):
                truth = dataset.read_mask(sample.mask)
                try:
                    matrix.add(truth, _to_truth_size(predicted, truth.shape))
                except ValueError as exc:
                    raise SegbenchError(
                        f"{sample.mask}: {exc} of {adapter.card.name}; set options.num_classes"
                    ) from None
    return {**matrix.result(adapter.class_names), "images": len(samples), "dataset": dataset.describe()}
