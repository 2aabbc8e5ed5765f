"""Hardware profiles, budget arithmetic and roofline figures (CPU; the budget's real cap is a gpu test)."""

from __future__ import annotations

import math
import multiprocessing
import time
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from segbench.errors import SegbenchError
from segbench.hardware import budget as budget_module
from segbench.hardware.budget import BudgetError, allocator_budget_mb, apply_budget, memory_fraction
from segbench.hardware.profiles import (
    FIGURES,
    PROFILE_DIR,
    HardwareError,
    list_profiles,
    load_profile,
    load_profile_file,
)
from segbench.hardware.roofline import (
    _ceiling_child,
    achieved_tflops,
    matmul_classes,
    measure_ceiling,
    measure_ceiling_isolated,
    peak_tflops,
    percent_of_ceiling,
    percent_of_peak,
    roofline,
)
from segbench.precision import get_precision, precision_names
from segbench.precision.base import MatmulClass
from segbench.system.cpus import default_threads
from tests.helpers import FIXTURES

EXPECTED_CARDS = {"rtx3060", "rtx4090", "t4", "a100-40gb", "a100-80gb", "l4", "h100-sxm", "h100-pcie", "jetson-orin"}
H100_TOTAL_MB = 81079.0  # what an H100 80GB HBM3 reported to CUDA (torch total_memory) in a real run


# ---- profiles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_CARDS))
def test_every_bundled_profile_loads_and_sources_its_figures(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    for figure in FIGURES:
        if getattr(profile, figure) is not None:
            assert profile.source_of(figure), f"{name}: {figure} has no source"
    assert "estimate" in profile.sources["cuda_context_mb"]


def test_bundled_set_and_key_figures() -> None:
    assert EXPECTED_CARDS <= set(list_profiles())
    rtx3060 = load_profile("rtx3060")
    assert (rtx3060.memory_gb, rtx3060.memory_mb, rtx3060.fp32_tflops, rtx3060.tdp_w) == (12, 12288, 12.74, 170)
    assert rtx3060.compute_capability == "8.6"
    assert "[D]" in rtx3060.sources["fp16_tensor_tflops"]  # derived figures say so
    assert load_profile("t4").bf16_tensor_tflops is None
    assert load_profile("jetson-orin").budget_only and load_profile("jetson-orin").int8_tensor_tops is None
    assert load_profile("RTX3060").name == "rtx3060"


def _write_profile(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((PROFILE_DIR / "rtx3060.yaml").read_text())
    data.update(changes)
    data = {key: value for key, value in data.items() if value != "<drop>"}
    path = tmp_path / "mycard.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_profile_file_by_path(tmp_path: Path) -> None:
    path = _write_profile(tmp_path, name="mycard", memory_gb=6, cuda_total_mb=6000)
    assert load_profile(str(path)).memory_gb == 6


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"boost_clock": 1.7}, "boost_clock: unknown key"),
        ({"tdp_w": "<drop>"}, "tdp_w: required field is missing"),
        ({"memory_gb": -1}, "memory_gb: Input should be greater than 0"),
        ({"sources": {"memory_gb": "x"}}, "figure(s) without a source: memory_bandwidth_gbs"),
        ({"compute_capability": "eight"}, "compute_capability"),
    ],
)
def test_bad_profile_is_one_clear_line(tmp_path: Path, changes: dict, expected: str) -> None:
    path = _write_profile(tmp_path, **changes)
    with pytest.raises(HardwareError) as error:
        load_profile_file(path)
    assert str(path) in str(error.value) and expected in str(error.value)
    assert isinstance(error.value, SegbenchError)


def test_unknown_profile_suggests_the_close_one() -> None:
    with pytest.raises(
        SegbenchError, match=r"unknown hardware profile 'rtx-3060' \(did you mean 'rtx3060'\? known: a100-40gb"
    ):
        load_profile("rtx-3060")


# ---- budget ---------------------------------------------------------------------------------------


