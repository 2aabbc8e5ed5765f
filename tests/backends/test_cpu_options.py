"""Issue 28's options as real cells: OpenVINO's default inference precision (`ov-default`), int8 with a bf16
remainder (`ov-int8-bf16`, unsupported with the reason where the CPU has no native bf16), the THROUGHPUT hint
(`openvino-throughput`, one request per image), ultralytics' predictor as its docs call it and at the cell's
thread count, the host stages' torch threads beside another runtime; and, on a quiet machine, the stage pass's
forward against the latency pass's on every backend."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from segbench.results import store as results
from segbench.run.runner import run_suite
from segbench.suite.schema import load_suite
from tests.helpers import FAST_TIMING, FAULT_PLUGIN

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'segbench[openvino]')")
pytest.importorskip("nncf", reason="the openvino extra is not installed (pip install 'segbench[openvino]')")

pytestmark = pytest.mark.xdist_group("tests.backends.test_cpu_options")


def _run(folder: Path, **suite: Any) -> dict[tuple[str, str, int], dict[str, Any]]:
    data = {
        "name": "cpu-options",
        "device": "cpu",
        "plugins": [FAULT_PLUGIN],
        "models": ["test-tiny"],
        "resolutions": [32],
        "roofline": {"measure_ceiling": False},
        "timing": {**FAST_TIMING, "timeout_s": 300},
        **suite,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run_dir = run_suite(load_suite(path), path, folder / "results").run_dir
    lines = (run_dir / results.RESULTS_FILE).read_text().splitlines()
    return {(r["precision"], r["backend"], r["batch_size"]): r for r in map(json.loads, lines)}


def _cpu_computes_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, int], dict[str, Any]]:
    return _run(
        tmp_path_factory.mktemp("cpu-options"),
        batch_sizes=[1, 3],
        precisions=["fp32", "ov-default", "ov-int8-bf16"],
        backends=["eager", "openvino", "openvino-throughput"],
        exclude=[
            {"precision": ["ov-default", "ov-int8-bf16"], "backend": "eager"},
            {"precision": "fp32", "backend": "openvino-throughput", "batch_size": 1},
            {"precision": ["ov-default", "ov-int8-bf16"], "batch_size": 3},
        ],
    )


def _ok(record: dict[str, Any]) -> dict[str, Any]:
    assert record["status"] == "ok", record.get("traceback") or record.get("error")
    return record


def test_ov_default_leaves_the_inference_precision_to_the_plugin(cells: dict) -> None:
    info = _ok(cells[("ov-default", "openvino", 1)])["backend_info"]
    assert info["inference_precision_requested"] == "plugin default"
    # What the CPU plugin picks by itself: bf16 where the CPU computes it natively, f32 elsewhere.
    assert info["inference_precision"] == ("bf16" if _cpu_computes_bf16() else "f32")
    fp32 = _ok(cells[("fp32", "openvino", 1)])["backend_info"]
    assert fp32["inference_precision_requested"] == fp32["inference_precision"] == "f32"


def test_ov_int8_bf16_runs_its_float_remainder_in_bf16_or_says_why_not(cells: dict) -> None:
    record = cells[("ov-int8-bf16", "openvino", 1)]
    if _cpu_computes_bf16():
        info = _ok(record)["backend_info"]
        assert info["inference_precision"] == "bf16" and info["ov-int8-bf16_s"] > 0
        assert record["quantized_share"]["params"] == 1.0  # the NNCF graph ov-int8 builds
        assert record["fidelity"]["pixel_agreement"] >= 0.9
    else:
        assert record["status"] == "unsupported" and "bf16" in record["error"] and "natively" in record["error"]


def test_throughput_hint_runs_each_image_as_its_own_request(cells: dict) -> None:
    batch = _ok(cells[("fp32", "openvino-throughput", 3)])
    info = batch["backend_info"]
    assert info["performance_hint"].endswith("THROUGHPUT") and info["infer_requests"] >= 1 and info["streams"] >= 1
    # Split into requests and put back together, the batch's labels are the latency-hint batch's.
    assert batch["fidelity"]["pixel_agreement"] == 1.0
    latency = _ok(cells[("fp32", "openvino", 3)])["backend_info"]
    assert latency["performance_hint"].endswith("LATENCY") and latency["streams"] == 1


def test_host_threads_beside_another_runtime_are_chosen_by_a_probe(cells: dict) -> None:
    eager = _ok(cells[("fp32", "eager", 1)])
    openvino = _ok(cells[("fp32", "openvino", 1)])
    assert eager["end_to_end_covers"]["host_threads"] == eager["threads"]  # torch's own pool: the cell's threads
    assert eager["end_to_end_covers"]["host_threads_probe_ms"] is None
    covers = openvino["end_to_end_covers"]
    if openvino["threads"] > 1:  # beside OpenVINO's pool: the faster of 1 and the cell's count, both recorded
        probe = covers["host_threads_probe_ms"]
        assert set(probe) == {"1 thread(s)", f"{openvino['threads']} thread(s)"}
        assert probe[f"{covers['host_threads']} thread(s)"] == min(probe.values())


def test_the_probe_picks_the_faster_count_and_skips_each_blocks_first_call() -> None:
    from segbench.cell.passes import PROBE_BLOCKS, PROBE_CALLS, probe_host_threads

    calls: list[int] = []

    def pipeline_ms(count: int) -> float:
        first_of_block = not calls or calls[-1] != count
        calls.append(count)
        # a block's first call carries the last count's cost
        return 100.0 if first_of_block else {1: 6.0, 4: 9.0}[count]

    chosen, medians = probe_host_threads(pipeline_ms, 4)
    assert chosen == 1 and medians == {"1 thread(s)": 6.0, "4 thread(s)": 9.0}
    assert len(calls) == 2 * PROBE_BLOCKS * (PROBE_CALLS + 1)
    heavy_post = probe_host_threads(lambda count: {1: 30.0, 4: 12.0}[count], 4)
    assert heavy_post[0] == 4


def test_a_suite_sets_the_host_threads(tmp_path: Path) -> None:
    records = _run(tmp_path, backends=["openvino"], end_to_end={"host_threads": 2})
    assert _ok(records[("fp32", "openvino", 1)])["end_to_end_covers"]["host_threads"] == 2


@pytest.mark.parametrize("bad", [0, -1, True, "some", 2.5])
def test_a_bad_host_threads_is_one_line_naming_the_fix(bad: Any) -> None:
    from segbench.errors import SuiteError
    from segbench.suite.schema import parse_suite

    data = {"name": "x", "models": ["fast-scnn"], "resolutions": [64], "end_to_end": {"host_threads": bad}}
    with pytest.raises(SuiteError) as raised:
        parse_suite(data, "suite.yaml", Path("."))
    message = str(raised.value)
    assert len(message.splitlines()) == 1 and "end_to_end.host_threads" in message and "write auto" in message


def test_ultralytics_predict_calls_it_with_its_defaults_and_at_the_cell_threads(tmp_path: Path) -> None:
    """No retina_masks (ultralytics' default), torch at the count ultralytics picks, and the -cell-threads peer
    at the cell's count"""
    import inspect

    from segbench.backends import ultralytics_predict

    assert "retina_masks" not in inspect.getsource(ultralytics_predict.UltralyticsPipeline.forward)
    records = _run(
        tmp_path,
        models=["yolov8n-seg"],
        resolutions=[64],
        threads=2,
        backends=["ultralytics-predict", "ultralytics-predict-cell-threads"],
    )
    own = _ok(records[("fp32", "ultralytics-predict", 1)])["backend_info"]
    cell = _ok(records[("fp32", "ultralytics-predict-cell-threads", 1)])
    # `import ultralytics` sets OMP_NUM_THREADS=1 where the user did not set it: a script importing it first runs
    # torch on one thread.
    assert own["torch_threads_chosen_by_ultralytics"] == own["torch_threads_ran"] == 1
    assert cell["backend_info"]["torch_threads_ran"] == 2


STAGE_BACKENDS = ["eager", "compile", "onnxruntime", "openvino", "openvino-throughput"]
STAGE_TIMING = {**FAST_TIMING, "min_iters": 30, "max_iters": 400, "min_time_s": 1.0, "max_time_s": 3.0, "warmup_s": 0.3}


def _forward_gaps(folder: Path, backends: list[str]) -> dict[str, tuple[float, float]]:
    """Per backend: the latency pass's and the stage pass's forward, each its 10th percentile, from one real cell
    each."""
    # host_threads auto, as a user runs it: torch's own backends keep the cell's threads (switching torch's count
    # between the host stages and the forward costs the next forward: fast-scnn eager +25 %, +29 % at 1 host
    # thread against -8 %, +9 % at the cell's 2, on the 2026-12-02 AVX2 EPYC), OpenVINO and ONNX Runtime get the
    # count their probe picks.
    records = _run(
        folder,
        models=["fast-scnn"],
        resolutions=[[192, 256]],
        backends=backends,
        timing=STAGE_TIMING,
        end_to_end={"host_threads": "auto"},
    )
    found = {}
    for backend in backends:
        record = _ok(records[("fp32", backend, 1)])
        found[backend] = (_fast_tenth(record["samples_ms"]), _fast_tenth(record["stage_samples_ms"]["forward"]))
    return found


def _fast_tenth(samples: list[float]) -> float:
    """The 10th percentile: another job on a shared 2-core VM only adds time, and under the full suite's load it moved
    either pass's median by 20-45 % (CI, 2026-12-02), while a cost the stage pass adds to every forward (a copy, a
    thread pool spinning beside it) moves its fast tail as much as its median."""
    return float(statistics.quantiles(samples, n=10)[0])


def _outside(gaps: dict[str, tuple[float, float]], tolerance: float = 0.10) -> dict[str, tuple[float, float]]:
    return {backend: pair for backend, pair in gaps.items() if abs(pair[1] / pair[0] - 1) > tolerance}


@pytest.mark.alone
def test_the_stage_pass_forward_matches_the_latency_pass_forward_on_every_backend(tmp_path: Path) -> None:
    """Issue 28, item 2: the end-to-end pass hands each runtime its input as the latency pass does, and nothing
    beside the forward takes its cores (torch's OpenMP workers spinning after the host stages did: +45 % on OpenVINO
    before host_threads), so the stage pass's forward (its fast tenth) is within 10 % of the latency pass's on a
    deterministic model. Two passes of a few seconds each can differ by more than that by chance (eager PyTorch
    on a 2-core VM settles in one of two speeds about 25 % apart, either pass in either), so a backend outside it
    is measured again in a fresh cell, up to three times: a systematic gap fails every time."""
    attempts: list[dict[str, tuple[float, float]]] = []
    backends = STAGE_BACKENDS
    for attempt in range(3):
        outside = _outside(_forward_gaps(tmp_path / f"attempt-{attempt}", backends))
        attempts.append(outside)
        if not outside:
            return
        backends = list(outside)
    raise AssertionError(f"the stage pass's forward differs from the latency pass's by more than 10 %: {attempts}")
