"""What the transformers families share: build from a config written in code, load local weights.

Private (leading underscore): the registry does not import it as a family. transformers itself is
imported lazily, inside the methods, so listing models stays fast. Nothing here touches the hub:
models are built from configs, and weights come only from local paths.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from segbench.errors import WeightsError
from segbench.models._common import read_state_file
from segbench.models.base import Checkpoint, SegmentationAdapter

_PLACEHOLDER_LABEL = re.compile(r"LABEL_\d+")


class TransformersAdapter(SegmentationAdapter):
    """A transformers model class (by name) built from `config()`.

    Weights are a transformers directory (config.json + safetensors, as `save_pretrained` writes
    it) or a single state-dict file (.safetensors, or torch-saved).
    """

    model_class: ClassVar[str]  # attribute of the transformers package, e.g. "SegformerForSemanticSegmentation"

    @abstractmethod
    def config(self) -> Any:
        """The transformers config of this card's variant, written in code."""

    def transformers_class(self) -> type[nn.Module]:
        import transformers

        return getattr(transformers, self.model_class)

    def build_module(self) -> nn.Module:
        return self.transformers_class()(self.config())

    def read_weights(self, path: Path) -> Checkpoint:
        if path.is_dir():
            return self.read_pretrained(path)
        return Checkpoint(read_state_file(self.card.name, path))

    def label_maps(self) -> dict[str, Any]:
        """id2label / label2id for the config, when the class names are known."""
        if not self.class_names:
            return {}
        return {
            "id2label": dict(enumerate(self.class_names)),
            "label2id": {name: index for index, name in enumerate(self.class_names)},
        }

    def read_pretrained(self, path: Path) -> Checkpoint:
        """The weights of a local save_pretrained directory (with its id2label), refusing one that leaves weights
        uninitialised."""
        try:
            loaded, info = self.transformers_class().from_pretrained(
                str(path), local_files_only=True, output_loading_info=True
            )
        except Exception as exc:  # missing config.json, unreadable safetensors, wrong model type, ...
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"{self.card.name}: cannot load weights directory {path} ({detail})") from None
        missing = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
        if missing:
            raise WeightsError(
                f"{self.card.name}: weights directory {path} does not match the architecture "
                f"({len(missing)} tensors missing or mismatched, e.g. {missing[0]})"
            )
        return Checkpoint(loaded.state_dict(), _config_names(loaded.config))


def _config_names(config: Any) -> tuple[str, ...] | None:
    """A config's id2label as a tuple, unless it only holds transformers' LABEL_n placeholders."""
    id2label: Mapping[int, str] = getattr(config, "id2label", None) or {}
    names = tuple(str(id2label[index]) for index in sorted(id2label))
    if not names or all(_PLACEHOLDER_LABEL.fullmatch(name) for name in names):
        return None
    return names
