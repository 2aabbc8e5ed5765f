"""`ultralytics-predict`: the YOLO model's own `predict` on host images, with its own pre- and postprocessing."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from segbench.backends._pipeline import PipelineAdapter
from segbench.backends.base import Backend, ForwardFn
from segbench.errors import UnsupportedError
from segbench.models._imports import import_ultralytics
from segbench.models.base import SegmentationAdapter
from segbench.system.cpus import torch_threads


def threads_ultralytics_gives() -> int:
    """torch's thread count in a script that imports ultralytics first: the OMP_NUM_THREADS the user set, else the 1
    that `import ultralytics` sets (its __init__: "default for reduced CPU utilization during training")."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))
    except ValueError:
        return 1


class UltralyticsPipeline(PipelineAdapter):
    """ultralytics' predictor called as its documentation's defaults call it (no retina_masks: masks at the
    letterboxed input size, as `predict` returns them unless asked otherwise).

    ultralytics picks torch's thread count itself: `import ultralytics` sets OMP_NUM_THREADS=1 unless the user set
    it, so a script that imports it first runs torch on one thread. The library call runs at that count here
    (`threads_chosen`); `cell_threads` runs it at the cell's count instead, for the peer at segbench's threads.
    segbench's own stages around the call (the BGR copy, the class map) run at the cell's count in both.
    """

    def __init__(self, inner: SegmentationAdapter, cell_threads: bool = False):
        super().__init__(inner)
        self.cell_threads = cell_threads

        import_ultralytics()
        from ultralytics import YOLO

        self.yolo = YOLO(inner.card.extra["yaml"], task="segment")
        self.yolo.model = inner.model  # the zoo's built (seeded, fused) module, not a fresh one
        self.speeds: list[dict[str, float]] = []
        self.threads_before = torch.get_num_threads()
        self.threads_chosen = threads_ultralytics_gives()

    def preprocess(self, images: torch.Tensor) -> list[np.ndarray]:  # type: ignore[override]
        return [
            np.ascontiguousarray(image[..., ::-1]) for image in super().preprocess(images)
        ]  # predict takes BGR, like cv2

    def forward(self, inputs: list[np.ndarray]) -> Any:  # type: ignore[override]
        height, width = inputs[0].shape[:2]
        with torch_threads(self.threads_ran):
            results = self.yolo.predict(
                inputs, imgsz=list(self.model_input_size(height, width)), device=str(self.device), verbose=False
            )
        self.speeds.append(results[0].speed)
        return results

    @property
    def threads_ran(self) -> int:
        return self.threads_before if self.cell_threads else self.threads_chosen

    def detections(self, outputs: Any) -> int | None:
        return sum(len(result.boxes) for result in outputs)

    def postprocess(self, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
        """ultralytics Results → the same class-id convention as the zoo adapter: 0 background, class + 1."""
        maps = []
        for result in outputs:
            labels = torch.zeros(size, dtype=torch.int64)
            if result.masks is not None and len(result.boxes):
                order = torch.argsort(result.boxes.conf.cpu())  # most confident painted last, so it wins
                masks, classes = on_image(result.masks.data.cpu()[order], size), result.boxes.cls.cpu().long()[order]
                for mask, class_id in zip(masks, classes):
                    labels[mask > 0.5] = int(class_id) + 1
            maps.append(labels)
        return torch.stack(maps)


def on_image(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks at the letterboxed input size -> the image's size (the letterbox's padding cropped, then scaled, as
    ultralytics' own `scale_masks` does); unchanged when the letterbox added nothing."""
    if tuple(masks.shape[-2:]) == size:
        return masks
    from ultralytics.utils.ops import scale_masks

    return scale_masks(masks[None].float(), size)[0]


class UltralyticsPredict(Backend):
    name = "ultralytics-predict"
    runtime = "pipeline"
    warm_imports = ("ultralytics",)
    description = (
        "ultralytics' own YOLO.predict on host images (its letterbox, NMS and masks; it picks threads and fuses layers)"
    )
    latency_scope = "end_to_end"  # forward is the whole library call: letterbox/resize, model, NMS/masks
    cell_threads: bool = False  # torch at the cell's thread count instead of the one ultralytics picks

    def wrap(self, adapter: SegmentationAdapter) -> SegmentationAdapter:
        if "yaml" not in adapter.card.extra or adapter.card.source != "ultralytics" or "seg" not in adapter.card.family:
            raise UnsupportedError(
                f"ultralytics-predict runs ultralytics segmentation models; {adapter.card.name} is from "
                f"{adapter.card.source}"
            )
        return UltralyticsPipeline(adapter, self.cell_threads)

    def prepare(self, adapter: SegmentationAdapter, example: Any) -> ForwardFn:
        return adapter.forward

    def describe(self, adapter: SegmentationAdapter) -> dict[str, Any] | None:
        if not isinstance(adapter, UltralyticsPipeline) or not adapter.speeds:
            return None
        recent = adapter.speeds[-50:]
        own_stages = {stage: float(np.median([s[stage] for s in recent])) for stage in recent[0]}
        return {
            "pipeline": "ultralytics YOLO.predict",
            "own_stage_median_ms": own_stages,  # ultralytics' `speed`, per image
            "torch_threads_before": adapter.threads_before,
            "torch_threads_chosen_by_ultralytics": adapter.threads_chosen,
            "torch_threads_ran": adapter.threads_ran,
            "fused": bool(adapter.yolo.model.is_fused()),
        }
