"""The model `segbench predict` runs, as one precision x backend path runs it (the same conversion a cell makes).

A pair that cannot run is refused before anything is built, by the rules `run` and the cell apply
(`segbench.precision.cell_reason`). Exported paths (ONNX Runtime, OpenVINO, a PT2E int8 program) have a static input
shape, so one is prepared per distinct input size; the fp32 eager module takes any size and is built once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segbench.backends import get_backend
from segbench.backends.base import ForwardFn
from segbench.cell.passes import apply_precision
from segbench.data.images import calibration_batches
from segbench.errors import SegbenchError, UnsupportedError
from segbench.models.base import SegmentationAdapter
from segbench.models.registry import create_model
from segbench.naming import REFERENCE_BACKEND, REFERENCE_PRECISION
from segbench.precision import cell_reason, get_precision
from segbench.system import cache


def check_path(precision_name: str, backend_name: str, device: torch.device) -> None:
    """Refuse an unknown name or a pair that cannot run here, in one line naming the flag."""
    get_precision(precision_name)  # an unknown name: the registry's did-you-mean line
    get_backend(backend_name)
    reason = cell_reason(precision_name, backend_name, device)
    if reason:
        raise SegbenchError(
            f"--precision {precision_name} --backend {backend_name}: {reason}; choose a pair that runs here "
            "(segbench run --model M --all-paths --dry-run lists them)"
        )


def check_class_names(adapter: SegmentationAdapter, names: list[str] | None) -> None:
    """Names given for a head of another size would be silently wrong: say so instead."""
    if names is not None and len(names) != adapter.num_classes:
        raise SegbenchError(
            f"--class-names: {len(names)} names but {adapter.card.name} has {adapter.num_classes} classes here; give "
            "one name per class id"
        )


@dataclass
class Prepared:
    adapter: SegmentationAdapter
    forward: ForwardFn
    build_s: float


class PredictPath:
    """Builds and caches the prepared model per input size (one for every size where the path takes any)."""

    def __init__(
        self,
        model: str,
        weights: Path | None,
        options: dict[str, Any] | None,
        device: str,
        precision: str = REFERENCE_PRECISION,
        backend: str = REFERENCE_BACKEND,
        class_names: list[str] | None = None,
    ):
        self.model, self.weights, self.options = model, weights, options
        self.class_names = class_names  # predict's own: any model takes them, whatever its options schema
        self.device = torch.device(device)
        check_path(precision, backend, self.device)
        self.precision, self.backend = get_precision(precision), get_backend(backend)
        self.any_size = precision == REFERENCE_PRECISION and backend == REFERENCE_BACKEND
        self._prepared: dict[tuple[int, int] | None, Prepared] = {}

    def prepared(self, height: int, width: int) -> Prepared:
        size = None if self.any_size else (height, width)
        if size not in self._prepared:
            self._prepared[size] = self._prepare(height, width)
        return self._prepared[size]

    def names(self, adapter: SegmentationAdapter) -> tuple[str, ...] | None:
        """The names given to predict, else the model's own (from its weights, options or label set)."""
        return tuple(self.class_names) if self.class_names else adapter.class_names

    def autocast(self) -> Any:
        return self.precision.autocast(self.device)

    def _prepare(self, height: int, width: int) -> Prepared:
        started = time.perf_counter()
        adapter = create_model(self.model, self.weights, self.options)
        adapter.build(self.device)
        check_class_names(adapter, self.class_names)
        if self.any_size:
            return Prepared(adapter, adapter.forward, time.perf_counter() - started)
        # The cache keys on the cell's axes: predict at a run's resolution reuses that cell's exported file.
        cache.set_cell(
            model=self.model,
            options=self.options or {},
            weights=str(self.weights) if self.weights else None,
            resolution=[height, width],
            batch_size=1,
            precision=self.precision.name,
            backend=self.backend.name,
            device=self.device.type,
        )
        images = calibration_batches(height, width, 1)  # the photographs a cell calibrates on, at this size
        try:
            adapter.model, _ = apply_precision(self.precision, adapter, images[0], images, self.device)
            adapter.input_dtype = self.precision.input_dtype
            adapter = self.backend.wrap(adapter)
            with torch.inference_mode(), self.autocast():
                forward = self.backend.prepare(adapter, adapter.preprocess(images[0]))
        except UnsupportedError as exc:
            raise SegbenchError(
                f"--precision {self.precision.name} --backend {self.backend.name}: {exc}; choose another pair"
            ) from None
        return Prepared(adapter, forward, time.perf_counter() - started)
