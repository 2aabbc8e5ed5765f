"""Labelled datasets on disk: images with class-id label PNGs in the plain, Cityscapes or ADE20K layout.

- plain: `images/` + `masks/` with the same stems (optionally one level of split folders, `images/val/`);
  mask values are class ids, `ignore_index` (default 255) marks pixels that count for nothing.
- cityscapes: `leftImg8bit/<split>/<city>/*_leftImg8bit.png` + `gtFine/<split>/<city>/*_gtFine_labelIds.png`;
  label ids are mapped to the 19 train ids, every other id is ignored (as cityscapesScripts does).
- ade20k: `images/<validation|training>/*.jpg` + `annotations/<validation|training>/*.png` (ADEChallengeData2016);
  0 is "other" and ignored, ids 1..150 become 0..149 (as mmsegmentation's reduce_zero_label does).

`check_dataset` reads every mask once at suite load, so a malformed dataset is one line naming the file
before any cell runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from segbench.errors import SegbenchError
from segbench.naming import shorten
from segbench.paths import resolve_path

Layout = Literal["plain", "cityscapes", "ade20k"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# The split names each layout uses on disk for a suite's "val" and "train".
_SPLIT_FOLDERS: dict[str, dict[str, str]] = {
    "plain": {"val": "val", "train": "train"},
    "cityscapes": {"val": "val", "train": "train"},
    "ade20k": {"val": "validation", "train": "training"},
}


# How the accuracy pass brings a prediction to its label (segbench.measure.accuracy), as records and reports say it.
PROTOCOL_TEXT = {
    "benchmarked": (
        "at the benchmarked resolution: each image resized to the cell's resolution, its class map resized back to "
        "the label's size (nearest)"
    ),
    "mmseg": "mmseg's protocol: the logits resized bilinearly to the label's (original) size, then the argmax",
}


class DatasetConfig(BaseModel):
    """`dataset:` in a suite: where the labelled images are and how to read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    layout: Literal["auto", "plain", "cityscapes", "ade20k"] = "auto"
    split: str = Field("val", description="evaluation split: val or train (or a folder name of the layout)")
    ignore_index: Annotated[int, Field(ge=0, le=65535)] = 255
    limit: Annotated[int, Field(gt=0)] | None = None
    protocol: Literal["benchmarked", "mmseg"] = Field(
        "benchmarked",
        description=(
            "benchmarked: class maps at the cell's resolution resized back to the labels (nearest); mmseg: logits "
            "resized bilinearly to the labels' size, then argmax (segbench.measure.accuracy)"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, (str, Path)) else value


class CalibrationConfig(BaseModel):
    """`calibration:` in a suite: a folder of images that int8 precisions calibrate on (never evaluated on)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    limit: Annotated[int, Field(gt=0)] = 8

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, (str, Path)) else value


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path


def detect_layout(root: Path) -> Layout:
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if (root / "annotations").is_dir() and (root / "images").is_dir():
        return "ade20k"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "plain"
    raise SegbenchError(
        f"{root}: not a labelled dataset: expected images/ + masks/ (plain), leftImg8bit/ + gtFine/ (cityscapes) "
        "or images/ + annotations/ (ade20k)"
    )


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    try:  # listing is lazy: an unreadable folder (or subfolder) raises while iterating
        found = folder.rglob("*") if recursive else folder.iterdir()
        return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as exc:
        where = exc.filename or folder
        raise SegbenchError(
            f"{where}: cannot list this folder ({exc.strerror or type(exc).__name__}); make it readable (chmod +rx)"
        ) from None


def images_in_folder(folder: Path) -> list[Path]:
    """The images of a folder (recursively), or one line saying there are none."""
    if not folder.is_dir():
        raise SegbenchError(f"{folder}: folder not found; give a folder of images")
    images = _images_in(folder, recursive=True)
    if not images:
        raise SegbenchError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return images


def _split_folder(layout: Layout, split: str) -> str:
    return _SPLIT_FOLDERS[layout].get(split, split)


class Dataset:
    """A labelled dataset: its (image, mask) pairs for a split, and masks read as train ids."""

    def __init__(self, config: DatasetConfig, base_dir: Path | None = None):
        self.config = config
        self.root = resolve_path(config.path, base_dir)
        if not self.root.is_dir():
            raise SegbenchError(f"{config.path}: dataset folder not found; give a folder with images and label PNGs")
        self.layout: Layout = detect_layout(self.root) if config.layout == "auto" else config.layout

    @property
    def ignore_index(self) -> int:
        return self.config.ignore_index

    def has_split(self, split: str) -> bool:
        folder = _split_folder(self.layout, split)
        images = {"plain": "images", "cityscapes": "leftImg8bit", "ade20k": "images"}[self.layout]
        return (self.root / images / folder).is_dir()

    def samples(self, split: str | None = None, limit: int | None = None) -> list[Sample]:
        """(image, mask) pairs of a split (default: the configured one), sorted, at most `limit` (default: the
        configured one)."""
        split = split or self.config.split
        pairs = getattr(self, f"_{self.layout}_samples")(split)
        if not pairs:
            raise SegbenchError(f"{self.root}: no images in the {self.layout} layout's '{split}' split")
        limit = limit if limit is not None else self.config.limit
        return pairs[:limit] if limit else pairs

    def images(self, split: str, limit: int | None = None) -> list[Path]:
        return [sample.image for sample in self.samples(split, limit)]

    def _plain_samples(self, split: str) -> list[Sample]:
        images, masks = self.root / "images", self.root / "masks"
        if (images / split).is_dir():  # split folders are optional in the plain layout
            images, masks = images / split, masks / split
        return [Sample(image, masks / f"{image.stem}.png") for image in _images_in(images)]

    def _cityscapes_samples(self, split: str) -> list[Sample]:
        folder = _split_folder("cityscapes", split)
        images = _images_in(self.root / "leftImg8bit" / folder, recursive=True)
        gt = self.root / "gtFine" / folder
        return [
            Sample(image, gt / image.parent.name / image.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
            for image in images
            if image.name.endswith("_leftImg8bit.png")
        ]

    def _ade20k_samples(self, split: str) -> list[Sample]:
        folder = _split_folder("ade20k", split)
        annotations = self.root / "annotations" / folder
        return [Sample(image, annotations / f"{image.stem}.png") for image in _images_in(self.root / "images" / folder)]

    def read_mask(self, path: Path) -> np.ndarray:
        """A mask as int64 train ids (H, W), with ignored pixels at ignore_index."""
        if not path.is_file():
            raise SegbenchError(f"{path}: label mask missing; every image needs a mask with the same stem")
        raw = _decode_mask(path)
        if raw.ndim != 2:
            raise SegbenchError(
                f"{path}: label mask has {raw.shape[-1]} channels; save class ids as a single-channel PNG"
            )
        if self.layout == "cityscapes":
            table = np.full(max(256, int(raw.max()) + 1), self.ignore_index, dtype=np.int64)
            from segbench.models.labels import CITYSCAPES_LABEL_TO_TRAIN  # lazy: imports torch

            for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
                table[label_id] = train_id
            return table[raw]
        if self.layout == "ade20k":
            return np.where(raw == 0, self.ignore_index, raw - 1)
        return raw

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.config.path),
            "layout": self.layout,
            "split": self.config.split,
            "ignore_index": self.ignore_index,
        }


def _decode_mask(path: Path) -> np.ndarray:
    """A mask file's pixels, or one line naming the file: whatever the file is, no decoder error escapes."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it; a mask that large is refused the same way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return np.asarray(image).astype(np.int64)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SegbenchError(
            f"{path}: label mask is over PIL's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS:,} pixels); "
            "downscale the dataset's images and masks"
        ) from None
    except OSError as exc:  # unreadable, not an image (UnidentifiedImageError), truncated
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise SegbenchError(
            f"{path}: cannot read this label mask ({shorten(reason, 120)}); save class ids as a single-channel PNG "
            "(and make it readable)"
        ) from None
    except (ValueError, SyntaxError, ImportError) as exc:  # a decoder's own complaint about a malformed file
        raise SegbenchError(
            f"{path}: cannot decode this label mask ({type(exc).__name__}); save class ids as a single-channel PNG"
        ) from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as exc:  # any decoder failure: an unreadable file
        raise SegbenchError(f"{path}: cannot read this image ({type(exc).__name__}); use PNG or JPEG") from None
    return height, width


def check_dataset(dataset: Dataset, num_classes: int | None, owner: str = "the model") -> int:
    """Every sample has a readable mask of its image's size with ids below num_classes; returns the highest id seen."""
    highest = -1
    for sample in dataset.samples():
        mask = dataset.read_mask(sample.mask)
        if mask.shape != image_size(sample.image):
            raise SegbenchError(
                f"{sample.mask}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
                f"{'x'.join(map(str, image_size(sample.image)))}; masks must match their images' size"
            )
        valid = mask[mask != dataset.ignore_index]
        top = int(valid.max()) if valid.size else -1
        if num_classes is not None and top >= num_classes:
            raise SegbenchError(
                f"{sample.mask}: label id {top} is beyond {owner}'s {num_classes} classes (ids 0..{num_classes - 1}); "
                f"set options.num_classes or mark such pixels with ignore_index {dataset.ignore_index}"
            )
        highest = max(highest, top)
    return highest
