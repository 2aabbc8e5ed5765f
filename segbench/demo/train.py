"""Train the demo models on the synthetic dataset: seeded, on the CPU, fp16 weights out.

Each model is built through segbench's own adapter (so the weights load exactly as a suite loads
them) with a 5-class head, trained with cross-entropy and AdamW under a one-cycle schedule, mirrored
at random, and scored on the validation split with the same confusion matrix the accuracy pass uses.
Every epoch after the first draws a fresh set of samples from the generator (its own seed stream,
apart from validation's): with 300 fixed images both models memorised them (train loss 0.03,
validation mIoU 0.56 and 0.33), and a new sample costs ~5 ms against a step's ~300.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segbench.data.datasets import Dataset, DatasetConfig
from segbench.data.images import read_rgb
from segbench.demo import CLASS_NAMES, WEIGHTS_DIR
from segbench.demo.generate import SEEDS, make_sample
from segbench.measure.accuracy import ConfusionMatrix
from segbench.models.base import SegmentationAdapter
from segbench.models.registry import create_model


@dataclass(frozen=True)
class Recipe:
    model: str
    epochs: int
    lr: float
    batch_size: int = 16
    weight_decay: float = 1e-4

    @property
    def weights_file(self) -> Path:
        return WEIGHTS_DIR / f"{self.model}-shapes.safetensors"


RECIPES = {
    "fast-scnn": Recipe("fast-scnn", epochs=60, lr=3e-3),
    "segformer-b0": Recipe("segformer-b0", epochs=30, lr=1e-3),
}


def demo_options() -> dict[str, Any]:
    return {"num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES)}


def load_split(data: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, H, W, 3) uint8 and masks (N, H, W) int64 of a split."""
    dataset = Dataset(DatasetConfig(path=data, split=split))
    samples = dataset.samples()
    images = torch.from_numpy(np.stack([read_rgb(s.image) for s in samples]))
    masks = torch.from_numpy(np.stack([dataset.read_mask(s.mask) for s in samples]))
    return images, masks


def fresh_samples(epoch: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` new training samples for an epoch, from a seed stream no other split uses."""
    rng = np.random.default_rng([SEEDS["fresh"], epoch])
    pairs = [make_sample(rng) for _ in range(count)]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(
        np.stack([p[1] for p in pairs]).astype(np.int64)
    )


def _logits(adapter: SegmentationAdapter, images: torch.Tensor) -> torch.Tensor:
    scores = adapter.logits(adapter.model(adapter.preprocess(images)))  # type: ignore[misc]
    return F.interpolate(scores, size=images.shape[1:3], mode="bilinear", align_corners=False)


def evaluate(
    adapter: SegmentationAdapter, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 25
) -> dict[str, Any]:
    """Validation mIoU / pixel accuracy through the adapter's own preprocess and postprocess."""
    assert adapter.model is not None
    adapter.model.eval()
    matrix = ConfusionMatrix(adapter.num_classes)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            labels = adapter.postprocess(adapter.forward(adapter.preprocess(batch)), tuple(batch.shape[1:3]))
            for truth, predicted in zip(masks[start : start + batch_size], labels):
                matrix.add(truth.numpy(), predicted.numpy())
    return matrix.result(adapter.class_names)


def train(recipe: Recipe, data: Path, log: Any = print) -> dict[str, Any]:
    """Train one model from its recipe; write its fp16 weights; return the validation figures."""
    torch.manual_seed(0)
    images, masks = load_split(data, "train")
    val_images, val_masks = load_split(data, "val")
    adapter = create_model(recipe.model, options=demo_options())
    adapter.build("cpu")
    model = adapter.model
    assert model is not None
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * math.ceil(len(images) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        if epoch > 0:
            images, masks = fresh_samples(epoch, len(images))
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(images), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            batch, target = images[index], masks[index]
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(2), batch)
            target = torch.where(flip.view(-1, 1, 1), target.flip(2), target)
            loss = F.cross_entropy(_logits(adapter, batch), target, ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        log(
            f"{recipe.model} epoch {epoch + 1}/{recipe.epochs}: loss {total / len(images):.4f} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    result = evaluate(adapter, val_images, val_masks)
    result["train_s"] = time.perf_counter() - started
    save_fp16(model, recipe.weights_file)
    log(
        f"{recipe.model}: validation mIoU {result['miou']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f} in "
        f"{result['train_s']:.0f} s → {recipe.weights_file}"
    )
    return result


def save_fp16(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        key: (value.half() if value.is_floating_point() else value).contiguous()
        for key, value in model.state_dict().items()
    }
    save_file(state, str(path), metadata={"class_names": ",".join(CLASS_NAMES)})
