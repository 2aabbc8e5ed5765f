"""The demo: a deterministic synthetic dataset, and committed weights that reach their stated validation mIoU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segbench.data.datasets import Dataset, DatasetConfig, check_dataset
from segbench.demo import CLASS_NAMES, STATED_MIOU
from segbench.demo.generate import generate, make_sample
from segbench.suite.schema import load_suite
from tests.helpers import REPO

MARGIN = 0.03  # a regenerated set is the same pixels; the margin only absorbs library-version numerics


def test_the_generator_is_deterministic_and_writes_a_valid_plain_dataset(tmp_path: Path) -> None:
    first, second = make_sample(np.random.default_rng(5)), make_sample(np.random.default_rng(5))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    root = generate(tmp_path / "demo", train=4, val=3)
    dataset = Dataset(DatasetConfig(path=root))
    assert dataset.layout == "plain" and len(dataset.samples()) == 3 and dataset.has_split("train")
    assert 0 < check_dataset(dataset, len(CLASS_NAMES)) < len(CLASS_NAMES)


def test_the_accuracy_demo_suite_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segbench.demo.recipes import RECIPES

    assert all(recipe.weights_file.exists() for recipe in RECIPES.values()), "demo weights are committed"
    monkeypatch.chdir(tmp_path)
    generate(tmp_path / "demo-data", train=2, val=2)
    suite = load_suite(REPO / "suites" / "accuracy-demo.yaml")
    assert suite.dataset is not None and {m.name for m in suite.models} >= set(RECIPES)


@pytest.mark.parametrize("model", ["fast-scnn", "segformer-b0", "yolov8n-seg"])
def test_committed_demo_weights_reach_their_stated_miou(model: str, tmp_path: Path) -> None:
    from segbench.demo.recipes import RECIPES
    from segbench.demo.train import demo_options, evaluate, load_split
    from segbench.models.registry import create_model

    recipe = RECIPES[model]
    assert recipe.weights_file.exists() and model in STATED_MIOU, f"{recipe.weights_file.name} is committed"
    root = generate(tmp_path / "demo", train=0)
    adapter = create_model(model, recipe.weights_file, demo_options())
    adapter.build("cpu")
    images, masks = load_split(root, "val")
    assert evaluate(adapter, images, masks)["miou"] >= STATED_MIOU[model] - MARGIN
