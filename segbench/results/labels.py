"""How a cell is named to a reader: one home for the labels of the progress bar, tables, plots and messages.

Both forms read a record's axes (a `CellSpec.to_dict()` has the same keys): `axes_label` is the short one the
progress bar, the gate and expectations print; `cell_label` adds the options, the weights' file and the card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def resolution_text(record: dict[str, Any]) -> str:
    height, width = record["resolution"]
    return f"{height}x{width}"


def option_text(record: dict[str, Any]) -> str:
    """precision/backend, plus options and weights when a suite varies them."""
    text = f"{record['precision']} / {record['backend']}"
    if record.get("options"):
        text += " " + json.dumps(record["options"], sort_keys=True)
    if record.get("weights"):
        text += f" [{Path(str(record['weights'])).name}]"
    return text


def axes_label(record: dict[str, Any]) -> str:
    """model HxW bN precision backend."""
    model, batch = record["model"], record["batch_size"]
    return f"{model} {resolution_text(record)} b{batch} {record['precision']} {record['backend']}"


def cell_label(record: dict[str, Any]) -> str:
    """The model, resolution and batch, option_text, and the card (a run over several cards repeats each cell)."""
    card = f" @{record['hardware']}" if record.get("hardware") else ""
    return f"{record['model']} {resolution_text(record)} b{record['batch_size']} {option_text(record)}{card}"
