"""What an executor is given and what it promises: jobs in, one outcome dict per job out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from segbench.cell.request import CellRequest


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
