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


MAX_OPTIONS_TEXT = 40  # a label's options past this are cut: class_names made every table row 7 lines tall


def options_tag(options: dict[str, Any]) -> str:
    """A model's options in a label: scalars as key=value, a list or mapping by its size (class_names[19]), cut at
    MAX_OPTIONS_TEXT; the full options are in the record, the CSV and the run's suite.yaml."""
    parts = []
    for key, value in sorted(options.items()):
        if isinstance(value, (list, tuple, dict)):
            parts.append(f"{key}[{len(value)}]")
        else:
            parts.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    text = ", ".join(parts)
    return text if len(text) <= MAX_OPTIONS_TEXT else text[: MAX_OPTIONS_TEXT - 1] + "…"


def option_text(record: dict[str, Any]) -> str:
    """precision/backend, plus options and weights when a suite varies them."""
    text = f"{record['precision']} / {record['backend']}"
    if record.get("options"):
        text += f" {{{options_tag(record['options'])}}}"
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
