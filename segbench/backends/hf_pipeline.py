"""`hf-pipeline`: transformers' `pipeline('image-segmentation')` around the zoo's model, on PIL images."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segbench.backends._pipeline import PipelineAdapter
from segbench.backends.base import Backend, ForwardFn
from segbench.errors import UnsupportedError
from segbench.models.base import SegmentationAdapter

# The image processor each transformers family ships, built in code (no hub config).
PROCESSORS = {"segformer": "SegformerImageProcessor", "mask2former": "Mask2FormerImageProcessor"}


class HFPipeline(PipelineAdapter):
    def __init__(self, inner: SegmentationAdapter, height: int, width: int):
        super().__init__(inner)
        import transformers

        processor_class = getattr(transformers, PROCESSORS[inner.card.family])
        processor = processor_class(size={"height": height, "width": width})
        device = inner.device.index if inner.device.type == "cuda" else -1
        self.pipeline = transformers.pipeline(
            "image-segmentation", model=inner.model, image_processor=processor, device=device
        )
        self.label_ids = {label: int(index) for index, label in inner.model.config.id2label.items()}

    def preprocess(self, images: torch.Tensor) -> list[Any]:  # type: ignore[override]
        from PIL import Image

        return [Image.fromarray(image) for image in super().preprocess(images)]

    def forward(self, inputs: list[Any]) -> Any:  # type: ignore[override]
        return self.pipeline(inputs, subtask="semantic")

    def postprocess(self, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
        """The pipeline's per-class PIL masks → one class-id map per image."""
        per_image = outputs if outputs and isinstance(outputs[0], list) else [outputs]
        maps = []
        for segments in per_image:
            labels = torch.zeros(size, dtype=torch.int64)
            for segment in segments:
                mask = torch.from_numpy(np.array(segment["mask"]) > 127)[: size[0], : size[1]]
                labels[mask] = self.label_ids.get(segment["label"], 0)
            maps.append(labels)
        return torch.stack(maps)


class HFImageSegmentationPipeline(Backend):
    name = "hf-pipeline"
    runtime = "pipeline"
    warm_imports = ("transformers.pipelines",)
    description = (
        "transformers pipeline('image-segmentation') on PIL images (its own processor, resizing and postprocessing)"
    )
    latency_scope = "end_to_end"  # forward is the whole library call: letterbox/resize, model, NMS/masks

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None

    def wrap(self, adapter: SegmentationAdapter) -> SegmentationAdapter:
        if adapter.card.family not in PROCESSORS:
            raise UnsupportedError(
                f"hf-pipeline runs transformers segmentation models ({', '.join(PROCESSORS)}); {adapter.card.name} is "
                f"{adapter.card.family}"
            )
        return _Deferred(adapter)

    def prepare(self, adapter: SegmentationAdapter, example: Any) -> ForwardFn:
        return adapter.forward

    def describe(self, adapter: SegmentationAdapter) -> dict[str, Any] | None:
        if isinstance(adapter, _Deferred) and adapter.pipeline is not None:
            return {
                "pipeline": "transformers image-segmentation (semantic)",
                "processor": type(adapter.pipeline.pipeline.image_processor).__name__,
                "torch_threads_after": torch.get_num_threads(),
            }
        return None


class _Deferred(PipelineAdapter):
    """Builds the pipeline on the first batch, when the cell's resolution is known."""

    def __init__(self, inner: SegmentationAdapter):
        super().__init__(inner)
        self.pipeline: HFPipeline | None = None

    def preprocess(self, images: torch.Tensor) -> list[Any]:  # type: ignore[override]
        if self.pipeline is None:
            self.pipeline = HFPipeline(self.inner, *images.shape[1:3])
        return self.pipeline.preprocess(images)

    def forward(self, inputs: list[Any]) -> Any:  # type: ignore[override]
        assert self.pipeline is not None
        return self.pipeline.forward(inputs)

    def postprocess(self, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
        assert self.pipeline is not None
        return self.pipeline.postprocess(outputs, size)
