"""The class-map path (issue 27, item 7): the labels of the old postprocess bit for bit, in a compact dtype, faster."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from segbench.bench.postprocess import compare, legacy_class_map, legacy_postprocess, scores_adapter
from segbench.models import create_model
from segbench.models.base import OutputPolicy, first_max_indices, label_dtype
from tests.helpers import REPO

ALONE = pytest.mark.alone
DEMO_WEIGHTS = REPO / "segbench" / "demo" / "weights"


def _tied_scores(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Scores from three values, so most pixels tie between classes; a NaN here and there (argmax: the maximum)."""
    scores = torch.randint(0, 3, shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    scores[0, :, 0, 0] = float("nan")
    scores[0, 1, 1, 1] = float("nan")
    return scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped"])
def test_first_max_indices_is_argmax_on_ties_and_nan(dtype: torch.dtype, layout: str) -> None:
    """Guards the swap of argmax(dim=1) for max(dim=1).indices: the same first-maximum tie rule, bit for bit."""
    scores = _tied_scores((2, 19, 33, 65), dtype)
    if layout == "channels_last":
        scores = scores.contiguous(memory_format=torch.channels_last)
    elif layout == "cropped":
        scores = scores[..., :17, :40]
    assert torch.equal(first_max_indices(scores), scores.argmax(dim=1))


def test_label_dtype_is_the_smallest_that_holds_every_class() -> None:
    """Guards the int64 map the old postprocess copied to the host (8x a uint8 one)."""
    assert label_dtype(19) == label_dtype(256) == torch.uint8
    assert label_dtype(257) == torch.int16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_class_map_matches_the_old_path_on_tied_scores_and_padding(dtype: torch.dtype) -> None:
    """Guards the default's promise: half logits are still upsampled in float32, so not a label moves."""
    adapter = scores_adapter(19)
    scores = _tied_scores((2, 19, 9, 13), dtype)
    labels = adapter.class_map(scores, (33, 49))
    assert labels.dtype == torch.uint8
    assert torch.equal(labels.long(), legacy_class_map(scores, (33, 49), (33, 49)))


def test_the_options_that_trade_labels_run_and_say_so() -> None:
    adapter = scores_adapter(19)
    adapter.output_policy = OutputPolicy(resize="labels", interpolate_dtype="logits")
    scores = torch.randn(1, 19, 8, 16, dtype=torch.bfloat16)
    labels = adapter.class_map(scores, (32, 64))
    assert labels.shape == (1, 32, 64) and labels.dtype == torch.uint8
    assert torch.equal(labels[:, ::4, ::4], first_max_indices(scores).to(torch.uint8))
    assert "nearest-upsampled" in adapter.output_policy.describe()


@pytest.mark.parametrize(
    ("model", "weights", "options", "size"),
    [
        ("fast-scnn", DEMO_WEIGHTS / "fast-scnn-shapes.safetensors", {}, (96, 160)),
        ("segformer-b0", DEMO_WEIGHTS / "segformer-b0-shapes.safetensors", {}, (64, 96)),
        ("yolov8n-seg", None, {"conf": 0.0}, (96, 128)),  # conf 0: random weights still find 300 instances
        ("yolov8n-seg", DEMO_WEIGHTS / "yolov8n-seg-shapes.pt", {}, (160, 224)),  # trained: real, overlapping boxes
    ],
)
def test_real_models_give_the_old_labels_bit_for_bit(
    model: str, weights: Path | None, options: dict, size: tuple[int, int]
) -> None:
    """Guards item 7 on Fast-SCNN, SegFormer-B0 and YOLOv8n-seg: the compact map holds exactly the old labels."""
    from segbench.data.images import evaluation_batches

    adapter = create_model(model, weights, options)
    adapter.build("cpu")
    with torch.inference_mode():
        for frame in evaluation_batches(*size, 2)[:2]:
            outputs = adapter.forward(adapter.preprocess(frame))
            new, old = adapter.postprocess(outputs, size), legacy_postprocess(adapter, outputs, size)
            assert new.dtype == torch.uint8 and new.device.type == "cpu"
            assert torch.equal(new.long(), old)
    adapter.output_policy = replace(adapter.output_policy, map_device="device")
    assert adapter.postprocess(outputs, size).dtype == torch.uint8


@ALONE
def test_the_new_class_map_is_faster_than_the_old_in_one_process() -> None:
    """Guards item 7's cost: argmax over NCHW and the int64 map made postprocess about 3x slower on 2 cores (19
    classes, 1/4-resolution logits to 256x512). Old and new alternate in one process; the bound is generous."""
    result = compare(classes=19, logits=(64, 128), size=(256, 512), rounds=9)
    assert result["speedup"] > 1.3, result


def test_yolo_boxes_anywhere_give_the_full_size_labels() -> None:
    """The box-window upsample against ultralytics' full-size process_mask on boxes at every edge, fractional,
    degenerate, off the image and overlapping, with tied confidences: the same labels bit for bit."""
    from ultralytics.utils.ops import process_mask

    from segbench.bench.postprocess import merge_full_size_instances
    from segbench.models.yolov8_seg import paint_instances

    generator = torch.Generator().manual_seed(3)
    proto = torch.randn(32, 24, 40, generator=generator)
    count = 60
    corners = torch.rand(count, 2, generator=generator) * torch.tensor([170.0, 106.0]) - 5
    sides = torch.rand(count, 2, generator=generator) * 80
    boxes = torch.cat([corners, corners + sides], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, 160.0, 96.0])  # the whole image
    boxes[1] = torch.tensor([10.5, 10.5, 10.5, 30.0])  # no width
    confidences = torch.rand(count, generator=generator)
    confidences[5:9] = confidences[4]  # ties: the first instance wins
    classes = torch.randint(0, 7, (count,), generator=generator).float()
    det = torch.cat([boxes, confidences[:, None], classes[:, None], torch.randn(count, 32, generator=generator)], 1)
    masks = process_mask(proto, det[:, 6:], det[:, :4], (96, 160), upsample=True)
    expected = merge_full_size_instances(masks, det[:, 4], det[:, 5].long())
    assert torch.equal(paint_instances(det, proto, torch.uint8).long(), expected)
