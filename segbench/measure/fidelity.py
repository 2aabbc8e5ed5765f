"""Output fidelity against the fp32 eager model: class-map agreement, mIoU, numeric drift of the raw outputs.

The reference is a fresh fp32 eager build of the same model (same resolved weights, same options),
run in true fp32 (TF32 off) on held-out photographs, never the ones int8 precisions calibrate on.
Drift compares the tensors each family names as its raw outputs (`SegmentationAdapter.raw_outputs`):
per-class logits for semantic heads, class logits (pre-sigmoid), boxes, mask coefficients and prototypes
before NMS for YOLO, whose thresholded class map says nothing when the reference detects nothing. Beside
the absolute differences each output gets a scale-free SNR in dB, and an output whose reference is nearly
constant (post-sigmoid scores of ~1e-5 under random weights) has its drift marked uninformative.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import torch

from segbench.models.base import SegmentationAdapter
from segbench.models.registry import create_model

RANDOM_WEIGHTS_NOTE = "random weights: these figures measure numeric drift against fp32, not accuracy"
NO_DETECTIONS = "reference found no detections: agreement undefined"


# Below this spread (max - min) the reference output is nearly constant: an absolute difference on it reads ~0 however
# wrong the candidate is (YOLO's post-sigmoid scores under random weights are all ~1e-5), so its drift is uninformative.
MIN_REFERENCE_RANGE = 1e-3


@dataclass
class Drift:
    """Largest and summed absolute difference of one named raw output, and the energies a scale-free SNR needs."""

    max_abs: float = 0.0
    abs_sum: float = 0.0
    count: int = 0
    signal_energy: float = 0.0  # sum of reference^2
    error_energy: float = 0.0  # sum of (reference - candidate)^2
    reference_min: float = float("inf")
    reference_max: float = float("-inf")

    def add(self, reference: torch.Tensor, candidate: torch.Tensor) -> None:
        reference = reference.double()
        error = reference - candidate.double()
        diff = error.abs()
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.abs_sum += float(diff.sum())
        self.count += diff.numel()
        self.signal_energy += float(reference.square().sum())
        self.error_energy += float(error.square().sum())
        self.reference_min = min(self.reference_min, float(reference.min()))
        self.reference_max = max(self.reference_max, float(reference.max()))

    @property
    def reference_range(self) -> float:
        return self.reference_max - self.reference_min

    def snr_db(self) -> float | None:
        """10 log10(signal / error energy): independent of the output's scale. None when the two are identical."""
        if self.error_energy == 0.0:
            return None
        if self.signal_energy == 0.0:
            return float("-inf")
        return 10.0 * math.log10(self.signal_energy / self.error_energy)

    def uninformative(self) -> str | None:
        """Why an absolute difference on this output says nothing, or None."""
        if self.reference_range >= MIN_REFERENCE_RANGE:
            return None
        return (
            f"the fp32 reference spans only {self.reference_range:.2g} (below {MIN_REFERENCE_RANGE:g}): absolute drift "
            "on it reads ~0 whatever the candidate does; see snr_db"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.abs_sum / self.count,
            "snr_db": self.snr_db(),
            "identical": self.error_energy == 0.0,
            "reference_range": self.reference_range,
            "uninformative": self.uninformative(),
        }


