"""The demo dataset in ultralytics' segmentation format: one polygon per instance, next to the class masks.

ultralytics finds a label file by replacing the last `images/` of an image's path with `labels/`, so the
labels go beside the plain layout's `masks/` (`labels/{train,val}/NNNN.txt`) and the images are shared.
Each connected region of one class is an instance: `<class> x1 y1 x2 y2 ...`, coordinates normalised to
0..1. The photograph (class 0) is background, not an instance, so YOLO class k is the dataset's class
k + 1, which is the shift segbench's YOLO adapter applies when it merges instances into a class map.
Where a later shape covers the middle of an earlier one, the earlier one's outline has no hole (YOLO
polygons cannot hold one); ultralytics draws smaller instances over larger ones, which restores it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from segbench.demo import CLASS_NAMES

MIN_AREA = 4  # px: slivers left where shapes overlap teach nothing and give degenerate polygons
Polygon = np.ndarray  # (n, 2) float32, x then y, normalised to 0..1


def mask_instances(labels: np.ndarray) -> list[tuple[int, Polygon]]:
    """(YOLO class, outline) for every connected region of each object class in a class-id mask."""
    height, width = labels.shape
    scale = np.array([width, height], np.float32)
    instances = []
    for class_id in range(1, len(CLASS_NAMES)):
        count, regions, stats, _ = cv2.connectedComponentsWithStats((labels == class_id).astype(np.uint8), 8)
        for region in range(1, count):
            if stats[region, cv2.CC_STAT_AREA] < MIN_AREA:
                continue
            contours, _ = cv2.findContours(
                (regions == region).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            outline = max(contours, key=cv2.contourArea).reshape(-1, 2)
            if len(outline) >= 3:
                instances.append((class_id - 1, outline.astype(np.float32) / scale))
    return instances


def label_lines(instances: list[tuple[int, Polygon]]) -> str:
    """One YOLO segmentation line per instance."""
    return "".join(
        f"{yolo_class} " + " ".join(f"{value:.6f}" for value in outline.reshape(-1)) + "\n"
        for yolo_class, outline in instances
    )


def instances_to_mask(instances: list[tuple[int, Polygon]], size: tuple[int, int]) -> np.ndarray:
    """The class-id mask the polygons draw, larger instances first, as ultralytics overlaps them."""
    height, width = size
    mask = np.zeros(size, np.uint8)
    scale = np.array([width, height], np.float32)
    pixels = [np.round(outline * scale).astype(np.int32) for _, outline in instances]
    for index in sorted(range(len(instances)), key=lambda i: -cv2.contourArea(pixels[i])):
        cv2.fillPoly(mask, [pixels[index]], instances[index][0] + 1)
    return mask


def write_yolo_dataset(data: Path, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """Write labels/<split>/*.txt for the plain-layout dataset at `data`, and the data YAML ultralytics reads."""
    for split in splits:
        folder = data / "labels" / split
        folder.mkdir(parents=True, exist_ok=True)
        for mask_file in sorted((data / "masks" / split).glob("*.png")):
            labels = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED)
            (folder / f"{mask_file.stem}.txt").write_text(label_lines(mask_instances(labels)))
    config = data / "yolo-data.yaml"
    names = dict(enumerate(CLASS_NAMES[1:]))
    config.write_text(
        yaml.safe_dump(
            {"path": str(data.resolve()), **{split: f"images/{split}" for split in splits}, "names": names},
            sort_keys=False,
        )
    )
    return config
