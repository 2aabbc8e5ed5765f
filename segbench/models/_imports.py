"""Third-party imports with side effects to undo: a leaf, so adapters, weights and labels can all use it."""

from __future__ import annotations

import os
import sys

import torch


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
