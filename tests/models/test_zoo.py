"""The model zoo: every registered family builds offline, runs end to end, and matches its published size.

Parametrised from the registry, restricted to the families defined in this zoo (other modules,
e.g. Fast-SCNN or test plugins, have their own tests). Resolutions are tiny so the file runs in a
few minutes on a 2-core CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from segbench.errors import WeightsError
from segbench.models import create_model, get_card, list_models
from segbench.models.base import SegmentationAdapter
from segbench.models.flops import count_flops
from tests.helpers import REPO

torch.set_num_threads(2)

ZOO_FAMILIES = {"yolov8-seg", "yolo26-sem", "segformer", "mask2former", "deeplabv3"}
ZOO_MODELS = [name for name in list_models() if get_card(name).family in ZOO_FAMILIES]

# Published parameter counts, written as printed by their source; a count matches when it rounds to
# the printed figure (3.8 means 3.75 to 3.85 M).
PUBLISHED: dict[str, tuple[str, str]] = {
    # Conv+BN fused, the way ultralytics counts (the unfused counts round to the same figures)
    "yolov8n-seg": ("3.4", "Ultralytics docs, docs/en/models/yolov8.md"),
    "yolov8s-seg": ("11.8", "Ultralytics docs, docs/en/models/yolov8.md"),
    "yolov8m-seg": ("27.3", "Ultralytics docs, docs/en/models/yolov8.md"),
    "yolov8l-seg": ("46.0", "Ultralytics docs, docs/en/models/yolov8.md"),
    "yolov8x-seg": ("71.8", "Ultralytics docs, docs/en/models/yolov8.md"),
    # total parameters, encoder + decoder with the 150-class ADE20K head
    "segformer-b0": ("3.8", "SegFormer paper, Table 1a"),
    "segformer-b1": ("13.7", "SegFormer paper, Table 1a"),
    "segformer-b2": ("27.5", "SegFormer paper, Table 1a"),
    "segformer-b3": ("47.3", "SegFormer paper, Table 1a"),
    "segformer-b4": ("64.1", "SegFormer paper, Table 1a"),
    "segformer-b5": ("84.7", "SegFormer paper, Table 1a"),
    "mask2former-swin-t": ("47", "Mask2Former paper, Table V (ADE20K semantic)"),
    "mask2former-swin-s": ("69", "Mask2Former paper, Table V (ADE20K semantic)"),
    "mask2former-swin-b": ("107", "Mask2Former paper, Table V (ADE20K semantic)"),
    # including the auxiliary FCN head, which the released weights carry
    "deeplabv3-mobilenetv3-large": ("11.029328", "torchvision weights meta num_params = 11,029,328"),
}
# Registered models without a published figure, and why.
UNPUBLISHED: dict[str, str] = {
    **{
        f"segformer-b{i}-cityscapes": "the paper prints one count per variant, for the 150-class head (checked below)"
        for i in range(6)
    },
    **{
        f"yolo26{s}-sem": "the summary comments in yolo26-sem.yaml describe a different head than the one built"
        for s in "nsmlx"
    },
}


def rounds_to(count: int, printed: str) -> bool:
    """Whether `count` parameters, in millions, rounds to `printed` at its printed precision."""
    figure = Decimal(printed)
    half_unit = Decimal(5).scaleb(figure.as_tuple().exponent - 1)
    return abs(Decimal(count) / Decimal(10**6) - figure) <= half_unit


SIZE = (40, 72)  # not a multiple of 32, so the padded families pad and crop


@pytest.fixture(scope="module", params=ZOO_MODELS)
def built(request: pytest.FixtureRequest) -> Iterator[SegmentationAdapter]:
    """One built model at a time: pytest groups the tests by this module-scoped parameter."""
    adapter = create_model(request.param)
    adapter.build("cpu")
    yield adapter
    adapter.model = None


def test_zoo_is_registered() -> None:
    assert len(ZOO_MODELS) == 5 + 5 + 12 + 3 + 1
    assert set(ZOO_MODELS) == set(PUBLISHED) | set(UNPUBLISHED)


def test_end_to_end(built: SegmentationAdapter) -> None:
    height, width = SIZE
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8, generator=generator)
    inputs = built.preprocess(images)
    assert tuple(inputs.shape[-2:]) == built.model_input_size(height, width)
    with torch.no_grad():
        outputs = built.forward(inputs)
        labels = built.postprocess(outputs, (height, width))
        scores = built.logits(outputs)
    assert labels.dtype in (torch.uint8, torch.int16) and labels.device.type == "cpu"
    assert labels.shape == (2, height, width)
    assert 0 <= int(labels.min()) and int(labels.max()) < built.card.num_classes
    assert scores.shape[:2] == (2, built.card.num_classes)
    # logits() is what postprocess takes the argmax of, at the padded size, padding cropped
    padded = F.interpolate(scores.float(), size=inputs.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.equal(padded[..., :height, :width].argmax(dim=1), labels)


def test_parameter_count(built: SegmentationAdapter) -> None:
    name, count = built.card.name, built.parameter_count()
    if name in UNPUBLISHED:
        assert built.card.published_params_m is None
        return
    printed, source = PUBLISHED[name]
    assert rounds_to(count, printed), f"{name}: {count:,} parameters, published {printed} M ({source})"
    assert built.card.published_params_m == float(printed)


@pytest.mark.parametrize("variant", range(6))
def test_segformer_cityscapes_differs_only_by_head(variant: int) -> None:
    """The 19-class model is the 150-class one less 131 classifier rows: so it matches Table 1a once added back."""
    adapter = create_model(f"segformer-b{variant}-cityscapes")
    adapter.build()
    head = 131 * (adapter.model.config.decoder_hidden_size + 1)  # type: ignore[union-attr]
    assert rounds_to(adapter.parameter_count() + head, PUBLISHED[f"segformer-b{variant}"][0])


@pytest.mark.parametrize("scale", "nsmlx")
def test_yolov8_flops_match_ultralytics(scale: str) -> None:
    adapter = create_model(f"yolov8{scale}-seg")
    ours = count_flops(adapter, 640, 640)  # builds the model, which imports ultralytics the careful way
    from ultralytics.utils.torch_utils import get_flops

    theirs = get_flops(adapter.model, 640) * 1e9  # 2 x MACs via thop, what model.info() prints
    assert theirs > 0
    assert abs(ours - theirs) <= 0.05 * theirs, f"{ours / 1e9:.1f} vs ultralytics {theirs / 1e9:.1f} GFLOPs"


def test_flops_follow_padding_and_batch() -> None:
    yolo = create_model("yolov8n-seg")
    assert count_flops(yolo, 40, 72) == count_flops(yolo, 64, 96)  # padded up to multiples of 32
    deeplab = create_model("deeplabv3-mobilenetv3-large")
    single = count_flops(deeplab, 64, 64)
    assert single > 0 and count_flops(deeplab, 64, 64, batch=2) == pytest.approx(2 * single)


def test_yolov8_instances_become_class_plus_one() -> None:
    """Two overlapping instances and one below threshold, fed through ultralytics' NMS and mask assembly."""
    adapter = create_model("yolov8n-seg")
    predictions = torch.zeros(1, 4 + 80 + 32, 3)
    boxes = [
        ((16, 16, 32, 32), 2, 0.9),
        ((32, 32, 32, 32), 5, 0.6),
        ((48, 48, 8, 8), 7, 0.1),
    ]  # (cx, cy, w, h), class, score
    for anchor, (box, cls, score) in enumerate(boxes):
        predictions[0, :4, anchor] = torch.tensor(box, dtype=torch.float32)
        predictions[0, 4 + cls, anchor] = score
        predictions[0, 84, anchor] = 1.0  # mask coefficient on an all-ones prototype: the mask is the box
    protos = torch.ones(1, 32, 16, 16)  # 1/4 of a 64 x 64 input
    outputs = ((predictions, protos), {})
    labels = adapter.postprocess(outputs, (60, 64))
    assert labels.shape == (1, 60, 64)
    assert labels[0, 5, 5] == 3 and labels[0, 20, 20] == 3  # class 2; the more confident instance owns the overlap
    assert labels[0, 40, 40] == 6  # class 5
    assert labels[0, 52, 52] == 0  # the 0.1 instance is below conf 0.25: background
    assert torch.equal(adapter.logits(outputs)[:, :, :60].argmax(dim=1), labels)
    strict = create_model("yolov8n-seg", options={"conf": 0.95})
    assert int(strict.postprocess(outputs, (64, 64)).max()) == 0


