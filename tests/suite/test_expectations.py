from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from segbench.results import store as results
from segbench.results.metrics import UnknownMetricError
from segbench.suite.expectations import (
    Expectation,
    evaluate,
    evaluate_all,
    evaluate_suite_data,
    metric_value,
    verdict_label,
)
from tests.helpers import REPO, cell_record


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


def test_approx_claim_judged_on_the_median_matching_cell() -> None:
    row = evaluate(
        Expectation(claim="≈10 ms", model="yolov8n-seg", resolution=640, batch_size=1, approx=10, tolerance=0.45),
        RECORDS,
    )
    assert row["verdict"] == "confirmed" and row["measured"] == 7.0 and "fp16" in row["cell"]
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
    # Of two matching cells the median is the worse middle one, worse in the catalogue's direction.
    prepare = evaluate(Expectation(claim="prepares in under a minute", metric="prepare_s", at_most=60), records)
    assert prepare["measured"] == 40.0 and "int8" in prepare["cell"]
    drift = evaluate(Expectation(claim="drift small", metric="fidelity.max_abs_logit_diff", at_most=1), records)
    assert drift["measured"] == 0.5
    drops = evaluate(Expectation(claim="no drops", metric="stream_drop_pct", at_most=0), records)
    assert drops["measured"] == 3.0 and drops["verdict"] == "refuted"
    assert "1 of 2 would be refuted" in drops["reason"]
    agreement = evaluate(Expectation(claim="agrees", metric="pixel_agreement_pct", at_least=0), RECORDS[:1])
    assert agreement["verdict"] == "confirmed" and "judged on the one matching cell" in agreement["reason"]


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


# ---- the card a claim is about (issue 26, item 4) and the cell it is judged on (item 8) --------------------------

H200_RUN = REPO / "results" / "rtx3060-claims-h200-20261126T102857Z"  # read only: a real run, `hardware: rtx3060`
RTX3060 = "NVIDIA GeForce RTX 3060"


def _h200_run() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    return results.read_suite_copy(H200_RUN), results.read_records(H200_RUN), results.read_meta(H200_RUN)


