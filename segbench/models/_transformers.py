"""What the transformers families share: build from a config written in code, load local weights.

Private (leading underscore): the registry does not import it as a family. transformers itself is
imported lazily, inside the methods, so listing models stays fast. Nothing here touches the hub:
models are built from configs, and weights come only from local paths.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from segbench.errors import WeightsError
from segbench.models._common import read_state_file, strict_load
from segbench.models.base import SegmentationAdapter


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

    def load_weights(self, module: nn.Module, path: Path) -> None:
        state = self.read_pretrained(path) if path.is_dir() else read_state_file(self.card.name, path)
        strict_load(self.card.name, module, state, path)

    def read_pretrained(self, path: Path) -> Mapping[str, torch.Tensor]:
        """The state dict of a local save_pretrained directory, refusing one that leaves weights uninitialised."""
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
        return loaded.state_dict()
