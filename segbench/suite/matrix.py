"""Matrix expansion: a suite becomes an ordered list of frozen cells, each with a stable id."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from segbench.results.labels import axes_label
from segbench.suite.axes import rule_matches
from segbench.suite.schema import ModelEntry, Suite

__all__ = ["CellSpec", "expand", "rule_matches"]


@dataclass(frozen=True)
class CellSpec:
    """One point of the matrix. `cell_id` hashes the axes, so it survives reordering and resumes."""

    model: str
    resolution: tuple[int, int]
    batch_size: int
    precision: str
    backend: str
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    scenario: str = "offline"

    @property
    def cell_id(self) -> str:
        axes = {
            "model": self.model,
            "weights": self.weights,
            "options": self.options,
            "resolution": list(self.resolution),
            "batch_size": self.batch_size,
            "precision": self.precision,
            "backend": self.backend,
        }
        if self.scenario != "offline":  # offline ids predate scenarios and must not change
            axes["scenario"] = self.scenario
        canonical = json.dumps(axes, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return axes_label(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["resolution"] = list(self.resolution)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellSpec:
        return cls(**{**data, "resolution": tuple(data["resolution"])})


def _cell(
    entry: ModelEntry, resolution: tuple[int, int], batch: int, precision: str, backend: str, scenario: str
) -> CellSpec:
    return CellSpec(
        model=entry.name,
        resolution=resolution,
        batch_size=batch,
        precision=precision,
        backend=backend,
        weights=str(entry.weights) if entry.weights else None,
        options=dict(entry.options),
        scenario=scenario,
    )


def expand(suite: Suite) -> list[CellSpec]:
    """The suite's cells in a deterministic order: models, then resolutions, batch sizes, precisions, backends.

    `include` keeps only cells matching at least one rule (no rules: keep all); `exclude` then drops
    cells matching any rule. Duplicate cells (e.g. a resolution listed twice) appear once.
    """
    cells: list[CellSpec] = []
    seen: set[str] = set()
    for entry, resolution, batch, precision, backend in itertools.product(
        suite.models, suite.resolutions, suite.batch_sizes, suite.precisions, suite.backends
    ):
        cell = _cell(entry, resolution, batch, precision, backend, suite.scenario)
        if suite.include and not any(rule_matches(rule, cell) for rule in suite.include):
            continue
        if any(rule_matches(rule, cell) for rule in suite.exclude):
            continue
        if cell.cell_id not in seen:
            seen.add(cell.cell_id)
            cells.append(cell)
    return cells