def test_12gb_target_on_an_80gb_card() -> None:
    rtx3060 = load_profile("rtx3060")
    # The driver-reported total, not 12 x 1024: ECC and reserved memory never reach CUDA.
    assert rtx3060.cuda_total_mb is not None and rtx3060.cuda_total_mb < rtx3060.memory_mb
    assert "estimate" in rtx3060.source_of("cuda_total_mb")
    assert allocator_budget_mb(rtx3060) == rtx3060.cuda_total_mb - rtx3060.cuda_context_mb
    fraction = memory_fraction(rtx3060, H100_TOTAL_MB)
    assert fraction == pytest.approx((rtx3060.cuda_total_mb - rtx3060.cuda_context_mb) / H100_TOTAL_MB)
    assert 0.14 < fraction < 0.15


def test_the_h100_profile_carries_its_measured_total_and_others_say_nominal() -> None:
    h100 = load_profile("h100-sxm")
    assert h100.cuda_total_mb == H100_TOTAL_MB and h100.source_of("cuda_total_mb").startswith("[M]")
    l4 = load_profile("l4")
    assert l4.cuda_total_mb is None and l4.total_mb == l4.memory_mb and l4.total_basis.startswith("nominal 24 GB")
    assert load_profile("t4").cuda_total_mb == 15104 and load_profile("t4").source_of("cuda_total_mb").startswith("[S]")


def test_target_bigger_than_the_real_card_is_refused() -> None:
    with pytest.raises(
        BudgetError, match=r"cannot emulate A100 80GB SXM4: .* exceeds this card's 12288 MiB; not emulated"
    ):
        memory_fraction(load_profile("a100-80gb"), 12288)
    with pytest.raises(BudgetError, match="must be positive"):
        memory_fraction(load_profile("t4"), 0)


def test_apply_budget_on_cpu_does_nothing() -> None:
    info = apply_budget(torch.device("cpu"), load_profile("rtx3060"))
    assert (info.emulated, info.fraction, info.emulated_on, info.note) == (False, None, None, "not emulated: CPU cell")
    assert info.budget_mb == allocator_budget_mb(load_profile("rtx3060"))
    assert info.to_dict()["target"] == "rtx3060"


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int]]:
    """A pretend H100 behind torch.cuda's two calls apply_budget makes; records the fractions set."""
    calls: list[tuple[float, int]] = []
    properties = SimpleNamespace(total_memory=int(H100_TOTAL_MB * 1024 * 1024), name="NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(budget_module.torch.cuda, "get_device_properties", lambda index: properties)
    monkeypatch.setattr(
        budget_module.torch.cuda,
        "set_per_process_memory_fraction",
        lambda fraction, index: calls.append((fraction, index)),
    )
    return calls


def test_apply_budget_caps_the_allocator_on_a_bigger_card(fake_cuda: list[tuple[float, int]]) -> None:
    info = apply_budget(torch.device("cuda", 0), load_profile("rtx3060"))
    assert fake_cuda == [(pytest.approx(info.fraction), 0)]
    assert info.emulated and info.emulated_on == "NVIDIA H100 80GB HBM3"
    assert info.note.startswith("budget emulated on NVIDIA H100 80GB HBM3") and "caching allocator only" in info.note
    assert "rtx3060's driver-reported total 12042 MiB (estimate" in info.note


def test_apply_budget_on_a_smaller_card_runs_uncapped(fake_cuda: list[tuple[float, int]]) -> None:
    big = load_profile("jetson-orin").model_copy(update={"memory_gb": 96})
    info = apply_budget(torch.device("cuda", 0), big)
    assert fake_cuda == [] and not info.emulated and "not emulated" in info.note


@pytest.mark.gpu
def test_budget_turns_an_over_budget_allocation_into_oom() -> None:
    device = torch.device("cuda", 0)
    torch.empty(1, device=device)
    info = apply_budget(device, load_profile("rtx3060"))
    if not info.emulated:
        pytest.skip(info.note)
    try:
        inside = torch.empty(int((info.budget_mb - 512) * 1024 * 1024), dtype=torch.uint8, device=device)
        del inside
        torch.cuda.empty_cache()
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(int((info.budget_mb + 512) * 1024 * 1024), dtype=torch.uint8, device=device)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)


# ---- roofline -------------------------------------------------------------------------------------

PRECISION_CLASSES = typing.get_args(MatmulClass)


