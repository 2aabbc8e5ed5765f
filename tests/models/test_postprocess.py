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
