"""`segbench predict`: run real images through a model and write the outputs practitioners use.

Per image: the class-id map (PNG), a coloured overlay (PNG) with a legend strip below it (each class found, by name,
with its share of the image), and a JSON with per-class name, pixel area and share, contours (OpenCV findContours) and
an uncompressed COCO-style RLE mask per class. The model runs as one precision x backend path (`predict_path`).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segbench.errors import SegbenchError
from segbench.measure.accuracy import ConfusionMatrix
from segbench.naming import REFERENCE_BACKEND, REFERENCE_PRECISION
from segbench.tools.predict_path import PredictPath

RANDOM_WEIGHTS_WARNING = (
    "random weights (no weights file given): these masks are meaningless; they show the output "
    "format and the speed only"
)
DEFAULT_MAX_PIXELS = 4096 * 4096  # 16.8 MP: a 4K frame fits twice; a 16000² PNG (256 MP) would need gigabytes
MAX_CONTOUR_POINTS = 2000  # per class, so a JSON stays readable for noisy masks
MAX_LEGEND_ENTRIES = 12  # the largest classes; the rest are counted ("+3 more") and all are in the JSON


PREDICT_STAGES = ("read", "preprocess", "forward", "postprocess", "write")


@dataclass(frozen=True)
class Prediction:
    image: Path
    class_map: Path
    overlay: Path
    summary: Path
    timing_ms: dict[str, float] = field(default_factory=dict)  # per stage, one pass (the first includes warm-up)
    top_classes: tuple[
        tuple[str, float], ...
    ] = ()  # (class name, or "class N" without names; share of pixels), largest first

    def classes_text(self) -> str:
        return ", ".join(f"{name} {share * 100:.1f} %" for name, share in self.top_classes)

    def files_text(self) -> str:
        """The three files written, the folder named once: `out/cam.{classes.png, overlay.png, json}`."""
        names = [self.class_map.name, self.overlay.name, self.summary.name]
        stem = self.summary.name[: -len(".json")]
        tails = ", ".join(name[len(stem) + 1 :] for name in names)
        return f"{self.summary.parent / stem}.{{{tails}}}"

    def total_ms(self) -> float:
        return sum(self.timing_ms.values())

    def timing_text(self) -> str:
        stages = " · ".join(
            f"{stage} {self.timing_ms[stage]:.1f} ms" for stage in PREDICT_STAGES if stage in self.timing_ms
        )
        return f"{stages} · total {sum(self.timing_ms.values()):.1f} ms"


def read_image(path: Path) -> np.ndarray:
    """An image as RGB. The bytes are read in Python and decoded in memory: OpenCV's own path handling crashes on a
    file name that is not UTF-8."""
    import cv2

    if not path.is_file():
        raise SegbenchError(f"{path}: image not found")
    try:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise SegbenchError(f"{path}: cannot read this image ({exc.strerror or exc}); make it readable") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise SegbenchError(f"{path}: cannot decode this image (use PNG or JPEG)")
    return np.ascontiguousarray(image[..., ::-1])  # BGR -> RGB


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """PIL's decompression-bomb limit raised to `max_pixels` for the block, so --max-pixels is the one limit."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max(saved or 0, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # --max-pixels decides, in one line
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_image_size(path: Path, max_pixels: int) -> None:
    """Refuse an image over the pixel limit from its header alone, before decoding allocates anything."""
    from PIL import Image

    if not path.is_file():
        raise SegbenchError(f"{path}: image not found")
    try:
        with pixel_limit(max_pixels), Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # over twice PIL's (raised) limit: over max_pixels too
        raise SegbenchError(
            f"{path}: over {max_pixels:,} pixels (PIL calls it a decompression bomb); downscale it or raise "
            "--max-pixels"
        ) from None
    except (OSError, ValueError, ImportError):
        # Not something PIL reads (ImportError: ultralytics patches Image.open to fetch a HEIF plugin on an
        # unknown file, which fails offline); the decoder says what is wrong with it.
        return
    if width * height > max_pixels:
        raise SegbenchError(
            f"{path}: {width}x{height} is {width * height:,} pixels, over --max-pixels {max_pixels:,}; downscale the "
            "image or raise --max-pixels"
        )