@pytest.mark.parametrize("name", precision_names())
def test_every_precision_declares_its_matmul_class(name: str) -> None:
    precision = get_precision(name)
    assert precision.matmul_class in PRECISION_CLASSES, f"precision {name} declares no matmul_class"
    assert precision.is_reference == (name == "fp32")


def test_matmul_class_follows_the_arithmetic_not_the_name() -> None:
    """int8-wo keeps fp32 activations (dequantized fp32 matmuls); ort-int8 runs integer kernels; int4-wo's tinygemm runs
    bf16."""
    assert matmul_classes(["int8-wo", "ort-int8", "int4-wo", "fp8", "amp-fp16", "nonsense"]) == {
        "int8-wo": "fp32",
        "ort-int8": "int8",
        "int4-wo": "bf16",
        "fp8": "fp8",
        "amp-fp16": "fp16",
        "nonsense": None,
    }


def test_no_name_string_table_decides_a_class() -> None:
    import segbench.hardware.roofline as roofline_module
    import segbench.report.best as best_module
    import segbench.report.tables as tables_module
    import segbench.results.metrics as metrics_module

    assert not hasattr(roofline_module, "precision_class")
    assert (
        not hasattr(tables_module, "REFERENCE")
        and not hasattr(metrics_module, "REFERENCE")
        and not hasattr(best_module, "FP32_EQUIVALENT")
    )


def test_percent_of_peak_arithmetic() -> None:
    rtx3060 = load_profile("rtx3060")
    achieved = achieved_tflops(10e9, 255.0)  # 10 GFLOPs per image at 255 images/s
    assert achieved == pytest.approx(2.55)
    assert percent_of_peak(achieved, rtx3060, "fp16") == (pytest.approx(10.0), None)  # fp16 peak 25.5
    assert percent_of_peak(achieved, rtx3060, "fp32")[0] == pytest.approx(100 * 2.55 / 12.74)
    assert percent_of_peak(achieved, rtx3060, "int8")[0] == pytest.approx(2.5)
    assert peak_tflops(load_profile("a100-40gb"), "tf32") == (156, "tf32_tensor_tflops")


def test_peak_unknown_gives_a_reason() -> None:
    value, reason = percent_of_peak(1.0, load_profile("t4"), "bf16")
    assert value is None and "bf16_tensor_tflops" in reason and "Ampere" in reason
    value, reason = percent_of_peak(1.0, load_profile("jetson-orin"), "int8")
    assert value is None and "not found" in reason
    assert percent_of_peak(1.0, load_profile("rtx3060"), "fp8") == (
        None,
        "card profiles carry no peak figure for fp8 matmuls",
    )


def test_roofline_record_and_measured_ceiling() -> None:
    ceiling = {"matmul": {"fp32": {"gflops": 200.0}}, "unavailable": {"tf32": "TF32 is a CUDA tensor-core mode"}}
    record = roofline(2e9, 50.0, "fp32", load_profile("rtx3060"), ceiling)  # 0.1 TFLOP/s achieved
    assert record["achieved_tflops"] == pytest.approx(0.1)
    assert record["percent_of_ceiling"] == pytest.approx(50.0)
    assert record["peak_figure"] == "fp32_tflops" and record["percent_of_peak"] == pytest.approx(100 * 0.1 / 12.74)
    assert record["unavailable"] == {}
    assert percent_of_ceiling(0.1, ceiling, "tf32") == (None, "TF32 is a CUDA tensor-core mode")
    assert percent_of_ceiling(0.1, None, "fp32") == (None, "no measured ceiling in this run")
    no_card = roofline(2e9, 50.0, "fp32", None, None)
    assert no_card["percent_of_peak"] is None and set(no_card["unavailable"]) == {
        "percent_of_peak",
        "percent_of_ceiling",
    }
    unknown = roofline(None, 50.0, "fp32", load_profile("rtx3060"), ceiling)
    assert unknown["achieved_tflops"] is None and unknown["unavailable"]["achieved_tflops"] == "FLOPs per image unknown"


