"""Fidelity against fp32 eager: what it compares, on which images, and in which numerics."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from segbench.data.images import evaluation_batches
from segbench.measure.fidelity import FidelityAccumulator, Fp32Reference, measure_fidelity
from segbench.models.registry import create_model, load_plugin
from segbench.precision import get_precision
from segbench.precision.base import PrecisionContext
from segbench.results import store as results
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite
from tests.helpers import FAULT_PLUGIN


def test_out_of_range_labels_belong_to_no_class_on_either_side() -> None:
    """A label beyond the card's classes is no class, whichever side produced it (clamping one side inflated the last
    class)."""
    accumulator = FidelityAccumulator(num_classes=3)
    reference = torch.tensor([2, 2, 0, 1])
    candidate = torch.tensor([5, 2, 0, 7])
    accumulator.add_labels(reference, candidate)
    swapped = FidelityAccumulator(num_classes=3)
    swapped.add_labels(candidate, reference)
    # class 0: 1/1; class 1: the reference's one pixel, missed: 0/1; class 2: one of the reference's two pixels: 1/2
    assert accumulator.result()["miou_vs_fp32"] == (1.0 + 0.0 + 0.5) / 3
    assert swapped.result()["miou_vs_fp32"] == accumulator.result()["miou_vs_fp32"]
    assert accumulator.result()["pixel_agreement"] == 0.5
    assert accumulator.result()["out_of_range_pixels"] == {"reference": 0, "candidate": 2}


def test_reference_runs_in_true_fp32_whatever_the_candidate_set() -> None:
    """tf32 turns TF32 on for the process; the fp32 reference must still run with it off, and leave it as it found
    it."""
    seen: list[tuple[bool, bool]] = []
    reference = Fp32Reference("fast-scnn", None, {}, torch.device("cpu"))
    assert reference.adapter.model is not None
    reference.adapter.model.register_forward_pre_hook(
        lambda *_: seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
    )
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    get_precision("tf32").apply(
        nn.Identity(), torch.device("cpu"), PrecisionContext(example=torch.zeros(1))
    )  # what a tf32 cell does
    try:
        reference.run(evaluation_batches(64, 64, 1)[0])
        assert seen == [(False, False)]
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def test_the_reference_loads_suite_relative_weights(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    """`weights: w.pt` beside the suite: the measured model and its fp32 reference both load it, wherever the run
    starts."""
    load_plugin(FAULT_PLUGIN)
    adapter = create_model("test-tiny")
    torch.save(adapter.build_module().state_dict(), tmp_path / "w.pt")
    assert not Path("w.pt").exists()  # relative to the suite, not to the working directory
    suite = write_suite(models=[{"name": "test-tiny", "weights": "w.pt"}], backends=["eager-cl"], resolutions=[32])
    run = run_suite(load_suite(suite), suite, tmp_path / "results")
    [record] = [json.loads(line) for line in (run.run_dir / results.RESULTS_FILE).read_text().splitlines()]
    assert record["status"] == "ok", record.get("error")
    assert record["fidelity_unavailable"] is None
    assert record["fidelity"]["pixel_agreement"] == 1.0
    assert "note" not in record["fidelity"]  # real weights: no random-weights caveat


def test_yolo_drift_is_measured_on_the_head_before_nms() -> None:
    """Random YOLO weights detect nothing: class-map agreement is undefined, yet the raw head's drift is real."""
    candidate = create_model("yolov8n-seg")
    candidate.build("cpu")
    candidate.model = get_precision("bf16").apply(
        candidate.model, torch.device("cpu"), PrecisionContext(example=torch.zeros(1))
    )
    candidate.input_dtype = torch.bfloat16
    reference = Fp32Reference("yolov8n-seg", None, {}, torch.device("cpu"))
    result = measure_fidelity(
        reference,
        candidate,
        candidate.forward,
        evaluation_batches(64, 64, 1),
        contextlib.nullcontext(),
        random_weights=True,
    )
    assert result["reference_detections"] == 0
    assert result["pixel_agreement"] is None and result["miou_vs_fp32"] is None
    assert result["agreement_unavailable"] == "reference found no detections: agreement undefined"
    assert list(result["drift"]) == ["class_logits", "class_scores", "boxes", "mask_coefficients", "prototypes"]
    assert result["drift_of"] == "class_logits"
    assert all(part["max_abs"] > 0 for part in result["drift"].values())  # bf16 moves every head output
    assert result["max_abs_logit_diff"] == result["drift"]["class_logits"]["max_abs"]
    # Random weights: every score is ~1e-5, so their absolute drift is uninformative; the logits' is not.
    assert result["drift"]["class_scores"]["uninformative"] and result["drift_uninformative"] is None
    assert result["drift_snr_db"] is not None and math.isfinite(result["drift_snr_db"])


def test_drift_on_a_flat_reference_is_marked_uninformative_and_snr_stays_scale_free() -> None:
    """Issue 27 item 11: YOLO's headline drift was on post-sigmoid scores (~1e-5 with random weights), so int8 read
    0.0 while its boxes moved 0.47 px. A nearly constant reference marks its drift uninformative; the SNR in dB is the
    same whatever the output's scale."""
    from segbench.results.metrics import METRICS

    generator = torch.Generator().manual_seed(0)
    reference = 1e-5 * (1 + 0.1 * torch.rand(1, 80, 100, generator=generator))
    candidate = reference * 1.3  # a 30 % error: 3e-6 absolute, 0.000 at three decimals
    flat = FidelityAccumulator(num_classes=2)
    flat.add_raw({"class_scores": reference}, {"class_scores": candidate})
    result = flat.result()
    assert result["max_abs_logit_diff"] < 1e-5 and "spans only" in result["drift_uninformative"]
    record = {"status": "ok", "fidelity": result}
    assert METRICS["max_abs_logit_diff"].value(record) is None
    assert "spans only" in METRICS["max_abs_logit_diff"].missing_reason(record)
    scaled = FidelityAccumulator(num_classes=2)
    scaled.add_raw({"logits": reference * 1e6}, {"logits": candidate * 1e6})
    assert scaled.result()["drift_uninformative"] is None
    assert scaled.result()["drift_snr_db"] == pytest.approx(result["drift_snr_db"])
    assert METRICS["drift_snr_db"].value(record) == pytest.approx(result["drift_snr_db"])
    assert result["drift_snr_db"] == pytest.approx(-20 * math.log10(0.3), abs=0.01)


def test_yolo_headline_drift_is_on_the_heads_own_pre_sigmoid_logits() -> None:
    """Issue 27 item 11: the headline is the class head's logit, not its ~1e-5 sigmoid; taken from the raw head output
    where the model returns it (an inverse sigmoid of an approximate one would measure the sigmoid's tail error),
    else the scores' inverse sigmoid."""
    adapter = create_model("yolov8n-seg")
    adapter.build("cpu")
    with torch.inference_mode():
        outputs = adapter.forward(adapter.preprocess(evaluation_batches(64, 64, 1)[0]))
    raw = adapter.raw_outputs(outputs)
    assert list(raw)[0] == "class_logits" and raw["class_logits"] is outputs[1]["scores"]
    assert torch.allclose(raw["class_logits"].sigmoid(), raw["class_scores"])
    assert float(raw["class_scores"].max() - raw["class_scores"].min()) < 1e-3  # random weights: flat scores
    (decoded, protos), _ = outputs
    inverted = adapter.raw_outputs(((decoded, protos), ()))["class_logits"]  # an output without the raw head
    assert torch.allclose(inverted, raw["class_logits"], atol=1e-3)
