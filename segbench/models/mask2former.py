"""Mask2Former with a Swin-T/S/B backbone (transformers), ADE20K semantic (150 classes).

Both the Swin backbone config and the Mask2Former config are written here; transformers builds
the backbone from its config with random weights, so nothing is fetched from the hub. Settings
are those of the ADE20K semantic models of the Mask2Former paper (transformers' defaults): 100
queries, 9 masked-attention decoder layers (transformers counts decoder_layers=10), 6 deformable
pixel-decoder layers; Swin-B is the ImageNet-22k 384 px variant with window 12.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from segbench.models._transformers import TransformersAdapter
from segbench.models.base import InputConstraints, ModelCard, deliver, label_dtype
from segbench.models.registry import register

ADE20K_CLASSES = 150
# Mask2FormerImageProcessor.post_process_semantic_segmentation first resizes the mask logits to this
# fixed size, whatever the input; logits() keeps that step so it matches what postprocess argmaxes.
PROCESSOR_MASK_SIZE = (384, 384)

# variant: (embed dim, blocks per stage, heads per stage, window size, pretraining image size)
_SWIN: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], int, int]] = {
    "swin-t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 224),
    "swin-s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7, 224),
    "swin-b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 384),
}
_PUBLISHED = {"swin-t": 47.0, "swin-s": 69.0, "swin-b": 107.0}  # M, Mask2Former paper Table V (ADE20K semantic)


class Mask2FormerAdapter(TransformersAdapter):
    warm_imports = ("transformers.models.mask2former.modeling_mask2former", "transformers.models.swin.modeling_swin")
    model_class: ClassVar[str] = "Mask2FormerForUniversalSegmentation"
    # Mask2FormerImageProcessor pads to a multiple of 32 (size_divisor), the coarsest backbone stride.
    constraints: ClassVar[InputConstraints] = InputConstraints(min_size=32, multiple_of=32, policy="pad")
    head_keys: ClassVar[tuple[str, ...]] = ("class_predictor.weight",)
    head_extra_rows: ClassVar[int] = 1  # the "no object" class

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._processor: Any = None

    def config(self) -> Any:
        from transformers import Mask2FormerConfig, SwinConfig

        embed_dim, depths, heads, window, image_size = _SWIN[self.card.variant]
        backbone = SwinConfig(
            embed_dim=embed_dim,
            depths=list(depths),
            num_heads=list(heads),
            window_size=window,
            image_size=image_size,
            out_features=["stage1", "stage2", "stage3", "stage4"],  # all four scales feed the pixel decoder
        )
        return Mask2FormerConfig(backbone_config=backbone, num_labels=self.num_classes, **self.label_maps())

    def processor(self) -> Any:
        """The image processor with its default settings, constructed in code (no download)."""
        if self._processor is None:
            from transformers import Mask2FormerImageProcessor

            self._processor = Mask2FormerImageProcessor()
        return self._processor

    def logits(self, outputs: Any) -> torch.Tensor:
        """Per-pixel class scores (N, 150, 384, 384): what the semantic postprocess argmaxes after resizing.

        Each query's class probabilities (without the "no object" class) weighted by its mask
        probability, summed over queries.
        """
        masks = F.interpolate(
            outputs.masks_queries_logits, size=PROCESSOR_MASK_SIZE, mode="bilinear", align_corners=False
        )
        classes = outputs.class_queries_logits.softmax(dim=-1)[..., :-1]
        return torch.einsum("nqc,nqhw->nchw", classes, masks.sigmoid())

    def postprocess(self, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
        """The processor's semantic postprocess at the padded input size, then the padding cropped off."""
        padded = self.model_input_size(*size)
        batch = outputs.class_queries_logits.shape[0]
        maps = self.processor().post_process_semantic_segmentation(outputs, target_sizes=[padded] * batch)
        labels = torch.stack(maps)[:, : size[0], : size[1]].to(label_dtype(self.num_classes))
        return deliver(labels, self.output_policy)


for _variant in _SWIN:
    register(
        ModelCard(
            name=f"mask2former-{_variant}",
            family="mask2former",
            variant=_variant,
            source="transformers",
            num_classes=ADE20K_CLASSES,
            dataset="ade20k",
            published_params_m=_PUBLISHED[_variant],
            params_source="Mask2Former paper (Cheng et al., 2022), Table V, ADE20K semantic",
            description=f"Mask2Former, Swin-{_variant[-1].upper()} backbone, ADE20K semantic (150 classes)",
        ),
        Mask2FormerAdapter,
    )