def test_measure_ceiling_on_cpu_is_quick_and_positive() -> None:
    started = time.perf_counter()
    ceiling = measure_ceiling("cpu", ["fp32", "bf16", "tf32", "fp8"], seconds=0.3, max_side=128, copy_mb=4)
    assert time.perf_counter() - started < 5
    assert ceiling["matmul"]["fp32"]["gflops"] > 0 and ceiling["matmul"]["fp32"]["side"] <= 128
    assert ceiling["matmul"]["bf16"]["gflops"] > 0
    assert ceiling["copy"]["device_copy_gbs"] > 0 and ceiling["copy"]["host_to_device_gbs"] is None
    assert "tf32" in ceiling["unavailable"] and "fp8" in ceiling["unavailable"]
    assert ceiling["precisions"] == {"fp32": "fp32", "bf16": "bf16", "tf32": "tf32", "fp8": "fp8"}
    assert all(math.isfinite(entry["gflops"]) for entry in ceiling["matmul"].values())
    # The reference the cells' canaries are compared with, on the threads a cell with no `threads:` uses.
    assert ceiling["canary"]["gflops"] > 0 and ceiling["canary"]["threads"] == default_threads()


def test_measure_ceiling_isolated_returns_the_childs_figures() -> None:
    ceiling = measure_ceiling_isolated("cpu", ["fp32"], seconds=0.2, timeout_s=120, max_side=64, copy_mb=1)
    assert ceiling["matmul"]["fp32"]["gflops"] > 0 and ceiling["copy"]["device_copy_gbs"] > 0


def test_a_failing_ceiling_child_reports_an_error() -> None:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    _ceiling_child({"device": "cpu", "precisions": ["fp32"], "no_such_argument": 1}, sender)
    assert receiver.recv()["error"].startswith("TypeError")


# ---- the card a cell ran on (a real H100 run with hardware: rtx3060) ----------------------------------

H100_RUN = FIXTURES / "h100-rtx3060"


def _h100_run() -> tuple[dict, list[dict]]:
    import json

    meta = json.loads((H100_RUN / "meta.json").read_text())
    records = [json.loads(line) for line in (H100_RUN / "results.jsonl").read_text().splitlines()]
    return meta, records


def test_percent_of_peak_uses_the_card_the_cell_ran_on_not_the_emulated_target() -> None:
    from segbench.run.runner import _derived_fields

    meta, records = _h100_run()
    assert meta["hardware_target"] == "rtx3060"
    stored = {(r["model"], r["precision"]): r["roofline"]["percent_of_peak"] for r in records}
    assert stored[("segformer-b2", "fp32")] > 100 and stored[("yolov8x-seg", "fp16")] > 100  # the defect, as recorded
    for record in records:
        derived = _derived_fields({k: v for k, v in record.items() if k != "roofline"}, meta)["roofline"]
        assert derived["peak_card"] == "H100 SXM5 80GB"
        assert derived["peak_tflops"] == getattr(load_profile("h100-sxm"), derived["peak_figure"])
        assert 0 < derived["percent_of_peak"] < 100


def test_percent_of_peak_is_unknown_for_a_card_without_a_profile_and_for_a_cpu() -> None:
    from segbench.run.runner import _derived_fields

    meta, [record, *_] = _h100_run()
    renamed = {
        **meta,
        "fingerprint": {**meta["fingerprint"], "gpus": [{**meta["fingerprint"]["gpus"][0], "name": "NVIDIA B200"}]},
    }
    derived = _derived_fields(record, renamed)["roofline"]
    assert derived["percent_of_peak"] is None and derived["peak_card"] is None
    assert (
        derived["unavailable"]["percent_of_peak"]
        == "ran on NVIDIA B200, which has no hardware profile: its peak is unknown"
    )
    on_cpu = _derived_fields({**record, "device": "cpu"}, {**meta, "device": "cpu"})["roofline"]
    assert (
        on_cpu["percent_of_peak"] is None and "Intel(R) Xeon(R) Processor" in on_cpu["unavailable"]["percent_of_peak"]
    )


def test_the_report_budget_of_a_target_card_is_its_driver_reported_total() -> None:
    from segbench.results.runs import RunData

    meta, records = _h100_run()
    budget = RunData(Path("run"), meta, records).budget()
    assert budget == (12042.0, "rtx3060 budget")  # not 12 x 1024
