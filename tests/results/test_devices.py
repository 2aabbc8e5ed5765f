"""Which device measured a record and which card it only stood in for (segbench/results/devices.py)."""

from __future__ import annotations

from segbench.results.devices import emulated_budget, measured_on_line, ran_on, target_card


def _on(name: str) -> dict:
    """An ok cell of a Ray node whose fingerprint names its GPU."""
    return {"status": "ok", "device": "cuda:0", "node": {"fingerprint": {"gpus": [{"index": 0, "name": name}]}}}


def test_ran_on_reads_the_node_then_the_run_then_the_budget() -> None:
    meta = {
        "device": "cuda:0",
        "fingerprint": {"machine": "NVIDIA H200", "gpus": [{"index": 0, "name": "NVIDIA H200"}]},
    }
    assert ran_on(_on("NVIDIA L4"), meta) == "NVIDIA L4"
    assert ran_on({"device": "cuda:0"}, meta) == "NVIDIA H200"
    emulated = {"device": "cuda:0", "budget": {"target": "rtx3060", "fraction": 0.08, "emulated_on": "NVIDIA H200"}}
    assert ran_on(emulated, None) == "NVIDIA H200" and emulated_budget(emulated) is not None
    assert ran_on({"device": "cuda:0"}, None) == "cuda:0"  # nothing names it: the claim's card cannot match
    assert emulated_budget({"budget": {"target": "rtx3060", "fraction": None}}) is None  # a CPU cell: no cap


def test_the_target_card_is_one_profile_or_none() -> None:
    card = target_card("rtx3060")
    assert card is not None and card.is_device("nvidia geforce rtx 3060") and not card.is_device("NVIDIA H200")
    assert target_card(["rtx3060"]) == card and target_card(["l4", "t4"]) is None and target_card(None) is None
    unknown = target_card("no-such-card")
    assert unknown is not None and not unknown.is_device("no-such-card")  # unreadable: nothing is measured on it


def test_a_run_over_several_cards_says_each_figure_is_its_cells() -> None:
    line = measured_on_line([_on("NVIDIA L4"), _on("NVIDIA A100-SXM4-80GB")], {}, ["l4", "a100-80gb"])
    assert line == "Measured on NVIDIA L4, NVIDIA A100-SXM4-80GB: each figure below is from the device its cell ran on."
    assert measured_on_line([], {}, "rtx3060") == ""
