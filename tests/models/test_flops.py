"""FLOPs and bytes moved per image (segbench.models.flops): the roofline's two axes."""

from __future__ import annotations

import pytest
import torch

from segbench.models.base import ModelCard
from segbench.models.flops import count_flops, count_work
from tests.fault_models import TinyAdapter

CARD = ModelCard(name="test-tiny", family="test", variant="tiny", source="tests", num_classes=4, dataset="synthetic")


def test_count_work_counts_parameters_input_and_each_layer_output_once() -> None:
    """Issue 27 item 10: no record carried bytes moved per image, so the roofline had no memory side. TinyNet on a
    16 x 16 image: conv 3->8 stride 2 (8 x 8 x 8 out), ReLU (a new 512-element tensor), conv 8->4 (256 out)."""
    adapter = TinyAdapter(CARD, None, None)
    work = count_work(adapter, 16, 16)
    assert work.flops == pytest.approx(count_flops(adapter, 16, 16))
    assert work.parameter_elements == (3 * 8 * 9 + 8) + (8 * 4 + 4)
    assert work.input_elements == 3 * 16 * 16
    assert work.activation_elements == 512 + 512 + 256
    assert work.traffic() == {
        "parameter_elements": 260,
        "input_elements": 768,
        "activation_elements": 1280,
    }


def test_an_output_aliasing_its_input_moves_nothing() -> None:
    """Identity and in-place activations write no new tensor: counting them would double an activation's bytes."""
    adapter = TinyAdapter(CARD, None, None)
    adapter.build("cpu")
    adapter.model.body[1] = torch.nn.ReLU(inplace=True)  # type: ignore[index]
    assert count_work(adapter, 16, 16).activation_elements == 512 + 256
