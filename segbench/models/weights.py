"""Weights by name, the way each library's users name them, fetched through that library's own cache.

- a Hugging Face Hub id (`nvidia/segformer-b0-finetuned-ade-512-512`) for transformers families: the
  snapshot in the local HF cache (HF_HOME / HF_HUB_CACHE), downloaded there unless HF_HUB_OFFLINE is set,
  then loaded with `from_pretrained`;
- an ultralytics asset name (`yolov8n-seg.pt`) for ultralytics families: the file in the working
  directory or ultralytics' weights_dir, else ultralytics' own download;
- a torchvision weights name (`DeepLabV3_MobileNet_V3_Large_Weights.DEFAULT`) for torchvision families:
  the checkpoint in torch.hub's cache (TORCH_HOME), else torchvision's own download.

Anything else is a local path. A name that is neither cached nor downloadable is one line saying how
to fetch it beforehand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from segbench.errors import WeightsError
from segbench.models._imports import import_ultralytics

NamedKind = Literal["hub", "ultralytics", "torchvision"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_ULTRALYTICS_ASSET = re.compile(r"[\w.-]+\.pt")
_TORCHVISION_WEIGHTS = re.compile(r"\w+_Weights\.\w+")
_KIND_BY_SOURCE: dict[str, tuple[NamedKind, re.Pattern[str]]] = {
    "transformers": ("hub", _HUB_ID),
    "ultralytics": ("ultralytics", _ULTRALYTICS_ASSET),
    "torchvision": ("torchvision", _TORCHVISION_WEIGHTS),
}
_TRUE = ("1", "true", "yes", "on")


def named_kind(value: str, source: str) -> NamedKind | None:
    """Which library name `value` is for a family from `source`, or None when it can only be a path."""
    kind = _KIND_BY_SOURCE.get(source)
    if kind is None or Path(value).exists() or not kind[1].fullmatch(value):
        return None
    return kind[0]


def fetch(value: str, source: str) -> Path:
    """The local file or folder behind a library name (from the cache, else downloaded), or one line saying how to get
    it."""
    kind = named_kind(value, source)
    if kind == "hub":
        return _hub_snapshot(value)
    if kind == "ultralytics":
        return _ultralytics_asset(value)
    if kind == "torchvision":
        return _torchvision_checkpoint(value)
    raise WeightsError(
        f"weights not found: {value} (give a local file or folder, or a name this family's library knows)"
    )


def _offline(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in _TRUE


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    offline = _offline("HF_HUB_OFFLINE")
    try:
        folder = snapshot_download(
            repo_id,
            allow_patterns=["*.json", "*.safetensors", "pytorch_model*.bin"],
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            local_files_only=offline,
        )
    except Exception as exc:  # not cached and no network, unknown id, gated repo: the same advice
        why = "HF_HUB_OFFLINE is set" if offline else f"the hub is unreachable or refused ({type(exc).__name__})"
        raise WeightsError(
            f"{repo_id}: not in the local Hugging Face cache and {why}; fetch it beforehand with "
            f"`hf download {repo_id}` (same HF_HOME), or give a local save_pretrained folder"
        ) from None
    return Path(folder)


def _ultralytics_asset(name: str) -> Path:
    import_ultralytics()
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.downloads import attempt_download_asset

    try:
        found = Path(attempt_download_asset(name))
    except Exception:  # the download failed: the advice below is the same
        found = Path(name)
    if not found.is_file():
        raise WeightsError(
            f"{name}: not in the working directory or ultralytics' weights_dir ({SETTINGS['weights_dir']}) and could "
            f"not be downloaded; fetch it beforehand (e.g. `yolo predict model={name}` on a machine with network) and "
            "copy it there"
        )
    return found


def _torchvision_checkpoint(name: str) -> Path:
    import torch
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise WeightsError(
            f"{name}: torchvision knows no such weights; see torchvision.models.list_models / get_model_weights"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():
        return cached
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=False)
    except Exception as exc:
        raise WeightsError(
            f"{name}: not in torch.hub's cache ({cached.parent}) and could not be downloaded ({type(exc).__name__}); "
            f"fetch {weights.url} beforehand into that folder (same TORCH_HOME)"
        ) from None
    return cached


def torchvision_categories(name: str) -> tuple[str, ...] | None:
    """The class names a torchvision weights enum carries in its metadata."""
    from torchvision.models import get_weight

    try:
        categories = get_weight(name).meta.get("categories")
    except (ValueError, KeyError, AttributeError):
        return None
    return tuple(str(c) for c in categories) if categories else None