def output_stems(images: list[Path]) -> list[str]:
    """A distinct output name per image: its stem, numbered (`cam-2`) where another image has the same one
    (`a/cam.png b/cam.png` would otherwise overwrite each other's outputs)."""
    taken = {path.stem for path in images}
    seen: set[str] = set()
    stems = []
    for path in images:
        stem, number = path.stem, 1
        while stem in seen or (number > 1 and stem in taken):
            number += 1
            stem = f"{path.stem}-{number}"
        seen.add(stem)
        stems.append(stem)
    return stems


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder and prove it writable before any model is built, or say why in one line."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except FileExistsError:
        raise SegbenchError(f"--out {out_dir}: is a file, not a folder; choose a folder for the outputs") from None
    except OSError as exc:
        raise SegbenchError(
            f"--out {out_dir}: cannot write there ({exc.strerror or exc}); choose a writable folder"
        ) from None


def _out_of_memory(path: Path, shape: tuple[int, ...], exc: BaseException) -> SegbenchError:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return SegbenchError(
        f"{path}: out of memory segmenting {shape[0]}x{shape[1]} px ({type(exc).__name__}: {text[:160]}); use a "
        "smaller image or a device with more memory"
    )


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(
        marker in str(exc).lower() for marker in ("out of memory", "can't allocate memory", "cannot allocate memory")
    )


def palette(num_classes: int) -> np.ndarray:
    """A fixed, well-spread colour per class (class 0 dark grey)."""
    rng = np.random.default_rng(7)
    colours = rng.integers(40, 256, size=(num_classes, 3), dtype=np.uint8)
    colours[0] = (40, 40, 40)
    return colours


