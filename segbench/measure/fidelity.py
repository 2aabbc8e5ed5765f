"""Output fidelity against the fp32 eager model: class-map agreement, mIoU, logit drift."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

RANDOM_WEIGHTS_NOTE = "random weights: these figures measure numeric drift against fp32, not accuracy"


@dataclass
class FidelityAccumulator:
    """Accumulates agreement over several batches, then reports one set of figures."""

    num_classes: int
    agree: int = 0
    pixels: int = 0
    max_abs_logit_diff: float = 0.0
    abs_logit_sum: float = 0.0
    logit_count: int = 0
    intersection: torch.Tensor = field(init=False)
    union: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.intersection = torch.zeros(self.num_classes, dtype=torch.int64)
        self.union = torch.zeros(self.num_classes, dtype=torch.int64)

    def add_labels(self, reference: torch.Tensor, candidate: torch.Tensor) -> None:
        reference, candidate = reference.flatten().long(), candidate.flatten().long()
        self.agree += int((reference == candidate).sum())
        self.pixels += reference.numel()
        classes = self.num_classes
        self.intersection += torch.bincount(reference[reference == candidate], minlength=classes)[:classes]
        ref_count = torch.bincount(reference, minlength=classes)[:classes]
        cand_count = torch.bincount(candidate.clamp(0, classes - 1), minlength=classes)[:classes]
        self.union += ref_count + cand_count - torch.bincount(reference[reference == candidate], minlength=classes)[:classes]

    def add_logits(self, reference: torch.Tensor, candidate: torch.Tensor) -> None:
        if reference.shape != candidate.shape:
            return
        diff = (reference.float() - candidate.float()).abs()
        self.max_abs_logit_diff = max(self.max_abs_logit_diff, float(diff.max()))
        self.abs_logit_sum += float(diff.sum())
        self.logit_count += diff.numel()

    def result(self) -> dict[str, Any]:
        present = self.union > 0
        miou = float((self.intersection[present].float() / self.union[present].float()).mean()) if present.any() else None
        return {
            "pixel_agreement": self.agree / self.pixels if self.pixels else None,
            "miou_vs_fp32": miou,
            "max_abs_logit_diff": self.max_abs_logit_diff if self.logit_count else None,
            "mean_abs_logit_diff": self.abs_logit_sum / self.logit_count if self.logit_count else None,
            "pixels": self.pixels,
        }
