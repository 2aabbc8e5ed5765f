"""Model adapters (one file per family) behind one contract, and the registry that names them."""

from segbench.models.base import InputConstraints, ModelCard, SegmentationAdapter
from segbench.models.registry import create_model, get_card, list_models, register

__all__ = [
    "InputConstraints",
    "ModelCard",
    "SegmentationAdapter",
    "create_model",
    "get_card",
    "list_models",
    "register",
]
