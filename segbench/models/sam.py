"""Segment Anything (Kirillov et al., 2023) through transformers' SamModel, built from config with random weights.

SAM is promptable: the image encoder runs once per frame and the mask decoder once per set of
prompts, so the forward is timed as two parts, `image_encoder` and `mask_decoder`. A cell's prompt
policy (option `prompt`) is one point at the centre, a grid of N x N points, or a centred box.
The class-id map gives each pixel the index (1-based) of the prompt whose mask scores it highest,
0 where no mask covers it.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from segbench.models._transformers import TransformersAdapter
from segbench.models.base import InputConstraints, ModelCard, deliver, first_max_indices, label_dtype
from segbench.models.registry import register

MAX_PROMPTS = 64

# Vision-encoder sizes of the three released SAM models (the SAM paper and its official configs).
VARIANTS = {
    "vit-b": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "global_attn_indexes": [2, 5, 8, 11],
        "params_m": 93.7,
    },
    "vit-l": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "global_attn_indexes": [5, 11, 17, 23],
        "params_m": 312.3,
    },
    "vit-h": {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "global_attn_indexes": [7, 15, 23, 31],
        "params_m": 641.1,
    },
}


class SamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: Literal["center-point", "grid", "box"] = "center-point"
    grid_points: int = Field(4, ge=1, le=8)  # N x N points for prompt: grid
    # 1024 is the released architecture; smaller sizes shrink the positional embedding (tests, quick looks only).
    image_size: int = Field(1024, ge=64, le=1024, multiple_of=16)


class SamAdapter(TransformersAdapter):
    warm_imports = ("transformers.models.sam.modeling_sam",)
    model_class: ClassVar[str] = "SamModel"
    constraints: ClassVar[InputConstraints] = InputConstraints(min_size=16)
    options_schema: ClassVar[type[BaseModel]] = SamOptions

    def config(self) -> Any:
        from transformers import SamConfig, SamPromptEncoderConfig, SamVisionConfig

        sizes = {k: v for k, v in VARIANTS[self.card.variant].items() if k != "params_m"}
        vision = SamVisionConfig(**sizes, image_size=self.options.image_size)
        prompt_encoder = SamPromptEncoderConfig(image_size=self.options.image_size)
        return SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt_encoder.to_dict())

    def model_input_size(self, height: int, width: int) -> tuple[int, int]:
        return self.options.image_size, self.options.image_size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize the long side to the encoder's size and pad bottom-right, as SAM's processor does."""
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        height, width = x.shape[-2:]
        side = self.options.image_size
        scale = side / max(height, width)
        self.resized = (round(height * scale), round(width * scale))
        x = F.interpolate(x, size=self.resized, mode="bilinear", align_corners=False, antialias=True) / 255.0
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        x = F.pad((x - mean) / std, (0, side - self.resized[1], 0, side - self.resized[0]))
        return x.to(self.input_dtype)

    def prompts(self, batch: int) -> dict[str, torch.Tensor]:
        """Prompts in the resized image's pixel coordinates, one set per image."""
        height, width = self.resized
        if self.options.prompt == "box":
            box = torch.tensor([width * 0.25, height * 0.25, width * 0.75, height * 0.75], device=self.device)
            return {"input_boxes": box.view(1, 1, 4).expand(batch, 1, 4)}
        if self.options.prompt == "grid":
            n = self.options.grid_points
            ys, xs = torch.meshgrid(
                (torch.arange(n) + 0.5) * height / n, (torch.arange(n) + 0.5) * width / n, indexing="ij"
            )
            points = torch.stack([xs.flatten(), ys.flatten()], dim=-1).to(self.device)
        else:
            points = torch.tensor([[width / 2, height / 2]], device=self.device)
        count = points.shape[0]
        return {
            "input_points": points.view(1, count, 1, 2).expand(batch, count, 1, 2),
            "input_labels": torch.ones(batch, count, 1, dtype=torch.long, device=self.device),
        }

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        return self.model.get_image_embeddings(pixels)

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        out = self.model(image_embeddings=embeddings, multimask_output=False, **self.prompts(embeddings.shape[0]))
        return out.pred_masks[:, :, 0]  # (N, prompts, 256, 256) mask logits

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(inputs))

    def forward_parts(self) -> list[tuple[str, Callable[[Any], Any]]]:
        return [("image_encoder", self.encode), ("mask_decoder", self.decode)]

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """Per-prompt mask logits at the resized image size, with a zero 'no mask' channel first."""
        side = self.options.image_size
        masks = F.interpolate(outputs.float(), size=(side, side), mode="bilinear", align_corners=False)
        masks = masks[..., : self.resized[0], : self.resized[1]]
        return torch.cat([torch.zeros_like(masks[:, :1]), masks], dim=1)

    def postprocess(self, outputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        scores = F.interpolate(self.logits(outputs), size=size, mode="bilinear", align_corners=False)
        return deliver(first_max_indices(scores).to(label_dtype(scores.shape[1])), self.output_policy)

    def notes(self) -> list[str]:
        notes = [
            f"prompt policy: {self.options.prompt}"
            + (
                f" ({self.options.grid_points}x{self.options.grid_points} points)"
                if self.options.prompt == "grid"
                else ""
            )
        ]
        if self.options.image_size != 1024:
            notes.append(
                f"image_size {self.options.image_size}: not the released 1024 architecture (smaller positional "
                "embedding)"
            )
        return notes


for _variant, _sizes in VARIANTS.items():
    register(
        ModelCard(
            name=f"sam-{_variant}",
            family="sam",
            variant=_variant,
            source="transformers",
            num_classes=MAX_PROMPTS + 1,
            dataset="promptable (class k = the k-th prompt's mask)",
            published_params_m=_sizes["params_m"],
            params_source=(
                "Segment Anything (Kirillov et al. 2023) released checkpoints: ViT-B 91 M image encoder, "
                "93.7 M total; ViT-L 312 M; ViT-H 641 M (as counted by transformers' SamModel)"
            ),
            description=(
                f"Segment Anything {_variant.upper()} (promptable; encoder and decoder timed as separate stages)"
            ),
        ),
        SamAdapter,
    )
