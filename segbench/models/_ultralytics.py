"""What the ultralytics families share: offline import, build from a model YAML, checkpoint loading, fusing.

Private (leading underscore): the registry does not import it as a family. ultralytics itself is
imported lazily, inside the functions, so listing models stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from torch import nn

from segbench.models._common import read_state_file, unreadable_weights, unwrap_state
from segbench.models._imports import import_ultralytics
from segbench.models.base import Checkpoint, InputConstraints, SegmentationAdapter


def _model_names(model: nn.Module) -> tuple[str, ...] | None:
    """An ultralytics model's class names ({id: name}), unless they are only the default digits."""
    names = getattr(model, "names", None)
    if not isinstance(names, Mapping) or not names:
        return None
    ordered = tuple(str(names[index]) for index in sorted(names))
    return None if all(name == str(index) for index, name in enumerate(ordered)) else ordered


def read_ultralytics_checkpoint(name: str, path: Path) -> Checkpoint:
    """The state dict (and class names) of an ultralytics .pt checkpoint, or of a plain state-dict file."""
    if path.suffix != ".pt":
        return Checkpoint(read_state_file(name, path))
    import_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    try:
        # safe_only: weights_only loading against ultralytics' allow-list of its own classes, never arbitrary pickle
        checkpoint, _ = torch_safe_load(str(path), safe_only=True)
    except Exception as exc:  # noqa: BLE001 (any reader failure: an unreadable file, in one line)
        raise unreadable_weights(name, path, exc) from None
    if isinstance(checkpoint, Mapping):
        for key in ("ema", "model"):  # trainer checkpoints keep the EMA model; exported ones only 'model'
            if isinstance(checkpoint.get(key), nn.Module):
                model = checkpoint[key]
                return Checkpoint(model.float().state_dict(), _model_names(model))
    return Checkpoint(unwrap_state(name, path, checkpoint))


class UltralyticsAdapter(SegmentationAdapter):
    """A model built from an ultralytics model YAML (card.extra['yaml']) by a class of ultralytics.nn.tasks."""

    warm_imports = ("ultralytics.nn.tasks", "ultralytics.utils.ops", "ultralytics.utils.nms")

    # The FPN concatenates stride-32 features with upsampled ones, so sides must be multiples of 32.
    constraints: ClassVar[InputConstraints] = InputConstraints(min_size=32, multiple_of=32, policy="pad")
    mean: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 0.0)  # ultralytics only divides by 255
    std: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)
    task_class: ClassVar[str] = "DetectionModel"
    # Instance models have no background row: the semantic map's class 0 is "no instance", so names shift by one.
    background_class: ClassVar[bool] = False

    @property
    def head_classes(self) -> int:
        """The `nc` of the ultralytics model: the class map's count, less the background for instance models."""
        return self.num_classes - int(self.background_class)

    def build_module(self) -> nn.Module:
        import_ultralytics()
        from ultralytics.nn import tasks

        # A '*n-seg.yaml' style name selects the scale row of the unified YAML shipped inside the package.
        return getattr(tasks, self.task_class)(self.card.extra["yaml"], ch=3, nc=self.head_classes, verbose=False)

    def read_weights(self, path: Path) -> Checkpoint:
        """Weights are an ultralytics .pt checkpoint or a state dict of the unfused model."""
        checkpoint = read_ultralytics_checkpoint(self.card.name, path)
        if self.background_class and checkpoint.class_names:
            return Checkpoint(checkpoint.state, ("background", *checkpoint.class_names))
        return checkpoint

    def finalize(self, module: nn.Module) -> nn.Module:
        # ultralytics fuses Conv+BN before inference (AutoBackend) and reports fused parameter counts; fusing
        # after loading keeps weight files in the usual unfused layout.
        return module.fuse(verbose=False)