def test_yolov8_options_are_validated() -> None:
    with pytest.raises(ValidationError):
        create_model("yolov8n-seg", options={"confidence": 0.5})
    with pytest.raises(ValidationError):
        create_model("yolov8n-seg", options={"iou": 1.5})


ONE_PER_FAMILY = ["yolov8n-seg", "yolo26n-sem", "segformer-b0", "mask2former-swin-t", "deeplabv3-mobilenetv3-large"]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_missing_weights_name_model_and_file(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(WeightsError) as error:
        create_model(name, weights=missing).build()
    assert name in str(error.value) and str(missing) in str(error.value)


@pytest.fixture(scope="module")
def deeplab_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "deeplab.pth"
    torch.save(create_model("deeplabv3-mobilenetv3-large").build_module().state_dict(), path)
    return path


@pytest.mark.parametrize("name", ["segformer-b0", "yolov8n-seg", "mask2former-swin-t"])
def test_mismatched_weights_file(name: str, deeplab_state: Path) -> None:
    with pytest.raises(WeightsError) as error:
        create_model(name, weights=deeplab_state).build()
    assert name in str(error.value) and str(deeplab_state) in str(error.value)


def test_deeplab_weights_round_trip_and_mismatch(deeplab_state: Path, tmp_path: Path) -> None:
    module = create_model("deeplabv3-mobilenetv3-large").build_module()
    module.load_state_dict(torch.load(deeplab_state, weights_only=True))
    with torch.no_grad():
        module.classifier[4].weight.add_(1.0)  # differ from the seeded random init
    path = tmp_path / "changed.pth"
    torch.save(module.state_dict(), path)
    loaded = create_model("deeplabv3-mobilenetv3-large", weights=path).build()
    assert torch.equal(loaded.classifier[4].weight, module.classifier[4].weight)
    segformer = tmp_path / "segformer.pth"
    torch.save(create_model("segformer-b0").build_module().state_dict(), segformer)
    with pytest.raises(WeightsError, match="deeplabv3-mobilenetv3-large"):
        create_model("deeplabv3-mobilenetv3-large", weights=segformer).build()


def test_unreadable_weights_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        create_model("segformer-b0", weights=junk).build()


def test_segformer_pretrained_directory(tmp_path: Path) -> None:
    source = create_model("segformer-b0").build_module()
    with torch.no_grad():
        source.decode_head.classifier.weight.add_(1.0)
    source.save_pretrained(tmp_path / "b0")
    loaded = create_model("segformer-b0", weights=tmp_path / "b0").build()
    assert torch.equal(loaded.decode_head.classifier.weight, source.decode_head.classifier.weight)
    with pytest.raises(WeightsError, match="segformer-b1"):
        create_model("segformer-b1", weights=tmp_path / "b0").build()
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="cannot load weights directory"):
        create_model("segformer-b0", weights=tmp_path / "empty").build()


