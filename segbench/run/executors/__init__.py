"""Executors: where cells run. `local` runs them one after another on this machine; `ray` spreads
them over a Ray cluster. Both run every cell in its own fresh process with a hard timeout."""

from __future__ import annotations

from segbench.errors import SegbenchError
from segbench.run.executors.base import Executor
from segbench.run.executors.ray import RayExecutor


def get_executor(name: str, address: str | None = None, cpus_per_cell: float | None = None) -> Executor:
    if name == "local":
        from segbench.run.executors.local import LocalExecutor  # lazy: imports pandas

        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address, cpus_per_cell=cpus_per_cell)

    raise SegbenchError(f"--executor: unknown executor '{name}'; use local or ray")