@dataclass
class FidelityAccumulator:
    """Accumulates agreement over several batches, then reports one set of figures."""

    num_classes: int
    agree: int = 0
    pixels: int = 0
    intersection: torch.Tensor = field(init=False)
    union: torch.Tensor = field(init=False)
    out_of_range: dict[str, int] = field(default_factory=lambda: {"reference": 0, "candidate": 0})
    drift: dict[str, Drift] = field(default_factory=dict)  # in the family's order: the first is the headline
    reference_detections: int | None = None  # counted only for families that detect instances

    def __post_init__(self) -> None:
        self.intersection = torch.zeros(self.num_classes, dtype=torch.int64)
        self.union = torch.zeros(self.num_classes, dtype=torch.int64)

    def add_labels(self, reference: torch.Tensor, candidate: torch.Tensor) -> None:
        reference, candidate = reference.flatten().long(), candidate.flatten().long()
        same = reference == candidate
        self.agree += int(same.sum())
        self.pixels += reference.numel()
        self.out_of_range["reference"] += int((~self._in_range(reference)).sum())
        self.out_of_range["candidate"] += int((~self._in_range(candidate)).sum())
        both = self._class_counts(reference[same])
        self.intersection += both
        self.union += self._class_counts(reference) + self._class_counts(candidate) - both

    def _in_range(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels >= 0) & (labels < self.num_classes)

    def _class_counts(self, labels: torch.Tensor) -> torch.Tensor:
        """Pixels per class; a label outside the card's classes is no class, on either side (never clamped into one)."""
        return torch.bincount(labels[self._in_range(labels)], minlength=self.num_classes)

    def add_raw(self, reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor]) -> None:
        """Drift of each raw output both sides produced at the same shape."""
        for name, ref in reference.items():
            cand = candidate.get(name)
            if cand is not None and cand.shape == ref.shape:
                self.drift.setdefault(name, Drift()).add(ref, cand)

    def add_reference_detections(self, count: int | None) -> None:
        if count is not None:
            self.reference_detections = (self.reference_detections or 0) + count

    def result(self) -> dict[str, Any]:
        present = self.union > 0
        miou = (
            float((self.intersection[present].float() / self.union[present].float()).mean()) if present.any() else None
        )
        headline = next(iter(self.drift.values()), None)
        out: dict[str, Any] = {
            "pixel_agreement": self.agree / self.pixels if self.pixels else None,
            "miou_vs_fp32": miou,
            "max_abs_logit_diff": headline.max_abs if headline else None,
            "mean_abs_logit_diff": headline.to_dict()["mean_abs"] if headline else None,
            "drift_snr_db": headline.snr_db() if headline else None,
            "drift_uninformative": headline.uninformative() if headline else None,
            "drift_of": next(iter(self.drift), None),
            "drift": {name: drift.to_dict() for name, drift in self.drift.items()},
            "pixels": self.pixels,
            "out_of_range_pixels": dict(self.out_of_range),
        }
        if self.reference_detections == 0:
            out.update(pixel_agreement=None, miou_vs_fp32=None, agreement_unavailable=NO_DETECTIONS)
        if self.reference_detections is not None:
            out["reference_detections"] = self.reference_detections
        return out


class Fp32Reference:
    """A fresh fp32 eager build of the cell's model (the same resolved weights and options), run in true fp32."""

    def __init__(self, model: str, weights: Path | None, options: dict[str, Any], device: torch.device):
        self.adapter = create_model(model, weights, options)
        self.adapter.build(device)

    def run(self, batch: torch.Tensor) -> Any:
        with true_fp32(), torch.inference_mode():
            return self.adapter.forward(self.adapter.preprocess(batch))


def _raw(adapter: SegmentationAdapter, outputs: Any) -> dict[str, torch.Tensor]:
    try:
        return {name: tensor.float().cpu() for name, tensor in adapter.raw_outputs(outputs).items()}
    except NotImplementedError:  # a pipeline returns masks, not scores
        return {}


def measure_fidelity(
    reference: Fp32Reference,
    candidate: SegmentationAdapter,
    forward: Callable[[Any], Any],
    held_out: list[torch.Tensor],
    autocast: ContextManager[object],
    random_weights: bool,
) -> dict[str, Any]:
    """Run held-out photographs (host uint8 batches) through both models and compare class maps and raw outputs."""
    size = tuple(held_out[0].shape[1:3])
    accumulator = FidelityAccumulator(candidate.num_classes)
    for batch in held_out:
        ref_out = reference.run(batch)
        with torch.inference_mode(), autocast:
            out = forward(candidate.preprocess(batch))
        with torch.inference_mode():
            accumulator.add_labels(reference.adapter.postprocess(ref_out, size), candidate.postprocess(out, size))
            accumulator.add_raw(_raw(reference.adapter, ref_out), _raw(candidate, out))
            accumulator.add_reference_detections(reference.adapter.detections(ref_out))
    result = accumulator.result()
    result.update(
        images=sum(batch.shape[0] for batch in held_out), image_set="held-out photographs (never used for calibration)"
    )
    if random_weights:
        result["note"] = RANDOM_WEIGHTS_NOTE
    return result


@contextlib.contextmanager
def true_fp32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN convolutions (PyTorch leaves cuDNN's on by default), restored on exit.

    The fidelity reference runs inside it, so a tf32 cell (which turns both on for the process) or any
    cell on PyTorch's defaults is judged against true fp32, not against TF32.
    """
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