def _as_if_measured_on(name: str, records: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[list, dict]:
    """The same records and meta, as a run on the card `name` writes them (fingerprint and budget name it)."""
    gpus = [{**gpu, "name": name} for gpu in meta["fingerprint"]["gpus"]]
    moved = {**meta, "fingerprint": {**meta["fingerprint"], "machine": name, "gpus": gpus}}
    relabelled = [
        {**r, "budget": {**r["budget"], "emulated_on": name}} if isinstance(r.get("budget"), dict) else r
        for r in records
    ]
    return relabelled, moved


def _by_claim(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["claim"]: row for row in rows}


def test_claims_about_an_rtx3060_measured_on_an_h200_are_untested_for_speed_and_emulated_for_memory() -> None:
    suite, records, meta = _h200_run()
    rows = _by_claim(evaluate_suite_data(suite, records, meta))
    speed = rows["YOLOv8x-seg at 640 runs in about 40 ms"]  # 38.35 ms on the H200: within 30 % of 40
    assert speed["verdict"] == "untested" and speed["measured"] is None and not speed["emulated"]
    assert "NVIDIA H200" in speed["reason"] and "RTX 3060" in speed["reason"] and "only its memory" in speed["reason"]
    for claim in ("Fast-SCNN runs at about 30 FPS (full Cityscapes frame)", "Mask2Former runs at about 5 FPS"):
        assert rows[claim]["verdict"] == "untested", rows[claim]
    memory = rows["A 1024x1024 input needs 2-4 GB of VRAM (SegFormer-B2, batch 1)"]
    assert memory["verdict"] == "confirmed" and memory["emulated"] and verdict_label(memory) == "confirmed (emulated)"
    assert "emulated GeForce RTX 3060 12GB budget, measured on NVIDIA H200" in memory["reason"]
    assert memory["measured_on"] == "NVIDIA H200" and memory["claim_card"] == "GeForce RTX 3060 12GB"
    assert all(row["reason"] for row in rows.values())  # every verdict says why
    agreement = Expectation(
        claim="fp16 agrees with fp32", model="segformer-b2", precision="fp16", metric="pixel_agreement_pct", at_least=90
    )
    [row] = evaluate_all([agreement], records, meta, suite["hardware"])  # what the model computes: any card will do
    assert row["verdict"] == "confirmed" and "this figure does not depend on the card" in row["reason"]


def test_the_same_claims_measured_on_an_rtx3060_are_judged_as_before() -> None:
    suite, records, meta = _h200_run()
    on_card, card_meta = _as_if_measured_on(RTX3060, records, meta)
    rows = _by_claim(evaluate_suite_data(suite, on_card, card_meta))
    speed = rows["YOLOv8x-seg at 640 runs in about 40 ms"]
    assert speed["verdict"] == "confirmed" and speed["measured"] == pytest.approx(38.35, abs=0.01)
    assert not speed["emulated"] and f"measured on {RTX3060}, the card the claim is about" in speed["reason"]
    assert rows["Fast-SCNN runs at about 30 FPS (full Cityscapes frame)"]["verdict"] == "refuted"
    memory = rows["A 1024x1024 input needs 2-4 GB of VRAM (SegFormer-B2, batch 1)"]
    assert memory["verdict"] == "confirmed" and not memory["emulated"]


def test_a_claim_about_no_card_is_judged_on_any_device() -> None:
    suite, records, meta = _h200_run()
    rows = _by_claim(evaluate_suite_data({**suite, "hardware": None}, records, {**meta, "hardware_target": None}))
    speed = rows["YOLOv8x-seg at 640 runs in about 40 ms"]
    assert speed["verdict"] == "confirmed" and "measured on NVIDIA H200; the claim names no card" in speed["reason"]


def test_a_memory_claim_about_a_card_on_a_cpu_is_untested_nothing_was_emulated() -> None:
    budget = {
        "target": "rtx3060",
        "budget_mb": 11592.0,
        "fraction": None,
        "emulated_on": None,
        "real_total_mb": None,
        "note": "not emulated: CPU cell",
    }
    records = [{**_record(), "device": "cpu", "budget": budget, "memory_mb": {"rss_peak": 900.0}}]
    claim = Expectation(claim="needs under 1 GB", metric="peak_memory_mb", at_most=1024)
    row = evaluate_all([claim], records, {"fingerprint": {"cpu": {"model": "Some CPU"}}}, "rtx3060")[0]
    assert row["verdict"] == "untested" and "Some CPU" in row["reason"] and "not emulated: CPU cell" in row["reason"]


def test_the_gate_never_refutes_a_claim_about_another_card(tmp_path) -> None:
    """`segbench run --strict` on the H200 run: only the emulated memory claims can fail it, never its speed."""
    from segbench.run.gate import run_gate
    from segbench.suite.schema import load_suite

    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text((H200_RUN / results.SUITE_FILE).read_text())
    suite, records, meta = load_suite(suite_path), results.read_records(H200_RUN), results.read_meta(H200_RUN)
    refuted = [
        row["claim"]
        for row in evaluate_all(suite.expectations, records, meta, suite.hardware)
        if row["verdict"] == "refuted"
    ]
    assert refuted == ["YOLOv8n-seg at 640 needs about 1.5 GB of VRAM", "YOLOv8x-seg at 640 needs about 3 GB of VRAM"]
    assert "2 expectation(s) refuted" in run_gate(suite, records, strict=True, meta=meta).line


def test_several_matching_cells_are_judged_on_the_median_never_silently_the_best() -> None:
    """A winner's curse: of fp32 12 ms, fp16 7 ms and int8 6 ms, the best (6 ms) alone would confirm '≈6 ms'."""
    claim = Expectation(claim="≈6 ms", model="yolov8n-seg", resolution=640, approx=6, tolerance=0.1)
    row = evaluate(claim, RECORDS)
    assert row["verdict"] == "refuted" and row["measured"] == 7.0 and "fp16" in row["cell"]
    assert row["matching_cells"] == 3
    assert "judged on 1 of 3 matching cells: the median (6–12 across them); 2 of 3 would be refuted" in row["reason"]
    fully = Expectation(claim="fp32 ≈12 ms", model="yolov8n-seg", resolution=640, precision="fp32", approx=12)
    assert "judged on the one matching cell" in evaluate(fully, RECORDS)["reason"]
