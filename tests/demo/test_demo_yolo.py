"""YOLOv8n-seg in the demo: the masks in ultralytics' polygon format, and ultralytics' trainer run offline."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segbench.data.datasets import Dataset, DatasetConfig
from segbench.demo import CLASS_NAMES
from segbench.demo.generate import generate, make_sample
from segbench.demo.yolo_labels import instances_to_mask, mask_instances, write_yolo_dataset


@pytest.mark.parametrize("seed", range(4))
def test_polygons_draw_back_the_class_mask(seed: int) -> None:
    _, labels = make_sample(np.random.default_rng(seed))
    instances = mask_instances(labels)
    assert {yolo_class + 1 for yolo_class, _ in instances} == set(np.unique(labels)) - {0}  # background is no instance
    assert all(outline.min() >= 0 and outline.max() <= 1 for _, outline in instances)
    drawn = instances_to_mask(instances, labels.shape)
    assert (drawn == labels).mean() > 0.99


def test_overlapping_shapes_become_instances_with_the_hole_filled_by_the_smaller_one() -> None:
    labels = np.zeros((64, 64), np.uint8)
    labels[8:56, 8:56] = 2  # a square ...
    labels[24:40, 24:40] = 1  # ... with a disc-class patch on top, in its middle
    labels[0:4, 60:64] = 3  # 16 px: kept
    labels[63, 0] = 4  # a 1-px sliver: dropped
    instances = mask_instances(labels)
    assert sorted(yolo_class for yolo_class, _ in instances) == [0, 1, 2]
    assert np.array_equal(instances_to_mask(instances, labels.shape)[:63], labels[:63])


def test_the_yolo_dataset_sits_beside_the_masks_with_four_object_names(tmp_path: Path) -> None:
    root = generate(tmp_path / "demo", train=3, val=2, size=64)
    config = yaml.safe_load(write_yolo_dataset(root).read_text())
    assert config["names"] == dict(enumerate(CLASS_NAMES[1:])) and Path(config["path"]) == root.resolve()
    for split, count in (("train", 3), ("val", 2)):
        files = sorted((root / "labels" / split).glob("*.txt"))
        assert [f.stem for f in files] == [f.stem for f in sorted((root / "images" / split).glob("*.png"))]
        assert len(files) == count and all(f.read_text().strip() for f in files)
    assert Dataset(DatasetConfig(path=root)).layout == "plain"  # segbench still reads the same folder as before


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_ultralytics_trains_offline_into_weights_the_yolo_adapter_loads(tmp_path: Path, no_network: None) -> None:
    from segbench.demo.train import demo_options, evaluate, load_split
    from segbench.demo.yolo import YoloRecipe, train_ultralytics
    from segbench.models._imports import import_ultralytics
    from segbench.models.registry import create_model

    root = generate(tmp_path / "demo", train=4, val=2, size=64)
    threads = torch.get_num_threads()
    lines: list[str] = []
    recipe = YoloRecipe(epochs=1, batch_size=2, imgsz=64)
    weights = train_ultralytics(recipe, root, tmp_path / "yolov8n-seg-shapes.pt", log=lines.append)
    assert torch.get_num_threads() == threads  # ultralytics' select_device lowered it; it is put back
    assert len(lines) == 1 and lines[0].startswith("yolov8n-seg epoch 1/1:") and "seg_loss" in lines[0]

    import_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    checkpoint, _ = torch_safe_load(str(weights), safe_only=True)
    assert checkpoint["optimizer"] is None and next(checkpoint["model"].parameters()).dtype == torch.float16
    assert checkpoint["model"].names == dict(enumerate(CLASS_NAMES[1:]))

    adapter = create_model("yolov8n-seg", weights, demo_options())
    adapter.build("cpu")
    assert adapter.num_classes == len(CLASS_NAMES) and adapter.class_names == CLASS_NAMES
    images, masks = load_split(root, "val")
    result = evaluate(adapter, images, masks)
    assert 0.0 <= result["miou"] <= 1.0 and set(result["per_class_iou"]) <= set(CLASS_NAMES)
