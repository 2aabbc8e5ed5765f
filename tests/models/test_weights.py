"""Weights by name (Hub id, ultralytics asset, torchvision weights), from caches the tests populate: never the
network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segbench.errors import SuiteError, WeightsError
from segbench.models.registry import create_model
from segbench.suite.schema import parse_suite

HUB_ID = "acme/segformer-b0-shapes"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An HF hub cache laid out as huggingface_hub writes it, with HF_HUB_OFFLINE set: no request can leave."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = cache / f"models--{HUB_ID.replace('/', '--')}"
    trained = create_model("segformer-b0", options={"num_classes": 3, "class_names": ["sky", "road", "car"]})
    trained.build("cpu")
    trained.model.save_pretrained(repo / "snapshots" / COMMIT)  # type: ignore[union-attr]
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


def test_a_hub_id_loads_from_the_local_cache_offline(offline_hub: Path) -> None:
    adapter = create_model("segformer-b0", weights=HUB_ID)
    adapter.build("cpu")
    assert adapter.num_classes == 3 and adapter.class_names == ("sky", "road", "car")
    assert adapter.weights is not None and offline_hub in adapter.weights.parents and adapter.weights_name == HUB_ID


def test_a_hub_id_missing_from_the_cache_says_how_to_fetch_it(offline_hub: Path) -> None:
    with pytest.raises(
        WeightsError,
        match=r"acme/absent: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; fetch it beforehand with "
        r"`hf download acme/absent`",
    ):
        create_model("segformer-b0", weights="acme/absent").build("cpu")


def test_an_ultralytics_asset_name_goes_through_ultralytics_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ultralytics.utils.downloads as downloads

    module = create_model("yolov8n-seg", options={"num_classes": 3}).build_module()
    module.names = {0: "circle", 1: "square"}
    fetched: list[str] = []

    def substitute_download(url: str, file: Path, **_: object) -> None:  # what would have come over the network
        fetched.append(url)
        torch.save({"model": module}, file)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(downloads, "safe_download", substitute_download)
    adapter = create_model("yolov8n-seg", weights="yolov8n-seg.pt")
    adapter.build("cpu")
    assert fetched and fetched[0].endswith("/yolov8n-seg.pt")
    assert adapter.class_names == ("background", "circle", "square")

    def no_network(url: str, file: Path, **_: object) -> None:
        raise ConnectionError("offline")

    monkeypatch.setattr(downloads, "safe_download", no_network)
    with pytest.raises(
        WeightsError,
        match=r"yolov8s-seg.pt: not in the working directory or ultralytics' weights_dir .* fetch it beforehand",
    ):
        create_model("yolov8s-seg", weights="yolov8s-seg.pt").build("cpu")


def test_a_torchvision_weights_name_loads_from_torch_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import get_weight

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = "DeepLabV3_MobileNet_V3_Large_Weights.DEFAULT"
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(
        create_model("deeplabv3-mobilenetv3-large").build_module().state_dict(),
        checkpoints / Path(get_weight(name).url).name,
    )
    adapter = create_model("deeplabv3-mobilenetv3-large", weights=name)
    adapter.build("cpu")
    assert adapter.num_classes == 21 and adapter.class_names is not None and adapter.class_names[0] == "__background__"


def test_suite_accepts_names_and_refuses_what_is_neither_path_nor_name() -> None:
    base = {"name": "w", "resolutions": [64]}
    parse_suite(
        {
            **base,
            "models": [
                {"name": "segformer-b0", "weights": HUB_ID},
                {"name": "yolov8n-seg", "weights": "yolov8n-seg.pt"},
            ],
        }
    )
    with pytest.raises(
        SuiteError,
        match=r"models\[0\].weights: weights not found: missing.bin; give a local file or folder, or a name "
        r"transformers knows",
    ):
        parse_suite({**base, "models": [{"name": "segformer-b0", "weights": "missing.bin"}]})
