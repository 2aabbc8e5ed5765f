"""Real images for calibration and evaluation: the one place that decides which image serves which role.

Random-noise inputs are fine for timing, but quantization calibration and output agreement need the
statistics of real images. The photographs scikit-image ships (no download) are split in two halves
that never meet: int8 precisions calibrate on one (or on the suite's `calibration:` folder, or its
dataset's train split), and fidelity judges on the other, so no precision is judged on the images
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

# Colour photographs bundled inside scikit-image's wheel (skimage/data/*.png|jpg).
PHOTOGRAPHS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "motorcycle_left",
)
PhotoSplit = Literal["calibration", "evaluation"]


@functools.lru_cache(maxsize=1)
def sample_photographs() -> tuple[np.ndarray, ...]:
    import skimage.data

    images = []
    for name in PHOTOGRAPHS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # a build of scikit-image without that file: use the others
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            images.append(np.ascontiguousarray(image[..., :3]))
    if not images:
        raise RuntimeError("scikit-image ships no colour sample photographs in this installation")
    return tuple(images)


def resized(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    tensor = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()
    tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return tensor.round().clamp(0, 255).to(torch.uint8).squeeze(0).permute(1, 2, 0).contiguous()


def split_photographs(split: PhotoSplit) -> tuple[np.ndarray, ...]:
    """Half of the photographs: calibration takes the even positions, evaluation the odd ones (disjoint)."""
    photos = sample_photographs()
    start = 0 if split == "calibration" else 1
    return photos[start::2] or photos[:1]


def _batched(frames: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    return [torch.stack(frames[i : i + batch_size]) for i in range(0, len(frames) - batch_size + 1, batch_size)]


def photo_batches(
    height: int, width: int, batch_size: int, count: int = 8, split: PhotoSplit = "evaluation"
) -> list[torch.Tensor]:
    """`count` frames from one half of the photographs at (height, width), as host uint8 batches (N, H, W, 3).

    A half has four photographs; later passes over it are mirrored, so eight frames are eight different images.
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
