"""Executors: where cells run. `local` runs them one after another on this machine; `ray` spreads
them over a Ray cluster. Both run every cell in its own fresh process with a hard timeout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from segbench.cell import CellRequest


@dataclass(frozen=True)
class Job:
    """One cell to run, on one target card when the suite names several."""

    request: CellRequest
    timeout_s: float
    log_path: Path
    hardware: str | None = None

    @property
    def key(self) -> str:
        """What resume and dedup use: the cell id, qualified by the card when there are several."""
        return self.request.cell.cell_id if self.hardware is None else f"{self.request.cell.cell_id}@{self.hardware}"


JobStarted = Callable[[Job], None]
JobFinished = Callable[[Job, dict[str, Any]], None]


class Executor(Protocol):
    def run(self, jobs: list[Job], started: JobStarted, finished: JobFinished) -> None:
        """Run every job; call `finished` as each ends, with an outcome dict that has a status."""
        ...


def get_executor(name: str, address: str | None = None, cpus_per_cell: float | None = None) -> Executor:
    if name == "local":
        from segbench.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from segbench.executors.ray import RayExecutor

        return RayExecutor(address=address, cpus_per_cell=cpus_per_cell)
    from segbench.errors import SegbenchError

    raise SegbenchError(f"--executor: unknown executor '{name}'; use local or ray")
