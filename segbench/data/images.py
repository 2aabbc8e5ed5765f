"""Real images for calibration and evaluation: the one place that decides which image serves which role.

Random-noise inputs are fine for timing, but quantization calibration and output agreement need the
statistics of real images. Seven photographs scikit-image ships (no download) are split by name into two halves
that never meet (four calibrate, three judge; `photograph_names()`, recorded in meta.json): int8
precisions calibrate on one (or on the suite's `calibration:` folder, or its dataset's train split),
and fidelity judges on the other, so no precision is judged on the images
it was calibrated on.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

# The colour photographs bundled inside scikit-image's wheel (skimage/data/*.png|jpg), named per half: calibration
# four, evaluation three (what the old even/odd split of these seven gave). `motorcycle_left`, once listed, is a
# download (skimage's stereo pair), not in the wheel: a run never depended on it.
CALIBRATION_PHOTOGRAPHS = ("astronaut", "chelsea", "immunohistochemistry", "retina")
EVALUATION_PHOTOGRAPHS = ("coffee", "rocket", "hubble_deep_field")
# Interleaved, the order the bundled demo and stream sources have always read them in.
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
PhotoSplit = Literal["calibration", "evaluation"]
SPLIT_NAMES: dict[PhotoSplit, tuple[str, ...]] = {
    "calibration": CALIBRATION_PHOTOGRAPHS,
    "evaluation": EVALUATION_PHOTOGRAPHS,
}


def photograph_names() -> dict[str, list[str]]:
    """Which photograph serves which role, as a run records it (meta.json `photographs`)."""
    return {split: list(names) for split, names in SPLIT_NAMES.items()}


@functools.lru_cache(maxsize=None)
def _photograph(name: str) -> np.ndarray:
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise RuntimeError(
            f"scikit-image {getattr(skimage, '__version__', '?')} has no sample photograph '{name}' "
            "(segbench.data.images names the set it calibrates and judges on); install scikit-image >= 0.19"
        )
    image = loader()
    return np.ascontiguousarray(image[..., :3])


def sample_photographs() -> tuple[np.ndarray, ...]:
    """Every photograph of both halves, in PHOTOGRAPHS' order."""
    return tuple(_photograph(name) for name in PHOTOGRAPHS)


def resized(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    tensor = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()
    tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return tensor.round().clamp(0, 255).to(torch.uint8).squeeze(0).permute(1, 2, 0).contiguous()


def split_photographs(split: PhotoSplit) -> tuple[np.ndarray, ...]:
    """One half of the photographs, by name (SPLIT_NAMES): the halves never share an image."""
    return tuple(_photograph(name) for name in SPLIT_NAMES[split])


def _batched(frames: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    return [torch.stack(frames[i : i + batch_size]) for i in range(0, len(frames) - batch_size + 1, batch_size)]


def photo_batches(
    height: int, width: int, batch_size: int, count: int = 8, split: PhotoSplit = "evaluation"
) -> list[torch.Tensor]:
    """`count` frames from one half of the photographs at (height, width), as host uint8 batches (N, H, W, 3).

    Calibration has four photographs, evaluation three (SPLIT_NAMES); later passes over a half are mirrored, so up
    to twice that many frames are all different images.
    """
    photos = split_photographs(split)
    frames = []
    resized_photos: dict[int, torch.Tensor] = {}  # each photograph is resized once, however many passes reuse it
    for i in range(max(count, batch_size)):
        index = i % len(photos)
        if index not in resized_photos:
            resized_photos[index] = resized(photos[index], height, width)
        frame = resized_photos[index]
        frames.append(frame.flip(1) if (i // len(photos)) % 2 else frame)
    return _batched(frames, batch_size)


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def file_batches(paths: Sequence[Path], height: int, width: int, batch_size: int, count: int = 8) -> list[torch.Tensor]:
    """Up to `count` images from files (at least one batch, repeating files if there are fewer), resized, batched."""
    chosen = [paths[i % len(paths)] for i in range(max(min(count, len(paths)), batch_size))]
    return _batched([resized(read_rgb(path), height, width) for path in chosen], batch_size)


def calibration_batches(
    height: int, width: int, batch_size: int, files: Sequence[Path] = (), count: int = 8
) -> list[torch.Tensor]:
    """What int8 precisions calibrate on: the given files (a calibration folder, a train split), else the calibration
    photographs."""
    if files:
        return file_batches(files, height, width, batch_size, count)
    return photo_batches(height, width, batch_size, count, split="calibration")


def evaluation_batches(height: int, width: int, batch_size: int, count: int = 8) -> list[torch.Tensor]:
    """What fidelity judges on: the held-out photographs, never a calibration image."""
    return photo_batches(height, width, batch_size, count, split="evaluation")
