"""The profile pass: after the timed passes (never beside them), operators that account for the forward, blocks from
module paths in every runtime, stable across runs, and what ran in int8 for each int8 path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from segbench.backends import get_backend
from segbench.cell import passes as cell
from segbench.cell.profile import TOP_OPERATORS, NodeTime, module_of_node, operators, profile_pass, profiler_active
from segbench.cell.request import CellRequest
from segbench.models.blocks import BlockMap, count_block_work
from segbench.models.registry import create_model, load_plugin
from segbench.suite.matrix import CellSpec
from segbench.suite.schema import ProfileConfig, Timing
from tests.helpers import FAST_TIMING, FAULT_PLUGIN, segbench

FAST_SCNN_BLOCKS = {"learning to downsample", "global feature extractor", "feature fusion", "classifier (head)"}


def _eager_profile(side: int, iters: int = 5) -> dict[str, Any]:
    """fast-scnn (random weights, seeded by the adapter) profiled in this process on the eager backend."""
    torch.manual_seed(0)
    adapter = create_model("fast-scnn", None, {})
    adapter.build(torch.device("cpu"))
    blocks = BlockMap.for_model("fast-scnn", adapter.model)
    work = count_block_work(adapter, side, side, blocks)
    backend = get_backend("eager")
    inputs = adapter.preprocess(torch.randint(0, 256, (1, side, side, 3), dtype=torch.uint8))
    with torch.inference_mode():
        forward = backend.prepare(adapter, inputs)
        forward(inputs)  # warm, as the timed passes leave it
        return profile_pass(
            backend, forward, inputs, iters, torch.device("cpu"), adapter.model, blocks, work, torch.float32
        )


def test_the_top_operators_cover_the_forward_and_every_block_is_named() -> None:
    profile = _eager_profile(256)
    top = [row for row in profile["operators"] if not row["name"].startswith("other (")]
    # Against the wall time of each profiled forward, not only the time the profiler attributed.
    assert sum(row["self_ms"] for row in top) / profile["forward_ms"] >= 0.8
    assert {block["name"] for block in profile["blocks"]} >= FAST_SCNN_BLOCKS
    assert abs(sum(block["share"] for block in profile["blocks"]) - 1.0) < 0.01
    conv = next(row for row in profile["operators"] if row["name"] == "aten::conv2d")
    assert conv["precision"] == "fp32" and conv["implementation"].startswith("aten::")
    counted = {block["name"]: block.get("flops") for block in profile["blocks"]}
    assert counted["global feature extractor"] > 0  # FLOPs per block, the inputs of its bound


def _calls(profile: dict[str, Any]) -> dict[str, float]:
    """Calls per forward of each operator, whatever kernel each call chose: fixed by the model, not by the timing."""
    calls: dict[str, float] = {}
    for row in profile["operators"]:
        calls[row["name"]] = round(calls.get(row["name"], 0.0) + row["calls"], 3)
    return calls


def test_the_blocks_and_operators_are_the_same_across_runs() -> None:
    first, second = _eager_profile(64, iters=3), _eager_profile(64, iters=3)
    assert {b["name"] for b in first["blocks"]} == {b["name"] for b in second["blocks"]} >= FAST_SCNN_BLOCKS
    # The times move with the machine; which operators run, and how often, do not (an op of ~1 us may read 0 us in
    # one run and drop out, so only those above 1 % are held to it, and calls split across kernels round per kernel).
    one, two = _calls(first), _calls(second)
    kept = {o["name"] for o in first["operators"] if o["share"] > 0.01}
    assert kept and all(abs(one[name] - two.get(name, 0)) <= 0.03 * one[name] for name in kept), (one, two)
    flops = lambda p: {b["name"]: b.get("flops") for b in p["blocks"]}  # noqa: E731
    assert flops(first) == flops(second)


def test_the_operator_table_is_bounded_with_an_other_row() -> None:
    nodes = [NodeTime(f"op{i}", "k", "fp32", None, float(100 - i), 1) for i in range(TOP_OPERATORS + 5)]
    rows = operators(nodes, iters=1)
    assert len(rows) == TOP_OPERATORS + 1 and rows[-1]["name"] == "other (5 operators)"
    assert abs(sum(row["share"] for row in rows) - 1.0) < 0.01


def test_the_profile_pass_runs_after_the_latency_pass_and_never_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    load_plugin(FAULT_PLUGIN)
    events: list[tuple[str, bool]] = []
    timed, profiled = cell.time_steps, cell.profile_pass

    def watched_timing(step: Any, *args: Any, **kwargs: Any) -> Any:
        def watched_step() -> Any:
            events.append(("latency", profiler_active()))
            return step()

        return timed(watched_step, *args, **kwargs)

    def watched_profile(*args: Any, **kwargs: Any) -> Any:
        events.append(("profile", profiler_active()))
        return profiled(*args, **kwargs)

    monkeypatch.setattr(cell, "time_steps", watched_timing)
    monkeypatch.setattr(cell, "profile_pass", watched_profile)
    spec = CellSpec(model="test-tiny", resolution=(32, 32), batch_size=1, precision="fp32", backend="eager")
    request = CellRequest(
        cell=spec, device="cpu", timing=Timing(**FAST_TIMING), poll_interval_ms=10, threads=None,
        profile=ProfileConfig(iters=3),
    )  # fmt: skip
    outcome = cell.measure_cell(request)
    latency = [active for name, active in events if name == "latency"]
    assert latency and not any(latency)  # no profiler recorded while the latency pass ran
    assert [name for name, _ in events].index("profile") > max(i for i, (n, _) in enumerate(events) if n == "latency")
    assert outcome["profile"]["operators"] and outcome["profile_unavailable"] is None
    assert not profiler_active()


def _run(tmp_path: Path, precisions: list[str], backends: list[str], **fields: Any) -> list[dict[str, Any]]:
    suite = {
        "name": "profile-test",
        "device": "cpu",
        "threads": 1,
        "models": ["fast-scnn"],
        "resolutions": [64],
        "precisions": precisions,
        "backends": backends,
        "roofline": {"measure_ceiling": False},
        "timing": {**FAST_TIMING, "telemetry_s": 0},
        "profile": {"iters": 3},
        **fields,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    done = segbench("run", str(path), "--out", str(tmp_path / "runs"), timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def _int8_operators(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in record["profile"]["operators"] if row["precision"] == "int8"]


@pytest.mark.slow
def test_each_int8_path_reports_the_operators_that_ran_in_int8(tmp_path: Path) -> None:
    records = _run(
        tmp_path,
        ["int8", "ort-int8", "ov-int8"],
        ["eager", "onnxruntime", "openvino"],
        include=[
            {"precision": "int8", "backend": "eager"},
            {"precision": "ort-int8", "backend": "onnxruntime"},
            {"precision": "ov-int8", "backend": "openvino"},
        ],
    )
    by_precision = {record["precision"]: record for record in records if record["status"] == "ok"}
    assert set(by_precision) == {"int8", "ort-int8", "ov-int8"}, [(r["precision"], r.get("error")) for r in records]
    torchao = _int8_operators(by_precision["int8"])
    assert any("qconv" in (row["name"] + row["implementation"]).lower() for row in torchao)
    onnx = _int8_operators(by_precision["ort-int8"])
    assert any(row["name"] in ("QLinearConv", "ConvInteger", "QGemm", "QLinearMatMul") for row in onnx)
    openvino = _int8_operators(by_precision["ov-int8"])
    assert any("i8" in row["implementation"].lower() or "u8" in row["implementation"].lower() for row in openvino)
    for record in by_precision.values():
        assert 0 < record["profile"]["low_precision_share"] <= 1
    # Exported graphs keep their module paths: ONNX Runtime's and OpenVINO's blocks are the model's.
    for precision in ("ort-int8", "ov-int8"):
        names = {block["name"] for block in by_precision[precision]["profile"]["blocks"] if block["share"] > 0.02}
        assert names & FAST_SCNN_BLOCKS, (precision, names)


@pytest.mark.slow
def test_every_runtime_profiles_a_cell_in_its_own_process(tmp_path: Path) -> None:
    records = _run(tmp_path, ["fp32"], ["eager", "onnxruntime", "openvino"])
    profilers = {record["backend"]: record["profile"]["profiler"] for record in records}
    assert profilers == {
        "eager": "torch.profiler",
        "onnxruntime": "onnxruntime session profiling",
        "openvino": "openvino PERF_COUNT",
    }
    for record in records:
        blocks = {block["name"] for block in record["profile"]["blocks"]}
        assert blocks & FAST_SCNN_BLOCKS, (record["backend"], blocks)
        executed = {row["precision"] for row in record["profile"]["operators"]}
        assert "fp32" in executed and not executed & {"int8", "bf16", "fp16"}, (record["backend"], executed)
        counted = [block for block in record["profile"]["blocks"] if block.get("flops")]
        assert counted and all(block.get("arithmetic_intensity") for block in counted)  # the runner's bound fields


def test_onnx_runtime_node_names_map_back_to_module_paths_only_when_certain() -> None:
    paths = {"relu_1": "stage.0", "getitem_21": "stage.1", "relu": "stem", "node_Conv_788": "head.0"}
    assert module_of_node("relu_1_nchwc", paths) == "stage.0"  # ORT's layout rewrite renames after the output
    assert module_of_node("node_Conv_788_quant", paths) == "head.0"  # quantize_static's rename
    assert module_of_node("relu_11_nchwc", paths) is None  # never the `relu` of another module
    assert module_of_node("Squeeze_token_12", paths) is None  # a node ORT inserted
