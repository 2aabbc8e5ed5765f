"""The synthetic labelled dataset: shapes and textures painted on crops of the bundled photographs (seeded)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segbench.data.images import sample_photographs
from segbench.demo import CLASS_NAMES, SIZE, TRAIN_IMAGES, VAL_IMAGES

SEEDS = {"train": 0, "val": 1, "fresh": 2}  # different streams: no validation image repeats a training one
# ("fresh": the samples train.py draws anew each epoch, never written to disk)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop of a random photograph, resized to size x size, maybe mirrored."""
    photos = sample_photographs()
    photo = photos[int(rng.integers(len(photos)))]
    height, width = photo.shape[:2]
    side = int(rng.integers(min(height, width) // 4, min(height, width) + 1))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = cv2.resize(photo[top : top + side, left : left + side], (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _shape_mask(rng: np.random.Generator, class_id: int, size: int) -> np.ndarray:
    """Where one shape of the class lies (uint8 0/1)."""
    mask = np.zeros((size, size), np.uint8)
    extent = int(rng.integers(size // 8, size // 3))
    cx, cy = (int(v) for v in rng.integers(extent // 2, size - extent // 2, 2))
    if class_id == 1:
        cv2.circle(mask, (cx, cy), extent // 2, 1, -1)
    elif class_id == 2:
        half = extent // 2
        cv2.rectangle(mask, (cx - half, cy - half), (cx + half, cy + half), 1, -1)
    elif class_id == 3:
        angle = rng.uniform(0, 2 * np.pi)
        points = [
            (
                cx + extent * 0.6 * np.cos(angle + k * 2 * np.pi / 3),
                cy + extent * 0.6 * np.sin(angle + k * 2 * np.pi / 3),
            )
            for k in range(3)
        ]
        cv2.fillPoly(mask, [np.array(points, np.int32)], 1)
    else:
        axes = (extent // 2, int(rng.integers(extent // 4, extent // 2 + 1)))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def _fill(rng: np.random.Generator, class_id: int, size: int) -> np.ndarray:
    """The shape's pixels: a flat colour with a little noise, or a checkerboard of two colours for class 4."""
    if class_id == 4:
        cell = int(rng.integers(3, 7))
        grid = ((np.arange(size)[:, None] // cell + np.arange(size)[None, :] // cell) % 2).astype(bool)
        return np.where(grid[..., None], np.array(_colour(rng), np.uint8), np.array(_colour(rng), np.uint8))
    noise = rng.integers(-12, 13, (size, size, 3))
    return np.clip(np.array(_colour(rng)) + noise, 0, 255).astype(np.uint8)


def make_sample(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One image (RGB uint8) and its class-id mask: 1 to 4 shapes, later ones on top."""
    image, labels = _background(rng, size), np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        class_id = int(rng.integers(1, len(CLASS_NAMES)))
        mask = _shape_mask(rng, class_id, size).astype(bool)
        image[mask] = _fill(rng, class_id, size)[mask]
        labels[mask] = class_id
    return image, labels


def generate(out: Path, train: int = TRAIN_IMAGES, val: int = VAL_IMAGES, size: int = SIZE) -> Path:
    """Write the dataset in the plain layout: images/{train,val}/NNNN.png and masks/{train,val}/NNNN.png."""
    for split, count in (("train", train), ("val", val)):
        rng = np.random.default_rng(SEEDS[split])
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "masks" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, labels = make_sample(rng, size)
            cv2.imwrite(str(out / "images" / split / f"{index:04d}.png"), image[..., ::-1])
            cv2.imwrite(str(out / "masks" / split / f"{index:04d}.png"), labels)
    return out
