"""SegFormer B0-B5 (transformers), built from configs written here, never downloaded.

The encoder sizes follow the public nvidia/mit-b0..b5 configs (the MiT settings of the paper); the
all-MLP decoder is 256 wide for B0/B1 and 768 for B2-B5. Logits come at 1/4 of the input; the base
postprocess (bilinear upsample to the input, argmax) is what SegformerImageProcessor does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from segbench.models._transformers import TransformersAdapter
from segbench.models.base import ModelCard
from segbench.models.labels import CITYSCAPES_NAMES
from segbench.models.registry import register

# variant: (hidden sizes of the four stages, blocks per stage, decoder width)
_ENCODERS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}
# Total parameters (M) with the ADE20K decoder, SegFormer paper Table 1a.
_PUBLISHED_ADE = {"b0": 3.8, "b1": 13.7, "b2": 27.5, "b3": 47.3, "b4": 64.1, "b5": 84.7}
_DATASETS = {"ade20k": ("", 150), "cityscapes": ("-cityscapes", 19)}


class SegformerAdapter(TransformersAdapter):
    warm_imports = ("transformers.models.segformer.modeling_segformer",)
    model_class: ClassVar[str] = "SegformerForSemanticSegmentation"
    head_keys: ClassVar[tuple[str, ...]] = ("decode_head.classifier.weight",)

    def config(self) -> Any:
        from transformers import SegformerConfig

        hidden_sizes, depths, decoder = _ENCODERS[self.card.variant]
        # The remaining defaults (heads 1/2/5/8, reduction ratios 8/4/2/1, patch sizes 7/3/3/3) are shared by all
        # variants.
        return SegformerConfig(
            hidden_sizes=list(hidden_sizes),
            depths=list(depths),
            decoder_hidden_size=decoder,
            num_labels=self.num_classes,
            **self.label_maps(),
        )

    def logits(self, outputs: Any) -> torch.Tensor:
        return outputs.logits


for _variant in _ENCODERS:
    for _dataset, (_suffix, _classes) in _DATASETS.items():
        _ade = _dataset == "ade20k"
        register(
            ModelCard(
                name=f"segformer-{_variant}{_suffix}",
                family="segformer",
                variant=_variant,
                source="transformers",
                num_classes=_classes,
                dataset=_dataset,
                # The paper prints one count per variant, for the 150-class ADE20K head; the 19-class head is
                # 131 x (decoder width + 1) parameters smaller, so no published figure applies to it.
                published_params_m=_PUBLISHED_ADE[_variant] if _ade else None,
                params_source="SegFormer paper (Xie et al., 2021), Table 1a, ADE20K" if _ade else "",
                description=(
                    f"SegFormer-{_variant.upper()} (MiT encoder + all-MLP decoder), {_dataset} {_classes} classes"
                ),
                class_names=None if _ade else CITYSCAPES_NAMES,
            ),
            SegformerAdapter,
        )
