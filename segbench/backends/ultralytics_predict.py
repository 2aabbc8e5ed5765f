"""`ultralytics-predict`: the YOLO model's own `predict` on host images, with its own pre- and postprocessing."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segbench.backends._pipeline import PipelineAdapter
from segbench.backends.base import Backend, ForwardFn
from segbench.errors import UnsupportedError
from segbench.models._imports import import_ultralytics
from segbench.models.base import SegmentationAdapter


class UltralyticsPipeline(PipelineAdapter):
    def __init__(self, inner: SegmentationAdapter):
        super().__init__(inner)

        import_ultralytics()
        from ultralytics import YOLO

        self.yolo = YOLO(inner.card.extra["yaml"], task="segment")
        self.yolo.model = inner.model  # the zoo's built (seeded, fused) module, not a fresh one
        self.speeds: list[dict[str, float]] = []
        self.threads_before = torch.get_num_threads()

    def preprocess(self, images: torch.Tensor) -> list[np.ndarray]:  # type: ignore[override]
        return [
            np.ascontiguousarray(image[..., ::-1]) for image in super().preprocess(images)
        ]  # predict takes BGR, like cv2

    def forward(self, inputs: list[np.ndarray]) -> Any:  # type: ignore[override]
        height, width = inputs[0].shape[:2]
        results = self.yolo.predict(
            inputs,
            imgsz=list(self.model_input_size(height, width)),
            device=str(self.device),
            retina_masks=True,
            verbose=False,
        )
        self.speeds.append(results[0].speed)
        return results

    def detections(self, outputs: Any) -> int | None:
        return sum(len(result.boxes) for result in outputs)

    def postprocess(self, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
        """ultralytics Results → the same class-id convention as the zoo adapter: 0 background, class + 1."""
        maps = []
        for result in outputs:
            labels = torch.zeros(size, dtype=torch.int64)
            if result.masks is not None and len(result.boxes):
                order = torch.argsort(result.boxes.conf.cpu())  # most confident painted last, so it wins
                masks, classes = result.masks.data.cpu()[order], result.boxes.cls.cpu().long()[order]
                for mask, class_id in zip(masks, classes):
                    labels[mask[: size[0], : size[1]] > 0.5] = int(class_id) + 1
            maps.append(labels)
        return torch.stack(maps)


class UltralyticsPredict(Backend):
    name = "ultralytics-predict"
    runtime = "pipeline"
    warm_imports = ("ultralytics",)
    description = (
        "ultralytics' own YOLO.predict on host images (its letterbox, NMS and masks; it picks threads and fuses layers)"
    )
    latency_scope = "end_to_end"  # forward is the whole library call: letterbox/resize, model, NMS/masks

    def wrap(self, adapter: SegmentationAdapter) -> SegmentationAdapter:
        if "yaml" not in adapter.card.extra or adapter.card.source != "ultralytics" or "seg" not in adapter.card.family:
            raise UnsupportedError(
                f"ultralytics-predict runs ultralytics segmentation models; {adapter.card.name} is from "
                f"{adapter.card.source}"
            )
        return UltralyticsPipeline(adapter)

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
            "torch_threads_after": torch.get_num_threads(),
            "fused": bool(adapter.yolo.model.is_fused()),
        }
