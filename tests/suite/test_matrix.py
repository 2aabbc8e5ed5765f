from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from segbench.suite.matrix import CellSpec, expand
from segbench.suite.schema import load_suite


def test_full_product_in_deterministic_order(write_suite: Callable[..., Path]) -> None:
    suite = load_suite(write_suite(resolutions=[16, [24, 32]], batch_sizes=[1, 2], precisions=["fp32", "bf16"]))
    cells = expand(suite)
    assert len(cells) == 8
    assert [c.label for c in cells] == [c.label for c in expand(suite)]
    assert cells[0] == CellSpec("test-tiny", (16, 16), 1, "fp32", "eager")
    assert cells[1].precision == "bf16" and cells[2].batch_size == 2 and cells[4].resolution == (24, 32)


def test_include_keeps_only_matching_cells_and_exclude_drops(write_suite: Callable[..., Path]) -> None:
    suite = load_suite(
        write_suite(
            resolutions=[16, [24, 32], 64],
            batch_sizes=[1, 2, 4],
            include=[{"resolution": [[24, 32], 64]}],
            exclude=[{"batch_size": [2, 4], "resolution": 64}],
        )
    )
    cells = expand(suite)
    assert {(c.resolution, c.batch_size) for c in cells} == {((24, 32), 1), ((24, 32), 2), ((24, 32), 4), ((64, 64), 1)}


def test_rule_model_wildcards_and_single_hw_resolution(write_suite: Callable[..., Path]) -> None:
    suite = load_suite(
        write_suite(
            models=["test-tiny", "fast-scnn"],
            resolutions=[[64, 128], 128],
            exclude=[{"model": "test-*", "resolution": [64, 128]}],
        )
    )
    assert [(c.model, c.resolution) for c in expand(suite)] == [
        ("test-tiny", (128, 128)),
        ("fast-scnn", (64, 128)),
        ("fast-scnn", (128, 128)),
    ]


def test_cell_id_is_stable_and_depends_only_on_axes() -> None:
    cell = CellSpec("fast-scnn", (512, 1024), 2, "fp16", "eager")
    assert cell.cell_id == CellSpec("fast-scnn", (512, 1024), 2, "fp16", "eager").cell_id
    # The formula is pinned: changing it would break --resume of every stored run.
    axes = {
        "model": "fast-scnn",
        "weights": None,
        "options": {},
        "resolution": [512, 1024],
        "batch_size": 2,
        "precision": "fp16",
        "backend": "eager",
    }
    assert (
        cell.cell_id == hashlib.sha1(json.dumps(axes, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    )
    assert cell.cell_id != CellSpec("fast-scnn", (1024, 512), 2, "fp16", "eager").cell_id
    assert cell.cell_id != CellSpec("fast-scnn", (512, 1024), 2, "fp16", "eager", options={"x": 1}).cell_id
    assert CellSpec.from_dict(cell.to_dict()) == cell


def test_duplicate_axes_give_one_cell(write_suite: Callable[..., Path]) -> None:
    suite = load_suite(write_suite(resolutions=[16, [16, 16]], batch_sizes=[1, 1]))
    assert len(expand(suite)) == 1
