from __future__ import annotations

import pytest
import torch

from segbench.models import create_model

PUBLISHED_PARAMS = 1.11e6  # Poudel et al. 2019 (arXiv 1902.04502), introduction: "1.11 million parameters"


def test_parameter_count_within_three_percent_of_the_paper() -> None:
    adapter = create_model("fast-scnn")
    adapter.build("cpu")
    assert adapter.parameter_count() == pytest.approx(PUBLISHED_PARAMS, rel=0.03)


def test_pipeline_returns_a_class_map_at_input_resolution() -> None:
    adapter = create_model("fast-scnn")
    adapter.build("cpu")
    images = torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8)
    with torch.inference_mode():
        labels = adapter.postprocess(adapter.forward(adapter.preprocess(images)), (64, 96))
    assert labels.shape == (2, 64, 96) and labels.dtype == torch.uint8
    assert 0 <= int(labels.min()) and int(labels.max()) < 19


def test_same_seed_same_weights_in_every_process() -> None:
    first, second = create_model("fast-scnn"), create_model("fast-scnn")
    first.build("cpu"), second.build("cpu")
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
