"""Results: the record schema, the run folder's store, the metric catalogue and runs loaded for reading.

`segbench.results.load(run_dir)` (a run as a pandas DataFrame) is public; it is imported on first use, so
importing the package for its schema or catalogue does not import pandas.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "load":
        from segbench.results.frame import load  # lazy: the frame imports pandas

        return load
    raise AttributeError(f"module 'segbench.results' has no attribute {name!r}")
