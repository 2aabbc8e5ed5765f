"""SAM: built offline from config, promptable, encoder and decoder timed as separate stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from segbench.models import create_model
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite

# Released SAM checkpoints as transformers' SamModel counts them (ViT-B is the "≈ 94 M" of the issue).
PUBLISHED_M = {"sam-vit-b": 93.7, "sam-vit-l": 312.3, "sam-vit-h": 641.1}


@pytest.mark.parametrize(
    "name",
    ["sam-vit-b", pytest.param("sam-vit-l", marks=pytest.mark.slow), pytest.param("sam-vit-h", marks=pytest.mark.slow)],
)
def test_parameter_count_matches_the_released_model(name: str) -> None:
    module = create_model(name).build_module()
    assert round(sum(p.numel() for p in module.parameters()) / 1e6, 1) == PUBLISHED_M[name]


@pytest.mark.parametrize("prompt, prompts", [("center-point", 1), ("grid", 4), ("box", 1)])
def test_prompt_policies_give_one_mask_per_prompt(prompt: str, prompts: int) -> None:
    adapter = create_model("sam-vit-b", options={"image_size": 128, "prompt": prompt, "grid_points": 2})
    adapter.build("cpu")
    images = torch.randint(0, 256, (2, 96, 160, 3), dtype=torch.uint8)
    with torch.inference_mode():
        masks = adapter.forward(adapter.preprocess(images))
        labels = adapter.postprocess(masks, (96, 160))
    assert masks.shape[:2] == (2, prompts)
    assert labels.shape == (2, 96, 160) and int(labels.max()) <= prompts


def test_sam_cell_times_encoder_and_decoder_separately(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    models = [{"name": "sam-vit-b", "options": {"image_size": 128, "prompt": "grid", "grid_points": 2}}]
    suite_path = write_suite(models=models, resolutions=[[96, 160]])
    run_dir = run_suite(load_suite(suite_path), suite_path, tmp_path / "results").run_dir
    [record] = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record.get("traceback")
    stages = record["stages_ms"]
    assert {"preprocess", "forward", "postprocess", "image_encoder", "mask_decoder"} <= set(stages)
    assert stages["image_encoder"]["median"] + stages["mask_decoder"]["median"] <= stages["forward"]["median"] * 1.2
    assert any("grid (2x2 points)" in note for note in record["notes"])