def test_yolov8_ultralytics_checkpoint(tmp_path: Path) -> None:
    """A .pt holding the pickled (unfused) model, as ultralytics saves it, loads before fusing."""
    source = create_model("yolov8n-seg").build_module()
    mask_head = "model.22.cv4.0.2.weight"  # a plain conv (no BN), so fusing leaves it as loaded
    with torch.no_grad():
        source.get_parameter(mask_head).add_(1.0)
    torch.save({"model": source}, tmp_path / "yolo.pt")
    loaded = create_model("yolov8n-seg", weights=tmp_path / "yolo.pt").build()
    assert torch.equal(loaded.get_parameter(mask_head), source.get_parameter(mask_head))


def test_listing_models_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import segbench.models.yolov8_seg, segbench.models.yolo26_sem, segbench.models.segformer\n"
        "import segbench.models.mask2former, segbench.models.deeplabv3, segbench.models.flops\n"
        "print(sorted(m for m in ('ultralytics', 'transformers', 'torchvision') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"


def test_ultralytics_import_keeps_thread_settings() -> None:
    code = (
        "import os, torch\n"
        "torch.set_num_threads(2)\n"
        "from segbench.models._imports import import_ultralytics\n"
        "import_ultralytics()\n"
        "print(torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS'), os.environ.get('YOLO_OFFLINE'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "YOLO_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO)
    assert result.stdout.split() == ["2", "None", "1"]
