"""Every demo model's recipe by model name, and the trainer each kind of recipe runs with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from segbench.demo import train as torch_loop
from segbench.demo import yolo
from segbench.demo.train import Recipe
from segbench.demo.yolo import YoloRecipe

AnyRecipe = Recipe | YoloRecipe

RECIPES: dict[str, AnyRecipe] = {**torch_loop.RECIPES, "yolov8n-seg": YoloRecipe()}


def train(recipe: AnyRecipe, data: Path, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train with segbench's own loop (dense heads) or ultralytics' trainer (YOLO), and score on the val split."""
    if isinstance(recipe, YoloRecipe):
        return yolo.train(recipe, data, log)
    return torch_loop.train(recipe, data, log)
