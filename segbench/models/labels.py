"""Public label sets: class names of the datasets the registered heads are sized for, and Cityscapes' id mapping."""

from __future__ import annotations

import functools
from pathlib import Path

from segbench import safe_yaml
from segbench.models._imports import import_ultralytics

# Cityscapes' 19 evaluation classes, in train-id order (cityscapesScripts, helpers/labels.py).
CITYSCAPES_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
# labelId -> trainId for those 19 classes; every other labelId is ignored (cityscapesScripts, helpers/labels.py).
CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}

# Pascal VOC 2012's 21 classes (background first), as torchvision's VOC-label weights name them.
VOC_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@functools.lru_cache(maxsize=1)
def coco_names() -> tuple[str, ...]:
    """COCO's 80 detection classes, from the dataset YAML ultralytics ships (no download)."""
    import_ultralytics()
    import ultralytics

    names = safe_yaml.load_file(Path(ultralytics.__file__).parent / "cfg" / "datasets" / "coco.yaml")["names"]
    return tuple(str(names[index]) for index in sorted(names))
