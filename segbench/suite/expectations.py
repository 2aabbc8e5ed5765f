"""Expectations: claims a suite makes about its results, checked against what was measured.

    expectations:
      - claim: YOLOv8n-seg at 640 runs in about 10 ms on an RTX 3060
        source: the seed glossary
        model: yolov8n-seg
        resolution: 640
        batch_size: 1
        metric: latency_ms.median
        approx: 10
        tolerance: 0.3           # relative: 7-13 ms confirms it
      - claim: INT8 lowers VRAM
        model: yolov8n-seg
        precision: int8
        metric: peak_memory_mb
        lower_than: {precision: fp32}

A claim is confirmed, refuted, or untested (no finished cell matches it, with the reason).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segbench.results.labels import axes_label
from segbench.results.metrics import Metric, UnknownMetricError, get_metric
from segbench.results.metrics import metric_value as named_value
from segbench.suite.axes import Rule, rule_matches

Verdict = Literal["confirmed", "refuted", "untested"]
AXES = ("model", "resolution", "batch_size", "precision", "backend")


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    claim: Annotated[str, Field(min_length=1)]
    source: str = ""
    model: str | None = None
    resolution: Any = None
    batch_size: int | None = None
    precision: str | None = None
    backend: str | None = None
    metric: str = "median_ms"  # a key of the metric catalogue (segbench/metrics.py), its record path or an alias
    approx: float | None = None
    tolerance: Annotated[float, Field(gt=0)] = 0.25  # relative, for approx
    between: tuple[float, float] | None = None
    at_most: float | None = None
    at_least: float | None = None
    lower_than: dict[str, Any] | None = None  # axes that pick the reference cell, e.g. {precision: fp32}
    higher_than: dict[str, Any] | None = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        try:
            get_metric(value)
        except UnknownMetricError as exc:
            raise ValueError(str(exc)) from None  # the suite loader turns it into one line with the field path
        return value

    @model_validator(mode="after")
    def _one_test(self) -> Expectation:
        tests = [self.approx, self.between, self.at_most, self.at_least, self.lower_than, self.higher_than]
        if sum(test is not None for test in tests) != 1:
            raise ValueError("give exactly one of approx, between, at_most, at_least, lower_than, higher_than")
        return self

    def axes(self) -> dict[str, Any]:
        return {axis: getattr(self, axis) for axis in AXES if getattr(self, axis) is not None}


def metric_value(record: dict[str, Any], metric: str) -> float | None:
    """The value of a catalogue metric in one record (None when the record has none); a record path gives the stored
    value."""
    return named_value(record, metric)


class _Axes:
    """A record's axes, shaped like a CellSpec for rule matching."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.model, self.batch_size = record["model"], record["batch_size"]
        self.resolution = tuple(record["resolution"])
        self.precision, self.backend = record["precision"], record["backend"]


def _matches(record: dict[str, Any], axes: dict[str, Any]) -> bool:
    return rule_matches(Rule(**axes), _Axes(record))


def _best(records: list[dict[str, Any]], metric: Metric, name: str) -> tuple[dict[str, Any], float] | None:
    """Of several matching cells, the one a user would pick: the catalogue says which direction is better."""
    valued = [(record, value) for record in records if (value := named_value(record, name)) is not None]
    if not valued:
        return None
    best = metric.best([value for _, value in valued])
    return next(pair for pair in valued if pair[1] == best)


def _verdict(expectation: Expectation, measured: float, reference: float | None) -> tuple[Verdict, str]:
    e = expectation
    if e.approx is not None:
        low, high = e.approx * (1 - e.tolerance), e.approx * (1 + e.tolerance)
        return (
            "confirmed" if low <= measured <= high else "refuted"
        ), f"≈ {e.approx:g} (±{e.tolerance:.0%}: {low:g}–{high:g})"
    if e.between is not None:
        return (
            "confirmed" if e.between[0] <= measured <= e.between[1] else "refuted"
        ), f"between {e.between[0]:g} and {e.between[1]:g}"
    if e.at_most is not None:
        return ("confirmed" if measured <= e.at_most else "refuted"), f"≤ {e.at_most:g}"
    if e.at_least is not None:
        return ("confirmed" if measured >= e.at_least else "refuted"), f"≥ {e.at_least:g}"
    assert reference is not None
    if e.lower_than is not None:
        return ("confirmed" if measured < reference else "refuted"), f"< {reference:.4g} (reference cell)"
    return ("confirmed" if measured > reference else "refuted"), f"> {reference:.4g} (reference cell)"


def evaluate(expectation: Expectation, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the expectations table: claim, expected, measured, verdict and the cell it came from."""
    row: dict[str, Any] = {
        "claim": expectation.claim,
        "source": expectation.source,
        "metric": expectation.metric,
        "measured": None,
        "expected": None,
        "verdict": "untested",
        "cell": None,
        "reason": None,
    }
    matching = [r for r in records if _matches(r, expectation.axes())]
    finished = [r for r in matching if r.get("status") == "ok"]
    if not finished:
        statuses = sorted({str(r.get("status")) for r in matching})
        row["reason"] = (
            f"matching cells ended {', '.join(statuses)}"
            if matching
            else "no cell of this run matches the claim's axes"
        )
        return row
    metric = get_metric(expectation.metric)
    best = _best(finished, metric, expectation.metric)
    if best is None:
        row["reason"] = f"metric '{expectation.metric}' was not recorded: {metric.missing_reason(finished[0])}"
        return row
    record, measured = best
    reference = None
    reference_axes = expectation.lower_than or expectation.higher_than
    if reference_axes is not None:
        same_cell = {axis: record[axis] for axis in AXES} | reference_axes
        picked = _best(
            [r for r in records if r.get("status") == "ok" and _matches(r, same_cell)], metric, expectation.metric
        )
        if picked is None:
            row["reason"] = f"no finished reference cell with {reference_axes}"
            return row
        reference = picked[1]
    row["verdict"], row["expected"] = _verdict(expectation, measured, reference)
    row["measured"] = measured
    row["cell"] = axes_label(record)
    return row


def evaluate_all(expectations: list[Expectation], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [evaluate(expectation, records) for expectation in expectations]


def evaluate_suite_data(suite: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The expectations of a suite (as stored with a run) evaluated against the run's records."""
    expectations = [Expectation.model_validate(item) for item in suite.get("expectations") or []]
    return evaluate_all(expectations, records)


def evaluate_run(run_dir: Any) -> list[dict[str, Any]]:
    """The expectations of a stored run's suite, evaluated against its records (latest attempt per cell)."""
    from segbench.results import store as results  # lazy: imports pandas

    suite = results.read_suite_copy(run_dir)
    if not suite.get("expectations"):
        return []
    return evaluate_suite_data(suite, results.read_records(run_dir))
