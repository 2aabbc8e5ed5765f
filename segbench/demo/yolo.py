"""Train YOLOv8n-seg on the demo dataset with ultralytics' own trainer, offline, from the model YAML.

There are no pretrained weights here (and no network), so the model starts from ultralytics'
`yolov8n-seg.yaml` with a 4-class head (the shapes; the photograph is background). ultralytics
trains with its usual augmentation, loss and optimiser choice; this module only keeps it offline
and quiet (no plots: they would fetch a font), seeded and deterministic as far as ultralytics allows
(one in-process data loader, `deterministic=True`), and on the thread count asked for (ultralytics
drops torch to cores - 1 when it selects the CPU). The weights out are ultralytics' own stripped
fp16 checkpoint of the EMA model, carrying the class names, which segbench's YOLO adapter loads;
they are scored with the same `evaluate` as the other demo models.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segbench.demo import WEIGHTS_DIR
from segbench.demo.train import demo_options, evaluate, load_split
from segbench.demo.yolo_labels import write_yolo_dataset
from segbench.models._imports import import_ultralytics
from segbench.models.registry import create_model


@dataclass(frozen=True)
class YoloRecipe:
    """ultralytics training arguments for the demo; the rest are ultralytics' defaults."""

    model: str = "yolov8n-seg"
    # From scratch: 19 steps an epoch, ~13 s each on the 2-core Xeon with 2 threads: 40 epochs took 532 s there and
    # reached validation mIoU 0.73 (the committed weights).
    epochs: int = 40
    batch_size: int = 16
    imgsz: int = 128
    seed: int = 0
    close_mosaic: int = 10  # the last epochs see whole images, as validation does

    @property
    def weights_file(self) -> Path:
        return WEIGHTS_DIR / f"{self.model}-shapes.pt"

    def overrides(self, data_yaml: Path, project: Path) -> dict[str, Any]:
        return {
            "model": f"{self.model}.yaml",
            "data": str(data_yaml),
            "epochs": self.epochs,
            "batch": self.batch_size,
            "nbs": self.batch_size,  # one optimiser step per batch (ultralytics' default 64 would accumulate 4)
            "imgsz": self.imgsz,
            "close_mosaic": min(self.close_mosaic, self.epochs),
            "seed": self.seed,
            "deterministic": True,
            "device": "cpu",
            "workers": 0,
            "pretrained": False,
            "amp": False,
            "plots": False,  # plotting fetches Arial.ttf
            "val": False,  # validate once, after the last epoch: ultralytics' mAP is logged, not used
            "project": str(project),
            "name": "train",
            "exist_ok": True,
            "verbose": False,
        }


@contextmanager
def _offline_threads(threads: int) -> Iterator[None]:
    """YOLO_OFFLINE for the duration, and torch's thread count put back after ultralytics changes it."""
    previous = os.environ.get("YOLO_OFFLINE")
    os.environ["YOLO_OFFLINE"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if previous is None:
            os.environ.pop("YOLO_OFFLINE", None)
        else:
            os.environ["YOLO_OFFLINE"] = previous


def train_ultralytics(recipe: YoloRecipe, data: Path, out: Path, log: Callable[[str], Any] = print) -> Path:
    """Run ultralytics' SegmentationTrainer on the dataset at `data`; copy its final fp16 checkpoint to `out`."""
    threads = torch.get_num_threads()
    data_yaml = write_yolo_dataset(data)
    with _offline_threads(threads), tempfile.TemporaryDirectory(prefix="segbench-yolo-") as project:
        import_ultralytics()
        from ultralytics.models.yolo.segment import SegmentationTrainer

        trainer = SegmentationTrainer(overrides=recipe.overrides(data_yaml, Path(project)))
        torch.set_num_threads(threads)  # select_device in the constructor set cores - 1
        trainer.add_callback("on_train_epoch_start", lambda _: torch.set_num_threads(threads))
        trainer.add_callback("on_train_epoch_end", lambda t: _log_epoch(recipe.model, t, log))
        trainer.train()
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trainer.last, out)  # final_eval stripped it: fp16 EMA model, names, no optimiser
    return out


def _log_epoch(model: str, trainer: Any, log: Callable[[str], Any]) -> None:
    losses = ", ".join(f"{name} {float(value):.3f}" for name, value in (trainer.tloss or {}).items())
    elapsed = time.time() - trainer.train_time_start
    log(f"{model} epoch {trainer.epoch + 1}/{trainer.epochs}: {losses} ({elapsed:.0f} s)")


def train(recipe: YoloRecipe, data: Path, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train from the recipe, write the weights file, and score it like the other demo models."""
    started = time.perf_counter()
    train_ultralytics(recipe, data, recipe.weights_file, log)
    train_s = time.perf_counter() - started
    adapter = create_model(recipe.model, recipe.weights_file, demo_options())
    adapter.build("cpu")
    result = evaluate(adapter, *load_split(data, "val"))
    result["train_s"] = train_s
    log(
        f"{recipe.model}: validation mIoU {result['miou']:.4f}, pixel accuracy {result['pixel_accuracy']:.4f} in "
        f"{train_s:.0f} s → {recipe.weights_file}"
    )
    return result
