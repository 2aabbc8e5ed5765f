"""Own heads: options.num_classes / class_names for every family, heads inferred from checkpoints, names from
weights."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segbench.errors import SuiteError, WeightsError
from segbench.models.registry import create_model, load_plugin
from segbench.suite.schema import parse_suite
from segbench.tools.predict import predict
from tests.helpers import FAULT_PLUGIN

HEAD_FAMILIES = [
    "fast-scnn",
    "segformer-b0",
    "deeplabv3-mobilenetv3-large",
    "yolov8n-seg",
    "yolo26n-sem",
    "mask2former-swin-t",
]


@pytest.mark.parametrize("name", HEAD_FAMILIES)
def test_num_classes_option_sizes_the_head_and_a_checkpoint_is_inferred(name: str, tmp_path: Path) -> None:
    adapter = create_model(name, options={"num_classes": 5, "class_names": list("abcde")})
    module = adapter.build("cpu")
    with torch.inference_mode():
        outputs = adapter.forward(adapter.preprocess(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)))
    assert adapter.logits(outputs).shape[1] == 5 and adapter.class_names == tuple("abcde")

    checkpoint = tmp_path / "five.pt"
    torch.save(create_model(name, options={"num_classes": 5}).build_module().state_dict(), checkpoint)
    inferred = create_model(name, weights=checkpoint)  # no option: the head follows the checkpoint
    inferred.build("cpu")
    assert inferred.num_classes == 5 and inferred.class_names is None
    with pytest.raises(
        WeightsError, match="has a 5-class head but options.num_classes is 7; set options.num_classes: 5"
    ):
        create_model(name, weights=checkpoint, options={"num_classes": 7}).build("cpu")
    del module


def test_an_unrecognised_head_mismatch_names_the_option(tmp_path: Path) -> None:
    load_plugin(FAULT_PLUGIN)  # a user's family that declares no head keys
    tiny = create_model("test-tiny").build_module()
    tiny.body[2] = torch.nn.Conv2d(8, 5, 1)  # type: ignore[index]
    path = tmp_path / "odd.pt"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(
        WeightsError, match="size mismatch.*; if its head has another class count, set options.num_classes"
    ):
        create_model("test-tiny", weights=path).build("cpu")


def test_class_names_come_from_a_transformers_config(tmp_path: Path) -> None:
    trained = create_model("segformer-b0", options={"num_classes": 3, "class_names": ["sky", "road", "car"]})
    trained.build("cpu")
    trained.model.save_pretrained(tmp_path / "seg")  # type: ignore[union-attr]
    loaded = create_model("segformer-b0", weights=tmp_path / "seg")
    loaded.build("cpu")
    assert loaded.num_classes == 3 and loaded.class_names == ("sky", "road", "car")


def test_class_names_come_from_an_ultralytics_checkpoint(tmp_path: Path) -> None:
    adapter = create_model("yolov8n-seg", options={"num_classes": 3})
    module = adapter.build_module()
    module.names = {0: "circle", 1: "square"}
    path = tmp_path / "best.pt"
    torch.save({"model": module.half()}, path)  # the layout ultralytics' trainer writes
    loaded = create_model("yolov8n-seg", weights=path)
    loaded.build("cpu")
    assert loaded.num_classes == 3 and loaded.class_names == ("background", "circle", "square")


def test_default_heads_carry_their_label_sets() -> None:
    assert create_model("fast-scnn").class_names[0] == "road"  # type: ignore[index]
    assert create_model("deeplabv3-mobilenetv3-large").class_names[15] == "person"  # type: ignore[index]
    assert create_model("yolov8n-seg").class_names[1] == "person"  # type: ignore[index]


def test_predict_json_names_the_classes(tmp_path: Path) -> None:
    image = tmp_path / "flat.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    [prediction] = predict(
        "fast-scnn", [image], tmp_path / "out", options={"num_classes": 2, "class_names": ["bg", "fg"]}
    )
    summary = json.loads(prediction.summary.read_text())
    assert summary["class_names"] == ["bg", "fg"]
    assert {row["name"] for row in summary["classes"]} <= {"bg", "fg"} and all(
        row["name"] for row in summary["classes"]
    )


def test_bad_head_options_are_one_line_suite_errors() -> None:
    with pytest.raises(SuiteError, match=r"models\[0\].options.*class_names has 2 names but num_classes is 3"):
        parse_suite(
            {
                "name": "x",
                "models": [{"name": "fast-scnn", "options": {"num_classes": 3, "class_names": ["a", "b"]}}],
                "resolutions": [64],
            }
        )
