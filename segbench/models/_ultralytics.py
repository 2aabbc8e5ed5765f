"""What the ultralytics families share: offline import, build from a model YAML, checkpoint loading, fusing.

Private (leading underscore): the registry does not import it as a family. ultralytics itself is
imported lazily, inside the functions, so listing models stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from segbench.errors import WeightsError
from segbench.models._common import read_state_file, strict_load, unwrap_state
from segbench.models.base import InputConstraints, SegmentationAdapter


def import_ultralytics() -> None:
    """Import ultralytics offline, undoing the thread settings its import changes.

    ultralytics sets OMP_NUM_THREADS=1 at import, which reaches child processes and any torch
    that has not started its thread pool yet, so that variable is restored along with torch's count.
    """
    if "ultralytics" in sys.modules:  # postprocess calls this on every batch: keep it free after the first time
        return
    os.environ.setdefault("YOLO_OFFLINE", "1")
    threads = torch.get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS")
    try:
        import ultralytics  # noqa: F401
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
        torch.set_num_threads(threads)


def read_ultralytics_state(name: str, path: Path) -> Mapping[str, torch.Tensor]:
    """A state dict from an ultralytics .pt checkpoint (a pickled model) or from a plain state-dict file."""
    if path.suffix != ".pt":
        return read_state_file(name, path)
    import_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    try:
        # safe_only: weights_only loading against ultralytics' allow-list of its own classes, never arbitrary pickle
        checkpoint, _ = torch_safe_load(str(path), safe_only=True)
    except Exception as exc:
        raise WeightsError(f"{name}: cannot read weights file {path} ({type(exc).__name__}: {str(exc).strip()[:200]})") from None
    if isinstance(checkpoint, Mapping):
        for key in ("ema", "model"):  # trainer checkpoints keep the EMA model; exported ones only 'model'
            if isinstance(checkpoint.get(key), nn.Module):
                return checkpoint[key].float().state_dict()
    return unwrap_state(name, path, checkpoint)


class UltralyticsAdapter(SegmentationAdapter):
    """A model built from an ultralytics model YAML (card.extra['yaml']) by a class of ultralytics.nn.tasks."""

    # The FPN concatenates stride-32 features with upsampled ones, so sides must be multiples of 32.
    constraints: ClassVar[InputConstraints] = InputConstraints(min_size=32, multiple_of=32, policy="pad")
    mean: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 0.0)  # ultralytics only divides by 255
    std: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)
    task_class: ClassVar[str] = "DetectionModel"

    def build_module(self) -> nn.Module:
        import_ultralytics()
        from ultralytics.nn import tasks

        # A '*n-seg.yaml' style name selects the scale row of the unified YAML shipped inside the package.
        return getattr(tasks, self.task_class)(self.card.extra["yaml"], ch=3, verbose=False)

    def load_weights(self, module: nn.Module, path: Path) -> None:
        """Weights are an ultralytics .pt checkpoint or a state dict of the unfused model."""
        strict_load(self.card.name, module, read_ultralytics_state(self.card.name, path), path)

    def finalize(self, module: nn.Module) -> nn.Module:
        # ultralytics fuses Conv+BN before inference (AutoBackend) and reports fused parameter counts; fusing
        # after loading keeps weight files in the usual unfused layout.
        return module.fuse(verbose=False)