def _legend_font(width: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=max(11, min(28, width // 50)))  # readable on a thumbnail and on a 4K frame


def with_legend(
    blended: np.ndarray, labels: np.ndarray, colours: np.ndarray, names: dict[int, str] | None
) -> np.ndarray:
    """The overlay with a strip below it: a colour swatch, the class name and its share per class found, largest
    first, wrapped to the image's width. The image's own pixels are untouched, so the overlay's top left is the
    image's."""
    from PIL import Image, ImageDraw

    width = blended.shape[1]
    font = _legend_font(width)
    size = int(font.size)
    entries = top_classes(labels, names, count=MAX_LEGEND_ENTRIES, with_ids=True)
    left = int(np.unique(labels).size) - len(entries)
    items = [(colours[class_id], f"{name} {share * 100:.1f} %") for class_id, name, share in entries]
    if left:
        items.append((None, f"+{left} more (in the JSON)"))
    pad, swatch = size // 2, size
    rows: list[list[tuple[Any, str, int]]] = [[]]
    x = pad
    for colour, text in items:
        step = (swatch + pad // 2 if colour is not None else 0) + int(font.getlength(text)) + 2 * pad
        if rows[-1] and x + step > width:
            rows.append([])
            x = pad
        rows[-1].append((colour, text, x))
        x += step
    row_height = size + pad
    strip = Image.new("RGB", (width, len(rows) * row_height + pad), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for index, row in enumerate(rows):
        top = pad + index * row_height
        for colour, text, x in row:
            if colour is not None:
                draw.rectangle([x, top, x + swatch - 1, top + swatch - 1], fill=tuple(int(c) for c in colour))
                draw.rectangle([x, top, x + swatch - 1, top + swatch - 1], outline=(0, 0, 0))
                x += swatch + pad // 2
            draw.text((x, top), text, fill=(0, 0, 0), font=font)
    return np.concatenate([blended, np.asarray(strip, dtype=np.uint8)], axis=0)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE: run lengths over the column-major flattened mask, starting with zeros."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1] if flat.size else 0]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    if flat.size and counts and sum(counts) < flat.size:
        counts.append(flat.size - sum(counts))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    height, width = rle["size"]
    values = np.zeros(height * width, dtype=np.uint8)
    position, value = 0, 0
    for count in rle["counts"]:
        values[position : position + count] = value
        position += count
        value = 1 - value
    return values.reshape(width, height).T


def contours_of(mask: np.ndarray) -> list[list[list[int]]]:
    import cv2

    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons, budget = [], MAX_CONTOUR_POINTS
    for contour in sorted(found, key=cv2.contourArea, reverse=True):
        points = contour.reshape(-1, 2).tolist()
        if len(points) > budget:
            break
        polygons.append(points)
        budget -= len(points)
    return polygons


def class_summary(labels: np.ndarray, names: dict[int, str] | None = None) -> list[dict[str, Any]]:
    total = labels.size
    rows = []
    for class_id, pixels in zip(*np.unique(labels, return_counts=True)):
        mask = labels == class_id
        rows.append(
            {
                "id": int(class_id),
                "name": (names or {}).get(int(class_id)),
                "pixels": int(pixels),
                "share": float(pixels) / total,
                "contours": contours_of(mask),
                "rle": rle_encode(mask),
            }
        )
    return rows


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Encoded in memory and written in Python (OpenCV's own path handling crashes on a non-UTF-8 name)."""
    import cv2

    encoded, data = cv2.imencode(".png", pixels)
    if not encoded:
        raise SegbenchError(f"{path}: OpenCV could not encode the PNG")
    path.write_bytes(data.tobytes())


def write_outputs(
    image_path: Path,
    image: np.ndarray,
    labels: np.ndarray,
    out_dir: Path,
    num_classes: int,
    meta: dict[str, Any],
    names: dict[int, str] | None = None,
    stem: str | None = None,
) -> Prediction:
    stem = stem or image_path.stem
    class_map = out_dir / f"{stem}.classes.png"
    overlay = out_dir / f"{stem}.overlay.png"
    summary = out_dir / f"{stem}.json"
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    colours = palette(num_classes)
    blended = with_legend((0.5 * image + 0.5 * colours[labels]).astype(np.uint8), labels, colours, names)
    document = {
        **meta,
        "image": str(image_path),
        "height": labels.shape[0],
        "width": labels.shape[1],
        "classes": class_summary(labels, names),
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_png(class_map, labels.astype(dtype))
        _write_png(overlay, blended[..., ::-1])
        summary.write_text(json.dumps(document, indent=1))  # ASCII: a non-UTF-8 file name is escaped
    except OSError as exc:
        raise SegbenchError(
            f"{exc.filename or out_dir}: cannot write ({exc.strerror or exc}); free space or choose a writable --out"
        ) from None
    return Prediction(image_path, class_map, overlay, summary)


def top_classes(
    labels: np.ndarray, names: dict[int, str] | None, count: int = 3, with_ids: bool = False
) -> tuple[Any, ...]:
    """The classes covering most pixels, by name where the model has names: (name, share), or (id, name, share)."""
    ids, pixels = np.unique(labels, return_counts=True)
    order = np.argsort(-pixels, kind="stable")[:count]
    found = [
        (int(ids[i]), (names or {}).get(int(ids[i]), f"class {int(ids[i])}"), float(pixels[i]) / labels.size)
        for i in order
    ]
    return tuple(found) if with_ids else tuple((name, share) for _, name, share in found)


class _StageClock:
    """Per-stage wall time of one image, synchronising the GPU so a stage's kernels count in that stage."""

    def __init__(self, device: torch.device):
        self.device = device
        self.timing_ms: dict[str, float] = {}
        self.started = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timing_ms[stage] = (now - self.started) * 1000.0
        self.started = now


def predict(
    model: str,
    images: list[Path],
    out_dir: Path,
    weights: Path | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    precision: str = REFERENCE_PRECISION,
    backend: str = REFERENCE_BACKEND,
    class_names: list[str] | None = None,
) -> list[Prediction]:
    """Segment each image with the model as `precision` on `backend` runs it and write its outputs; each Prediction
    carries its per-stage timing (single pass, not a benchmark).

    The pair is checked (as `run` checks it) and every image against `max_pixels` before the model is built; running
    out of memory on one is a one-line error naming it.
    """
    path_ = PredictPath(model, weights, options, device, precision, backend, class_names)
    for path in images:
        check_image_size(path, max_pixels)
    prepare_out_dir(out_dir)
    predictions = []
    for path, stem in zip(images, output_stems(images)):
        clock = _StageClock(path_.device)
        image = read_image(path)
        clock.lap("read")
        prepared = path_.prepared(*image.shape[:2])  # built once, or once per size for an exported path
        adapter = prepared.adapter
        problem = adapter.constraints.problem(*image.shape[:2])
        if problem:
            raise SegbenchError(f"{path}: {image.shape[0]}x{image.shape[1]} is {problem} for model '{model}'")
        clock.started = time.perf_counter()  # building is build_s, never a stage
        try:
            with torch.inference_mode(), path_.autocast():
                inputs = adapter.preprocess(torch.from_numpy(image).unsqueeze(0))
                clock.lap("preprocess")
                outputs = prepared.forward(inputs)
                clock.lap("forward")
                labels = adapter.postprocess(outputs, image.shape[:2])[0].cpu().numpy()
                clock.lap("postprocess")
        except (MemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            raise _out_of_memory(path, image.shape, exc) from None
        class_names_ = path_.names(adapter)
        names = dict(enumerate(class_names_)) if class_names_ else None
        meta = {
            "model": model,
            "weights": str(weights) if weights else None,
            "random_weights": weights is None,
            "note": RANDOM_WEIGHTS_WARNING if weights is None else None,
            "precision": precision,
            "backend": backend,
            "num_classes": adapter.num_classes,
            "class_names": list(class_names_) if class_names_ else None,
            "dataset": adapter.card.dataset if adapter.num_classes == adapter.card.num_classes else None,
            "build_s": round(prepared.build_s, 3),
            "timing_ms": {stage: round(ms, 3) for stage, ms in clock.timing_ms.items()},
        }
        prediction = write_outputs(path, image, labels, out_dir, adapter.num_classes, meta, names, stem)
        clock.lap("write")
        predictions.append(replace(prediction, timing_ms=dict(clock.timing_ms), top_classes=top_classes(labels, names)))
    return predictions


def dataset_accuracy(dataset: Any, predictions: list[Prediction], out_dir: Path) -> dict[str, Any]:
    """Score predicted class maps against the dataset's masks (same stems, native size); writes accuracy.json."""
    import cv2

    summary = json.loads(predictions[0].summary.read_text())
    num_classes = int(summary["num_classes"])
    matrix = ConfusionMatrix(num_classes, dataset.ignore_index)
    masks = {sample.image: sample.mask for sample in dataset.samples()}
    per_image: dict[str, float | None] = {}
    for prediction in predictions:
        truth = dataset.read_mask(masks[prediction.image])
        encoded = np.frombuffer(prediction.class_map.read_bytes(), dtype=np.uint8)
        labels = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).astype(np.int64)
        image_matrix = ConfusionMatrix(num_classes, dataset.ignore_index)
        try:
            matrix.add(truth, labels)
            image_matrix.add(truth, labels)
        except ValueError as exc:
            raise SegbenchError(
                f"{masks[prediction.image]}: {exc}; set the model's num_classes to match the dataset"
            ) from None
        per_image[str(prediction.image)] = image_matrix.result()["miou"]
    result = {
        **matrix.result(summary.get("class_names")),
        "images": len(predictions),
        "dataset": dataset.describe(),
        "per_image_miou": per_image,  # each image against its own mask (the headline mIoU pools every pixel)
    }
    (out_dir / "accuracy.json").write_text(json.dumps(result, indent=1))
    return result
