from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from segbench.results.metrics import UnknownMetricError
from segbench.suite.expectations import Expectation, evaluate, metric_value
from tests.helpers import cell_record


def _record(
    precision: str = "fp32", median: float = 10.0, peak: float = 1500.0, status: str = "ok", resolution: int = 640
) -> dict[str, Any]:
    return cell_record(
        f"{precision}-{resolution}",
        status,
        median,
        "yolov8n-seg",
        resolution,
        precision,
        device="cuda:0",
        memory_mb={"nvml_process_peak": peak, "torch_reserved_peak": peak - 300},
    )


RECORDS = [
    _record("fp32", 12.0, 1600.0),
    _record("fp16", 7.0, 1100.0),
    _record("int8", 6.0, 900.0),
    _record("fp32", 30.0, 3000.0, resolution=1024),
]


def test_approx_claim_confirmed_by_the_best_matching_cell() -> None:
    row = evaluate(
        Expectation(claim="≈10 ms", model="yolov8n-seg", resolution=640, batch_size=1, approx=10, tolerance=0.45),
        RECORDS,
    )
    assert row["verdict"] == "confirmed" and row["measured"] == 6.0 and "int8" in row["cell"]
    row = evaluate(
        Expectation(
            claim="fp32 ≈10 ms", model="yolov8n-seg", resolution=640, precision="fp32", approx=10, tolerance=0.1
        ),
        RECORDS,
    )
    assert row["verdict"] == "refuted" and row["measured"] == 12.0


def test_memory_between_and_relative_claims() -> None:
    between = Expectation(claim="1024 needs 2-4 GB", resolution=1024, metric="peak_memory_mb", between=(2048, 4096))
    assert evaluate(between, RECORDS)["verdict"] == "confirmed"
    lower = Expectation(
        claim="INT8 lowers VRAM", precision="int8", metric="peak_memory_mb", lower_than={"precision": "fp32"}
    )
    row = evaluate(lower, RECORDS)
    assert row["verdict"] == "confirmed" and row["measured"] == 900.0
    higher_fps = Expectation(
        claim="fp32 is faster than fp16",
        precision="fp32",
        resolution=640,
        metric="fps",
        higher_than={"precision": "fp16"},
    )
    assert evaluate(higher_fps, RECORDS)["verdict"] == "refuted"


def test_untested_when_no_finished_cell_matches() -> None:
    oom_only = [_record(status="oom")]
    row = evaluate(Expectation(claim="fits", at_most=2000, metric="peak_memory_mb"), oom_only)
    assert row["verdict"] == "untested" and "oom" in row["reason"]
    row = evaluate(Expectation(claim="x", model="segformer-b0", at_least=1, metric="fps"), RECORDS)
    assert row["verdict"] == "untested" and "no cell" in row["reason"]


def test_exactly_one_test_per_expectation_and_metric_paths() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        Expectation(claim="two tests", approx=1, at_most=2)
    assert metric_value(RECORDS[0], "latency_ms.median") == 12.0
    assert metric_value(RECORDS[0], "peak_memory_mb") == 1600.0
    assert (
        metric_value(RECORDS[0], "median_ms") == 12.0 and metric_value(RECORDS[0], "pixel_agreement_pct") == 100.0
    )  # fp32 eager: the reference
    assert metric_value(RECORDS[1], "pixel_agreement_pct") is None  # fp16 without a fidelity pass
    with pytest.raises(UnknownMetricError, match="did you mean 'prepare_s'"):
        metric_value(RECORDS[0], "prepare_ss")


def test_direction_comes_from_the_catalogue_not_the_name() -> None:
    """prepare_s, logit drift and drops are lower-is-better although their names carry no latency prefix."""
    records = [
        {
            **_record("int8", 6.0),
            "prepare_s": 40.0,
            "fidelity": {"max_abs_logit_diff": 0.5},
            "stream": {"drop_pct": 3.0},
        },
        {
            **_record("fp16", 7.0),
            "prepare_s": 2.0,
            "fidelity": {"max_abs_logit_diff": 0.01},
            "stream": {"drop_pct": 0.0},
        },
    ]
    prepare = evaluate(Expectation(claim="prepares in under a minute", metric="prepare_s", at_most=60), records)
    assert prepare["measured"] == 2.0 and "fp16" in prepare["cell"]
    drift = evaluate(Expectation(claim="drift small", metric="fidelity.max_abs_logit_diff", at_most=1), records)
    assert drift["measured"] == 0.01
    drops = evaluate(Expectation(claim="no drops", metric="stream_drop_pct", at_most=0), records)
    assert drops["measured"] == 0.0 and drops["verdict"] == "confirmed"


def test_unknown_metric_is_a_one_line_suite_error(write_suite) -> None:
    from segbench.errors import SuiteError
    from segbench.suite.schema import load_suite

    path = write_suite(expectations=[{"claim": "x", "metric": "end_to_end_fsp", "at_least": 1}])
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert (
        len(message.splitlines()) == 1
        and "expectations[0].metric" in message
        and "did you mean 'end_to_end_fps'" in message
    )


def test_report_shows_each_claim_with_its_verdict(tmp_path) -> None:
    import json

    from segbench.report.html import render_report
    from segbench.results import store as results
    from segbench.results.runs import load_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results.write_json(
        run_dir / results.META_FILE,
        {"suite": "claims", "device": "cuda:0", "fingerprint": {"machine": "NVIDIA GeForce RTX 3060"}},
    )
    suite = {
        "name": "claims",
        "models": ["yolov8n-seg"],
        "resolutions": [640],
        "expectations": [
            {
                "claim": "INT8 lowers VRAM",
                "precision": "int8",
                "metric": "peak_memory_mb",
                "lower_than": {"precision": "fp32"},
            },
            {"claim": "runs at 1000 FPS", "metric": "fps", "at_least": 1000},
        ],
    }
    (run_dir / results.SUITE_FILE).write_text(json.dumps(suite))
    for record in RECORDS:
        results.append_record(run_dir, {"cell_id": f"{record['precision']}-{record['resolution'][0]}", **record})
    page = render_report(load_run(run_dir))
    assert 'id="expectations"' in page and "INT8 lowers VRAM" in page
    assert "verdict-confirmed" in page and "verdict-refuted" in page and "NVIDIA GeForce RTX 3060" in page


def test_the_suite_schema_imports_nothing_from_the_report_package() -> None:
    """suite -> expectations -> metrics must stay below report/ (no import circle, no upward dependency)."""
    import subprocess
    import sys

    code = "import sys, segbench.suite.schema; print(sorted(m for m in sys.modules if m.startswith('segbench.report')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
