"""Issue 34, "decide and document": a .pt that torch's safe loader refuses. torch's own message (kept as the
error) advised re-running with `weights_only=False`, i.e. running the file's pickled code; segbench says in its own
line what to save instead, and never loads it unsafely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segbench.errors import WeightsError
from segbench.models.registry import create_model


class Pickled:
    """A Python object in a checkpoint: torch's safe loader refuses its class."""


def test_a_pickled_object_checkpoint_gets_segbenchs_own_line(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": Pickled()}, checkpoint)  # a Python object, not only tensors
    with pytest.raises(WeightsError) as caught:
        create_model("fast-scnn", checkpoint).build()
    message = str(caught.value)
    assert "not a plain checkpoint" in message and "torch.save(model.state_dict(), path)" in message
    assert "weights_only" not in message and "\x1b" not in message and "\n" not in message
